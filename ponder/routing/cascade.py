"""The cascade router: answer on the fast lane, escalate when the answer is not trusted.

The fast lane draws ``samples`` answers (independent seeds).  It is not
trusted when:

* no answer can be extracted from the first sample;
* two fast samples disagree (under the equivalence the voting strategies use);
* a programmatic verifier on the request fails it (the lab passes one);
* a yes/no judge on the fast model trusts it less than ``judge_threshold``.

Escalation runs the escalation plan (the policy's last band).  Both attempts
are in the usage and in ``ponder.cascade`` of the response, and the cost is
each attempt's tokens at its own lane's prices (the one pricing function).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

from ponder.pricing import price
from ponder.strategies import get_strategy
from ponder.strategies import sampling
from ponder.strategies.base import StrategyRequest, StrategyResult, total_usage
from ponder.strategies.single import result_of_single, stopped_result
from ponder.verifiers.base import safe_verify
from ponder.verifiers.equivalence import Equivalence


@dataclass
class Trust:
    trusted: bool
    reason: str
    judge_usage: Any = None


async def assess(request: StrategyRequest, backend, samples, spec) -> Trust:
    first = samples[0]
    if spec.require_answer and not first.answer:
        return Trust(False, "the fast answer has no extractable answer")
    if len(samples) >= 2:
        eq = Equivalence("auto")
        answers = [s.answer for s in samples]
        same = await asyncio.to_thread(lambda: all(eq.same(answers[0], a) for a in answers[1:]))
        if any(a is None for a in answers) or not same:
            return Trust(False, f"{len(samples)} fast samples disagree ({', '.join(repr(a) for a in answers)})")
    if request.verifier is not None:
        v = await safe_verify(request.verifier, request.question, first.generation.answer, first.answer)
        if not v.passed:
            return Trust(False, f"the verifier failed the fast answer ({v.feedback or v.error or 'no detail'})")
    if spec.judge_threshold is not None:
        from ponder.verifiers.judge import OutcomeJudge, YesNoJudge

        v = await safe_verify(OutcomeJudge(YesNoJudge(backend, meter=request.meter)), request.question,
                              first.generation.answer, first.answer)
        if v.score is None or v.score < spec.judge_threshold:
            return Trust(False, f"the judge's confidence {v.score} is below {spec.judge_threshold}", v.usage)
        return Trust(True, f"judge confidence {v.score:.2f}", v.usage)
    return Trust(True, "the fast samples agree" if len(samples) >= 2 else "the fast answer has an answer")


async def run_cascade(deps, plan, request: StrategyRequest, index: int, deadline, meter) -> StrategyResult:
    """Both attempts in one result: ``extra["cascade"]`` lists them; ``extra["cost_usd"]`` prices each at its lane.

    ``deps`` is the run's :class:`~ponder.runtime.RunDeps` (engines, the cascade settings, strategy requests).
    """
    spec = deps.cascade
    fast_backend = await deps.engines.get_async(plan.lane)
    samples = await sampling.draw(request, fast_backend, spec.samples)
    if not samples:
        return stopped_result(request)
    trust = await assess(request, fast_backend, samples, spec)
    fast_usage = total_usage([s.generation for s in samples])
    if trust.judge_usage is not None:
        fast_usage = fast_usage + trust.judge_usage
    fast_cost = price(fast_usage, plan.lane.prices)
    attempts = [{"lane": plan.lane.name, "answer": samples[0].answer, "trusted": trust.trusted, "why": trust.reason,
                 "usage": fast_usage.to_openai()}]
    if trust.trusted:
        result = result_of_single(samples[0].generation, request.answer_kind)
        result.samples = samples
        result.usage = fast_usage
        result.decision = f"cascade: kept the fast answer ({trust.reason})"
        result.extra = {"cascade": attempts, "escalated": False, "cost_usd": fast_cost}
        return result
    esc = plan.escalation
    esc_backend = await deps.engines.get_async(esc.lane)
    esc_request = replace(deps.strategy_request(esc, request.cancel, seed_offset=index * 10007 if index else 0,
                                                deadline=deadline, meter=meter, sink=request.sink),
                          verifier=request.verifier, answer_kind=request.answer_kind)
    result = await get_strategy(esc.strategy).run(esc_request, esc_backend, esc.strategy_params)
    esc_cost = price(result.usage, esc.lane.prices)
    attempts.append({"lane": esc.lane.name, "answer": result.answer, "usage": result.usage.to_openai()})
    return StrategyResult(
        answer=result.answer, chosen=result.chosen, samples=samples + result.samples,
        usage=fast_usage + result.usage,
        decision=f"cascade: escalated ({trust.reason}); {result.decision}", confidence=result.confidence,
        extra={**result.extra, "cascade": attempts, "escalated": True, "cost_usd": fast_cost + esc_cost},
        stopped=result.stopped,
    )
