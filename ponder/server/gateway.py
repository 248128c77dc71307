"""What every route of the gateway shares: the service, metrics, shedding, admission, runs in flight, draining.

One object instead of closures inside ``create_app``, so each route group
lives in its own module and can be read (and tested) alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ponder.outcome import Outcome
from ponder.run import Run
from ponder.server.admission import Gate
from ponder.server.metrics import Metrics
from ponder.server.shedding import Shedder
from ponder.server.watch import Watch, remaining_after
from ponder.service import Ponder

access = logging.getLogger("ponder.access")


class Gateway:
    def __init__(self, service: Ponder, tenancy: Any = None) -> None:
        self.service = service
        self.config = service.config
        self.server = service.config.server
        self.metrics = service.metrics or Metrics([k.name for k in self.config.auth.keys])
        service.metrics = self.metrics
        self.shedder = Shedder(self.server.shedding, self.config.thinking.effort_table())
        self.tenancy = tenancy
        self.gate = Gate(service, self.shedder, tenancy)
        self.watch = Watch(self.server.anomaly, self.metrics)
        self.watch.start_series([lane.name for lane in self.config.lanes], [k.name for k in self.config.auth.keys])
        #: runs in flight by request id
        self.runs: dict[str, tuple[Run, asyncio.Task]] = {}
        self.draining = False
        self._drain_task: asyncio.Task | None = None
        #: engines /ready started loading (lanes not loaded at start-up)
        self.loading: dict[str, asyncio.Task] = {}
        #: what route groups opened and the lifespan closes (conversation stores)
        self.closers: list = []

    async def drain(self) -> None:
        """Stop taking requests; give in-flight ones ``server.drain_s``; cancel the rest (still accounted)."""
        self.draining = True
        if self.runs:
            pending = [t for _, t in self.runs.values()]
            _, not_done = await asyncio.wait(pending, timeout=self.server.drain_s)
            for run, task in list(self.runs.values()):
                if not task.done():
                    run.cancel.cancel("shutdown")
            if not_done:
                await asyncio.wait(not_done, timeout=10)

    def begin_drain(self) -> None:
        """Called from the SIGTERM handler: start draining on the event loop."""
        if not self.draining:
            self.draining = True
            self._drain_task = asyncio.get_running_loop().create_task(self.drain())

    async def close(self) -> None:
        """The lifespan's end: drain (or finish the drain SIGTERM started), then close quotas and engines."""
        if self._drain_task is not None:
            await self._drain_task
        else:
            await self.drain()
        if self.tenancy is not None:
            await self.tenancy.aclose()
        for close in self.closers:
            await close()
        await self.service.aclose()

    def observe(self, outcome: Outcome, key: str | None, reservation: Any) -> None:
        """Spike detection and burn rate for a finished request (key names only: configured keys)."""
        label = self.metrics.key_label(key) if key is not None else None
        self.watch.observe(outcome.lane, label, outcome.usage.thinking_tokens, outcome.cost_usd,
                           remaining_after(reservation, outcome))

    def log_access(self, rid: str, key: str | None, lane: str, status: int, outcome: Outcome | None,
                   seconds: float, code: str | None) -> None:
        """One access line per request (id, key name, lane, status, tokens, seconds); JSON with log_format json."""
        if not self.server.access_log:
            return
        rec: dict[str, Any] = {"id": rid, "key": key, "lane": lane, "status": status, "seconds": round(seconds, 4)}
        if outcome is not None:
            u = outcome.usage
            rec.update(prompt_tokens=u.input_tokens, thinking_tokens=u.thinking_tokens,
                       answer_tokens=u.answer_tokens, cost_usd=round(outcome.cost_usd, 8))
        if code:
            rec["error"] = code
        if self.server.log_format == "json":
            access.info(json.dumps(rec, separators=(",", ":")))
        else:
            access.info(" ".join(f"{k}={v}" for k, v in rec.items() if v is not None))
