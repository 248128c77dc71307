"""Load shedding by budget, never by eviction.

Pressure has levels: each mark of ``queue_marks`` reached by the requests
waiting for an engine, or of ``thinking_marks`` reached by the thinking
tokens in flight (the caps of admitted, unfinished requests), adds one.  A
new request admitted at level L loses L effort tiers (high -> medium -> low),
never going below ``floor``; requests already running are never touched.
Past ``hard_queue`` / ``hard_thinking_tokens`` new requests get 429 with
Retry-After.  Degraded responses carry ``ponder.degraded``.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from ponder.config import SheddingConfig
from ponder.errors import InvalidRequest, Overloaded
from ponder.planning import Plan
from ponder.thinking.budget import EFFORT_ORDER, EffortTable
from ponder.types import ThinkingBudget


def pressure_level(cfg: SheddingConfig, waiting: int, thinking_in_flight: int) -> tuple[int, str]:
    """(level, why): the number of marks the worse of the two signals has reached."""
    q = sum(waiting >= m for m in cfg.queue_marks)
    t = sum(thinking_in_flight >= m for m in cfg.thinking_marks)
    if q == 0 and t == 0:
        return 0, ""
    if q >= t:
        return q, f"queue depth {waiting} >= {cfg.queue_marks[q - 1]}"
    return t, f"{thinking_in_flight} thinking tokens in flight >= {cfg.thinking_marks[t - 1]}"


def degrade_budget(budget: ThinkingBudget, levels: int, table: EffortTable, floor: str) -> ThinkingBudget | None:
    """The budget ``levels`` tiers lower (bounded by ``floor``), or None when nothing changes."""
    if levels <= 0 or not budget.enabled:
        return None
    tiers = [t for t in EFFORT_ORDER if t in table.caps]
    floor_i = tiers.index(floor) if floor in tiers else len(tiers) - 1
    if budget.effort in tiers:
        i = tiers.index(budget.effort)
    else:
        # an explicit token cap: place it at the cheapest tier that covers it
        covering = [j for j, t in enumerate(tiers) if table.caps[t] >= budget.max_tokens]
        i = covering[-1] if covering else 0
    if i >= floor_i:
        return None
    target = tiers[min(i + levels, floor_i)]
    cap = min(budget.max_tokens, table.caps[target])
    if cap >= budget.max_tokens:
        return None
    return ThinkingBudget(max_tokens=cap, min_tokens=min(budget.min_tokens, cap), effort=target)


def planned_samples(plan: Plan) -> int:
    """How many samples the plan's strategy may draw (its count parameter)."""
    return plan.samples_per_choice()


class Shedder:
    def __init__(self, cfg: SheddingConfig, table: EffortTable) -> None:
        self.cfg = cfg
        self.table = table
        self._lock = threading.Lock()
        self.thinking_in_flight = 0

    def admit(self, plan: Plan, waiting: int) -> tuple[Plan, int]:
        """The plan to run (maybe degraded) and the thinking tokens it reserves; 429 past the ceiling."""
        cfg = self.cfg
        with self._lock:
            inflight = self.thinking_in_flight
            if cfg.enabled:
                if cfg.hard_queue is not None and waiting >= cfg.hard_queue:
                    raise Overloaded(f"the gateway is saturated ({waiting} requests waiting); retry shortly",
                                     retry_after_s=cfg.retry_after_s)
                if cfg.hard_thinking_tokens is not None and inflight >= cfg.hard_thinking_tokens:
                    raise Overloaded(f"the gateway is saturated ({inflight} thinking tokens in flight); "
                                     "retry shortly", retry_after_s=cfg.retry_after_s)
                level, why = pressure_level(cfg, waiting, inflight)
                lowered = degrade_budget(plan.budget, level, self.table, cfg.floor)
                if lowered is not None:
                    plan = self._degrade(plan, lowered, level, why)
            tokens = plan.budget.max_tokens * plan.n * planned_samples(plan)
            if plan.escalation is not None:
                tokens += plan.escalation.budget.max_tokens * planned_samples(plan.escalation)
            if cfg.enabled and cfg.hard_thinking_tokens is not None and tokens > cfg.hard_thinking_tokens:
                # one request above the ceiling would keep every other one out while it runs: never admitted
                raise InvalidRequest(f"this request could think {tokens:,} tokens (all samples), above the "
                                     f"gateway's ceiling of {cfg.hard_thinking_tokens:,} "
                                     "(server.shedding.hard_thinking_tokens); lower the budget or the samples",
                                     param="max_thinking_tokens", code="request_too_expensive")
            self.thinking_in_flight += tokens
        return plan, tokens

    @staticmethod
    def _degrade(plan: Plan, lowered: ThinkingBudget, level: int, why: str) -> Plan:
        old = plan.budget
        info = {"from": old.effort or f"{old.max_tokens} tokens", "to": lowered.effort,
                "max_thinking_tokens": {"from": old.max_tokens, "to": lowered.max_tokens},
                "level": level, "reason": why}
        return replace(plan, budget=lowered, degraded=info)

    def release(self, tokens: int) -> None:
        with self._lock:
            self.thinking_in_flight -= tokens
