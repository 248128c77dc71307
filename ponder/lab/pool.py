"""Generate once, subsample: one pool of seeded samples per (item, model, budget).

Sampling strategies (single, self-consistency, adaptive-consistency,
best-of-n, weighted-best-of-n) draw sample ``i`` with seed ``seed + i``.  The
lab puts a :class:`SamplePool` on the strategy request; the strategy code is
unchanged, but every draw of index ``i`` is made once and then shared, so a
curve over N = 1, 2, 4, 8 costs the 8 draws of the largest N, and ``single``
is sample 0 of the same pool.  The smaller N use the first N draws: a subset
of exactly the samples the served strategy would have drawn.

The pool also records how long its fresh draws took, so the lab can report
each configuration's latency as if it had drawn its samples itself.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable

from ponder.strategies.base import Sample


class SamplePool:
    def __init__(self) -> None:
        self._samples: dict[int, Sample] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()
        #: seconds spent drawing fresh samples (so the harness can tell engine time from replay)
        self.fresh_seconds = 0.0
        self.fresh_draws = 0

    def _lock(self, i: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(i, threading.Lock())

    def get(self, i: int, draw: Callable[[], Sample]) -> Sample:
        """Sample ``i``: drawn by ``draw`` the first time, replayed afterwards.

        A fresh :class:`Sample` wrapper is returned each time, because
        strategies write scores and groups into the samples they hold.
        """
        with self._lock(i):
            if i not in self._samples:
                t0 = time.perf_counter()
                self._samples[i] = draw()
                self.fresh_seconds += time.perf_counter() - t0
                self.fresh_draws += 1
            s = self._samples[i]
        return replace(s, score=None, group=None)

    def __len__(self) -> int:
        return len(self._samples)
