"""The cascade router: answer on the fast lane, escalate when the answer is not trusted.

The fast lane draws ``samples`` answers (independent seeds).  It is not
trusted when:

* no answer can be extracted from the first sample;
* two fast samples disagree (under the equivalence the voting strategies use);
* a programmatic verifier on the request fails it (the lab passes one);
* a yes/no judge on the fast model trusts it less than ``judge_threshold``.

Escalation runs the escalation plan (the policy's last band).  Both attempts
are in the usage and in ``ponder.cascade`` of the response, and the cost is
each attempt's tokens at its own lane's prices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ponder.strategies import get_strategy, sampling
from ponder.strategies.base import StrategyRequest, StrategyResult, total_usage
from ponder.strategies.single import result_of_single
from ponder.verifiers.base import safe_verify
from ponder.verifiers.equivalence import Equivalence


@dataclass
class Trust:
    trusted: bool
    reason: str
    judge_usage: Any = None


def assess(request: StrategyRequest, backend, samples, spec) -> Trust:
    first = samples[0]
    if spec.require_answer and not first.answer:
        return Trust(False, "the fast answer has no extractable answer")
    if len(samples) >= 2:
        eq = Equivalence("auto")
        answers = [s.answer for s in samples]
        if any(a is None for a in answers) or not all(eq.same(answers[0], a) for a in answers[1:]):
            return Trust(False, f"{len(samples)} fast samples disagree ({', '.join(repr(a) for a in answers)})")
    if request.verifier is not None:
        v = safe_verify(request.verifier, request.question, first.generation.answer, first.answer)
        if not v.passed:
            return Trust(False, f"the verifier failed the fast answer ({v.feedback or v.error or 'no detail'})")
    if spec.judge_threshold is not None:
        from ponder.verifiers.judge import OutcomeJudge, YesNoJudge

        v = safe_verify(OutcomeJudge(YesNoJudge(backend)), request.question, first.generation.answer, first.answer)
        if v.score is None or v.score < spec.judge_threshold:
            return Trust(False, f"the judge's confidence {v.score} is below {spec.judge_threshold}", v.usage)
        return Trust(True, f"judge confidence {v.score:.2f}", v.usage)
    return Trust(True, "the fast samples agree" if len(samples) >= 2 else "the fast answer has an answer")


def run_cascade(fast_request: StrategyRequest, fast_backend, escalation_request: StrategyRequest,
                escalation_backend, escalation_plan, spec, prices_fast, prices_escalation) -> StrategyResult:
    """Both attempts in one result: ``extra["cascade"]`` lists them; ``extra["cost_usd"]`` prices each at its lane."""
    samples = sampling.draw(fast_request, fast_backend, spec.samples)
    trust = assess(fast_request, fast_backend, samples, spec)
    fast_usage = total_usage([s.generation for s in samples])
    if trust.judge_usage is not None:
        fast_usage = fast_usage + trust.judge_usage
    fast_cost = prices_fast.cost(fast_usage.prompt_tokens, fast_usage.completion_tokens,
                                 fast_usage.cached_prompt_tokens)
    attempts = [{"lane": "fast", "answer": samples[0].answer, "trusted": trust.trusted, "why": trust.reason,
                 "usage": fast_usage.to_openai()}]
    if trust.trusted:
        result = result_of_single(samples[0].generation, fast_request.answer_kind)
        result.samples = samples
        result.usage = fast_usage
        result.decision = f"cascade: kept the fast answer ({trust.reason})"
        result.extra = {"cascade": attempts, "escalated": False, "cost_usd": fast_cost}
        return result
    strategy = get_strategy(escalation_plan.strategy)
    esc = strategy.run(escalation_request, escalation_backend, escalation_plan.strategy_params)
    esc_cost = prices_escalation.cost(esc.usage.prompt_tokens, esc.usage.completion_tokens,
                                      esc.usage.cached_prompt_tokens)
    attempts.append({"lane": escalation_plan.lane.name, "answer": esc.answer, "usage": esc.usage.to_openai()})
    return StrategyResult(
        answer=esc.answer, chosen=esc.chosen, samples=samples + esc.samples, usage=fast_usage + esc.usage,
        decision=f"cascade: escalated ({trust.reason}); {esc.decision}", confidence=esc.confidence,
        extra={**esc.extra, "cascade": attempts, "escalated": True, "cost_usd": fast_cost + esc_cost},
    )
