"""Guards: flag every answer, and act on the flags a lane asks to act on.

Planning (:func:`plan_guard`) decides what an action may cost before the
request is admitted: an ``escalate`` is one ``single`` sample at the next
effort tier above the request's budget (never above a cap the client set
itself), or on the lane's ``guards.escalate_to``; a ``vote`` is
``vote_samples`` more samples at the same budget.  That worst case is part
of the plan's worst case, so the request's token ceiling, the key's quotas
and its reservation all hold it — an action never spends what was not
reserved.

At run time (:func:`check`) each choice's answer goes through
:func:`ponder.flags.detect`; the first flag with an action takes it (once),
and the response reports the flags of the answer it returns in
``ponder.flags`` and what was done in ``ponder.guard``.  A lane with actions
holds its answer until it is checked (it does not stream it live), since an
answer already sent cannot be taken back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ponder.flags import detect
from ponder.pricing import price
from ponder.strategies import get_strategy, sampling
from ponder.strategies.base import Sample, StrategyRequest, StrategyResult
from ponder.thinking.extract import extract_answer
from ponder.types import ThinkingBudget

#: a :class:`ponder.planning.Plan` (not imported: planning imports this module)
Plan = Any

#: samples of a vote are drawn past the strategy's own (their seeds never repeat a sample it drew)
VOTE_SEED_START = 1000


@dataclass(frozen=True)
class GuardPlan:
    """What a lane does about flagged answers, and what it may cost."""

    #: flag -> "escalate" | "vote" (only flags with an action)
    actions: dict
    vote_samples: int = 2
    #: the escalation's plan: one ``single`` sample at the next tier or on another lane (None: nowhere to go)
    retry: Plan | None = None

    def worst_case_tokens(self, plan: Plan) -> int:
        """The most one choice's action may add (only one action runs per choice)."""
        worst = 0
        if "vote" in self.actions.values():
            worst = self.vote_samples * (plan.budget.max_tokens + plan.sampling.max_answer_tokens)
        if self.retry is not None:
            worst = max(worst, self.retry.budget.max_tokens + self.retry.sampling.max_answer_tokens)
        return worst

    def worst_case_usage(self, plan: Plan, prompt_tokens: int):
        """(thinking tokens, usage, dollars) of the worst action of every choice, for quota reservations."""
        from ponder.types import Usage

        vote = escalate = (0, Usage(), 0.0)
        if "vote" in self.actions.values():
            k = plan.n * self.vote_samples
            u = Usage(prompt_tokens=prompt_tokens, thinking_tokens=k * plan.budget.max_tokens,
                      answer_tokens=k * plan.sampling.max_answer_tokens)
            vote = (u.thinking_tokens, u, price(u, plan.lane.prices))
        if self.retry is not None:
            r = self.retry
            u = Usage(prompt_tokens=prompt_tokens, thinking_tokens=plan.n * r.budget.max_tokens,
                      answer_tokens=plan.n * r.sampling.max_answer_tokens)
            escalate = (u.thinking_tokens, u, price(u, r.lane.prices))
        return max(vote, escalate, key=lambda t: t[1].total_tokens)


def plan_guard(plan: Plan, config: Any, explicit_cap: int | None) -> GuardPlan | None:
    """The lane's guard for this plan (None when no flag has an action)."""
    g = plan.lane.guards
    actions = g.acting()
    if not actions:
        return None
    retry = None
    if "escalate" in actions.values():
        retry = _retry_plan(plan, config, explicit_cap)
    return GuardPlan(actions=actions, vote_samples=g.vote_samples, retry=retry)


def _retry_plan(plan: Plan, config: Any, explicit_cap: int | None) -> Plan | None:
    g = plan.lane.guards
    target = config.lane(g.escalate_to) if g.escalate_to else plan.lane
    current = plan.budget.max_tokens
    higher = sorted((cap, name) for name, cap in config.thinking.efforts.items() if cap > current)
    cap, tier = higher[0] if higher else (current, plan.budget.effort)
    if explicit_cap is not None and cap > explicit_cap:
        cap, tier = max(current, explicit_cap), None  # the client's own cap holds for the retry too
    if target is plan.lane and cap <= current:
        return None  # the same lane at the same budget is no escalation
    single = get_strategy("single")
    return replace(plan, lane=target, budget=ThinkingBudget(cap, plan.budget.min_tokens, tier), strategy="single",
                   strategy_params=single.Params(), runner=single, escalation=None, guard=None, prompt=None)


def flags_of(result: StrategyResult, kind: str) -> list[dict]:
    return [f.to_dict() for f in detect(result.chosen, kind)]


async def check(deps: Any, plan: Plan, request: StrategyRequest, result: StrategyResult, backend: Any,
                index: int, deadline: Any, meter: Any) -> StrategyResult:
    """Flag the choice's answer; take the lane's action on the first flag that has one."""
    flags = flags_of(result, request.answer_kind)
    result.extra["flags"] = flags
    guard = plan.guard
    if guard is None or not flags or result.stopped or request.cancel.cancelled or \
            (deadline is not None and deadline.passed):
        return result
    trigger = next((f for f in flags if f["flag"] in guard.actions), None)
    if trigger is None:
        return result
    action = guard.actions[trigger["flag"]]
    record = {"flag": trigger["flag"], "action": action, "flags_before": flags, "answer_before": result.answer}
    first_cost = result.extra.get("cost_usd", price(result.usage, plan.lane.prices))
    if action == "vote":
        after, more = await _vote(request, backend, result, guard.vote_samples)
        record["samples"] = guard.vote_samples
        extra_cost = price(more, plan.lane.prices)
    elif guard.retry is not None:
        retry = guard.retry
        engine = await deps.engines.get_async(retry.lane)
        req = replace(deps.strategy_request(retry, request.cancel, seed_offset=VOTE_SEED_START + index,
                                            deadline=deadline, meter=meter, sink=None),
                      answer_kind=request.answer_kind, verifier=request.verifier)
        again = await get_strategy("single").run(req, engine, retry.strategy_params)
        record.update(lane=retry.lane.name, budget=retry.budget.max_tokens)
        extra_cost = price(again.usage, retry.lane.prices)
        after = replace(again, samples=result.samples + again.samples, usage=result.usage + again.usage,
                        decision=f"{result.decision}; escalated on flag {trigger['flag']}: {again.decision}")
    else:
        record["skipped"] = "no higher effort tier or lane to escalate to"
        result.extra["guard"] = record
        return result
    after.extra = {**result.extra, **after.extra, "flags": flags_of(after, request.answer_kind),
                   "guard": record, "cost_usd": first_cost + extra_cost}
    return after


async def _vote(request: StrategyRequest, backend: Any, result: StrategyResult, k: int):
    """The vote's result (with every token the strategy spent), and the usage of the samples it added."""
    from ponder.strategies.consistency import vote_result
    from ponder.types import Usage

    from ponder.verifiers.equivalence import Equivalence

    first = result.samples or [Sample(result.chosen, extract_answer(result.chosen.answer, kind=request.answer_kind)
                                      if result.chosen.answer else None)]
    more = await sampling.draw(request, backend, k, start=VOTE_SEED_START)
    voted = await vote_result(first + more, Equivalence("auto"), f"guard vote of {len(first) + len(more)}")
    added = sum((s.generation.usage for s in more), Usage())
    voted.usage = result.usage + added
    return voted, added
