"""How many threads the embedded engine decodes with, and backing off when the CPU is shared.

llama.cpp's worker threads spin-wait for each other between the operations
of a decode.  With as many threads as CPUs and one other busy process, a
spinning thread waits for a sibling the kernel has descheduled: measured
here, 379 thinking tokens in 300 s beside a fuzzer, against about 100 tokens
a second alone.  Two things keep the engine up:

* :func:`usable_cpus` — the CPUs the process may really use: its affinity
  mask, and a cgroup CPU quota (a Kubernetes limit, ``docker --cpus``)
  rounded up, not the machine's core count;
* :class:`Governor` — watches the decode rate, step by step, against the
  rate the same batch size reached before; when it collapses (under a
  ``collapse`` share for ``patience`` windows), one thread goes, so a core is
  left to the neighbour and no thread spins on a descheduled sibling; every
  ``retry_s`` it tries one thread more and keeps it if decoding got faster.
  It says what it does in the log and through ``load()`` (``threads``,
  ``decode_tokens_per_second``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("ponder.engine")


def cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``) CPU quota in CPUs; None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def usable_cpus(root: Path = Path("/sys/fs/cgroup")) -> tuple[int, str]:
    """(CPUs this process may use, how that was found) — affinity and the cgroup quota, not the core count."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpus(root)
    if quota is not None and math.ceil(quota) < affinity:
        return max(1, math.ceil(quota)), f"cgroup quota {quota:g} CPUs (affinity {affinity})"
    return affinity, f"{affinity} CPUs by affinity" + (f", cgroup quota {quota:g}" if quota is not None else "")


@dataclass
class Governor:
    """Backs the thread count off when decoding collapses, and tries it back up later (see the module)."""

    threads: int
    set_threads: object  # callable(n): applies a thread count to the context
    minimum: int = 1
    window_s: float = 0.5
    collapse: float = 0.3
    patience: int = 2
    retry_s: float = 20.0
    #: recent windows' per-token step time per (thread count, batch size bucket): the reference a window is
    #: judged against (recent, not all-time: per-token time grows as contexts grow, a collapse is sudden)
    best: dict = field(default_factory=dict)
    history: int = 8
    maximum: int = 0
    rate: float = 0.0
    _win_start: float = 0.0
    _win_tokens: int = 0
    _win_steps: list = field(default_factory=list)
    _bad: int = 0
    _backed_off_at: float = 0.0
    _trial: tuple | None = None  # (threads before, their rate) while trying one thread more

    def __post_init__(self) -> None:
        self.maximum = self.maximum or self.threads

    @staticmethod
    def bucket(tokens: int) -> int:
        return 1 if tokens <= 1 else 1 << (tokens - 1).bit_length()

    def step(self, tokens: int, seconds: float, now: float | None = None) -> None:
        """One decode step of ``tokens`` tokens took ``seconds``."""
        now = time.perf_counter() if now is None else now
        if not self._win_start:
            self._win_start = now
        self._win_tokens += tokens
        self._win_steps.append((self.bucket(tokens), seconds / max(1, tokens)))
        if now - self._win_start >= self.window_s:
            self._close_window(now)

    def _close_window(self, now: float) -> None:
        elapsed = now - self._win_start
        self.rate = self._win_tokens / elapsed if elapsed > 0 else 0.0
        # per-token step time against the best this thread count reached on the same batch size
        ratios = []
        window: dict = {}
        for b, per in self._win_steps:
            window.setdefault(b, []).append(per)
        for b, pers in window.items():
            recent = self.best.setdefault((self.threads, b), deque(maxlen=self.history))
            ref = min(recent) if recent else None
            pers.sort()
            median = pers[len(pers) // 2]
            if ref is not None:
                ratios += [ref / per if per > 0 else 1.0 for per in pers]
            recent.append(median)
        self._win_start, self._win_tokens, self._win_steps = now, 0, []
        speed = sorted(ratios)[len(ratios) // 2] if ratios else 1.0
        if self._trial is not None:
            before, rate_before = self._trial
            self._trial = None
            if self.rate < rate_before * 1.1:  # one thread more did not help: back to what worked
                self._apply(before, f"one more thread did not decode faster ({self.rate:.0f} vs "
                                    f"{rate_before:.0f} tok/s)")
                self._backed_off_at = now
            return
        self._bad = self._bad + 1 if speed < self.collapse else 0
        if self._bad >= self.patience and self.threads > self.minimum:
            self._bad = 0
            self._backed_off_at = now
            self._apply(self.threads - 1, f"decoding at {speed:.0%} of its best for this batch size: the CPU is "
                                          "shared")
        elif self.threads < self.maximum and self._backed_off_at and now - self._backed_off_at >= self.retry_s:
            self._trial = (self.threads, self.rate)
            self._apply(self.threads + 1, "trying one thread more")

    def _apply(self, n: int, why: str) -> None:
        log.warning("engine: %d -> %d threads (%s)", self.threads, n, why)
        self.threads = n
        self.set_threads(n)  # type: ignore[operator]
