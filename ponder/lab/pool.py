"""Generate once, subsample: one pool of seeded samples per (item, model, budget).

Sampling strategies (single, self-consistency, adaptive-consistency,
best-of-n, weighted-best-of-n and the confidence strategies) draw sample
``i`` with seed ``seed + i``.  The lab puts a :class:`SamplePool` on the
strategy request; the strategy code is unchanged, but every draw of index
``i`` is made once and then shared, so a curve over N = 1, 2, 4, 8 costs the
8 draws of the largest N (drawn together, in one batch), and ``single`` is
sample 0 of the same pool.  The smaller N use the first N draws: a subset of
exactly the samples the served strategy would have drawn.

The pool also records how long its fresh draws took, so the lab can report
each configuration's latency as if it had drawn its samples itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from ponder.types import Generation

Drawer = Callable[[list[int]], Awaitable[list[Generation]]]


class SamplePool:
    def __init__(self) -> None:
        self._samples: dict[int, Generation] = {}
        self._lock = asyncio.Lock()
        #: seconds spent drawing fresh samples (so the harness can tell engine time from replay)
        self.fresh_seconds = 0.0
        self.fresh_draws = 0

    async def get(self, indices: list[int], draw: Drawer) -> list[Generation]:
        """Samples ``indices``: the missing ones drawn together by ``draw``, the rest replayed."""
        async with self._lock:
            missing = [i for i in indices if i not in self._samples]
            if missing:
                t0 = time.perf_counter()
                got = await draw(missing)
                self.fresh_seconds += time.perf_counter() - t0
                self.fresh_draws += len(got)
                for i, g in zip(missing, got):
                    self._samples[i] = g
            return [self._samples[i] for i in indices if i in self._samples]

    def __len__(self) -> int:
        return len(self._samples)
