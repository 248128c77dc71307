"""The engines of a service: one per distinct engine setting, built on first use.

Lanes that differ only in what ponder decides per request (effort,
strategy, prices, fallbacks) share an engine: the built-in ``fast`` and
``reasoning`` lanes run on one llama.cpp context, so their sequences batch
together.  Loading a model takes seconds, so the async getter builds off the
event loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

from ponder.backends.base import Backend
from ponder.backends.registry import build_backend, engine_key, record_probe

class EnginePool:
    def __init__(self, backends: dict[str, Backend] | None = None,
                 factory: Callable[[Any], Backend] = build_backend) -> None:
        #: by lane name (given ones are used as they are: tests and the lab hand in scripted engines)
        self._by_lane: dict[str, Backend] = dict(backends or {})
        self._by_key: dict[str, Backend] = {}
        self._factory = factory
        self._lock = threading.Lock()

    def get(self, lane: Any) -> Backend:
        """The lane's engine, built on first use (blocking: call off the event loop)."""
        b = self._by_lane.get(lane.name)
        if b is not None:
            return b
        key = engine_key(lane)
        with self._lock:
            if lane.name not in self._by_lane:
                if key not in self._by_key:
                    self._by_key[key] = self._factory(lane)
                self._by_lane[lane.name] = self._by_key[key]
                record_probe(lane, self._by_lane[lane.name])
            return self._by_lane[lane.name]

    async def get_async(self, lane: Any) -> Backend:
        return self._by_lane.get(lane.name) or await asyncio.to_thread(self.get, lane)

    def cached(self, lane: Any) -> Backend | None:
        """The lane's engine if it is built (never builds)."""
        return self._by_lane.get(lane.name)

    def all(self) -> list[Backend]:
        return list({id(b): b for b in self._by_lane.values()}.values())

    async def aclose(self) -> None:
        for b in self.all():
            try:
                await b.aclose()
            except Exception:  # pragma: no cover - closing must go on
                pass
