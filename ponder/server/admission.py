"""Admission to an engine: a bounded queue per serialized lane.

The embedded engine runs one generation at a time; further requests wait
here (their wait is reported as ``timings.queue_s``).  When ``queue_size``
requests already wait, new ones get HTTP 429 with ``Retry-After``.  Remote
engines run concurrently and only count in-flight requests.
"""

from __future__ import annotations

import asyncio
import time

from ponder.errors import Overloaded


class LaneGate:
    def __init__(self, *, serialized: bool, queue_size: int) -> None:
        self.serialized = serialized
        self.queue_size = queue_size
        self._sem = asyncio.Semaphore(1) if serialized else None
        self.waiting = 0
        self.in_flight = 0

    async def acquire(self) -> float:
        """Wait for the engine; return seconds waited.  Raise Overloaded when full."""
        t0 = time.perf_counter()
        if self._sem is not None:
            if self._sem.locked() and self.waiting >= self.queue_size:
                raise Overloaded(
                    f"the engine queue is full ({self.waiting} waiting); retry shortly", retry_after_s=1.0
                )
            self.waiting += 1
            try:
                await self._sem.acquire()
            finally:
                self.waiting -= 1
        self.in_flight += 1
        return time.perf_counter() - t0

    def release(self) -> None:
        self.in_flight -= 1
        if self._sem is not None:
            self._sem.release()
