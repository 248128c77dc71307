"""Admission: may this planned request start now, and at what effort?

One gate in front of every run:

* **engine capacity** — embedded engines queue sequences themselves (FIFO,
  by free slots and KV cells); past ``server.queue_size`` waiting sequences
  a new request gets 429 with Retry-After instead of joining the queue;
* **load shedding by budget** — under pressure a new request is admitted
  at a lower effort tier (:mod:`ponder.server.shedding`); running requests
  are never cut;
* **tenancy** — the key's quotas are reserved for the request's worst case
  and settled to its real usage when it ends (:mod:`ponder.tenancy`).

A :class:`Ticket` holds what was reserved and gives it back exactly once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ponder.errors import Overloaded
from ponder.planning import Plan
from ponder.server.shedding import Shedder


@dataclass
class Ticket:
    plan: Plan
    thinking_reserved: int
    shedder: Shedder
    reservation: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    _released: bool = False

    async def release(self, outcome=None) -> None:
        if self._released:
            return
        self._released = True
        self.shedder.release(self.thinking_reserved)
        if self.reservation is not None:
            await self.reservation.settle(outcome)


class Gate:
    def __init__(self, service, shedder: Shedder, tenancy=None) -> None:
        self.service = service
        self.shedder = shedder
        self.tenancy = tenancy

    def waiting(self) -> int:
        """Sequences waiting for a slot in any embedded engine."""
        return sum(int(b.load().get("waiting", 0)) for b in self.service.backends())

    async def admit(self, plan: Plan, principal=None) -> Ticket:
        cfg = self.service.config.server
        waiting = self.waiting()
        backend = self.service.cached_backend(plan.lane)
        if backend is not None and backend.info.max_sequences and waiting >= cfg.queue_size:
            raise Overloaded(f"the engine queue is full ({waiting} sequences waiting); retry shortly",
                             retry_after_s=cfg.shedding.retry_after_s)
        plan, tokens = self.shedder.admit(plan, waiting=waiting)
        ticket = Ticket(plan, tokens, self.shedder)
        if self.tenancy is not None and principal is not None:
            try:
                ticket.reservation = await self.tenancy.reserve(principal, plan)
                ticket.headers = ticket.reservation.headers()
            except BaseException:
                await asyncio.shield(ticket.release())
                raise
        return ticket
