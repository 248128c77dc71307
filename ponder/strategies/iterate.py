"""Sequential strategies: verify-retry and refine (generate, critique, revise)."""

from __future__ import annotations

from dataclasses import dataclass

from ponder.backends.base import Backend
from ponder.strategies import sampling
from ponder.strategies.base import Sample, StrategyRequest, StrategyResult, param, register, total_usage
from ponder.strategies.resolve import VERIFIER_NAMES, check_count, check_verifier_name, verifier_for
from ponder.strategies.single import stopped_result
from ponder.types import Message, Usage
from ponder.verifiers.base import safe_verify

RETRY_TEMPLATE = "Your answer was checked and it is not right yet.\n{feedback}\nThink again and give a corrected final answer."
CRITIQUE_TEMPLATE = (
    "Question:\n{question}\n\nProposed answer:\n{answer}\n\n"
    "Check the answer for mistakes. If it is fully correct, reply exactly: NO ISSUES. "
    "Otherwise list the mistakes briefly."
)
REVISE_TEMPLATE = "A reviewer found these problems with your answer:\n{critique}\nGive a corrected final answer."


@dataclass(frozen=True)
class VerifyRetryParams:
    k: int = param(3, "most attempts", ">= 1, <= server.max_samples")
    verifier: str = param("judge", "what checks each attempt", "|".join(VERIFIER_NAMES))

    def validate(self, max_samples: int | None = None) -> None:
        check_count("k", self.k, max_samples)
        check_verifier_name(self.verifier)


@register("verify-retry", "on failure the verifier's feedback (failing test output, checker message) goes back "
          "to the model, up to k attempts", count_param="k")
class VerifyRetry:
    Params = VerifyRetryParams

    async def run(self, request: StrategyRequest, backend: Backend, params: VerifyRetryParams) -> StrategyResult:
        verifier = verifier_for(request, backend, params.verifier)
        messages = list(request.messages)
        samples: list[Sample] = []
        judge_usage = Usage()
        trace = []
        for round_ in range(params.k):
            if not sampling.time_left(request):
                trace.append(f"round {round_ + 1}: not started ({'cancelled' if request.cancel.cancelled else 'deadline'})")
                break
            s = await sampling.one(request, backend, round_, messages=tuple(messages))
            v = await safe_verify(verifier, request.question, s.generation.answer, s.answer)
            s.score = v.score
            judge_usage = judge_usage + v.usage
            samples.append(s)
            if v.error:
                trace.append(f"round {round_ + 1}: {v.error}")
                break
            trace.append(f"round {round_ + 1}: {'passed' if v.passed else 'failed'}")
            if v.passed or request.cancel.cancelled:
                break
            messages += [Message("assistant", s.generation.answer),
                         Message("user", RETRY_TEMPLATE.format(feedback=v.feedback or "(no details)"))]
        if not samples:
            return stopped_result(request)
        passed = [s for s in samples if s.score is not None and s.score >= 1.0 - 1e-9] or \
                 [max(samples, key=lambda s: -1 if s.score is None else s.score)]
        chosen = passed[0]
        return StrategyResult(
            answer=chosen.generation.answer, chosen=chosen.generation, samples=samples,
            usage=total_usage([s.generation for s in samples]) + judge_usage,
            decision="; ".join(trace), confidence=chosen.score,
            extra={"rounds": len(samples), "verifier_error": any("verifier_error" in t for t in trace)},
        )


@dataclass(frozen=True)
class RefineParams:
    rounds: int = param(2, "critique-and-revise rounds after the first answer", ">= 1, <= server.max_samples")
    #: optional: stop when this verifier's score stops improving
    verifier: str | None = param(None, "optional: stop when this verifier's score stops improving",
                                 "|".join(VERIFIER_NAMES) + "|null")

    def worst_case_samples(self) -> int:
        """The first answer plus one revision per round."""
        return self.rounds + 1

    def validate(self, max_samples: int | None = None) -> None:
        check_count("rounds", self.rounds, max_samples)
        check_verifier_name(self.verifier, allow_none=True)


@register("refine", "generate, critique, revise; stops when the critique finds nothing (or a verifier's score "
          "stops improving)", count_param="rounds")
class Refine:
    Params = RefineParams

    async def run(self, request: StrategyRequest, backend: Backend, params: RefineParams) -> StrategyResult:
        verifier = verifier_for(request, backend, params.verifier) if (params.verifier or request.verifier) else None
        messages = list(request.messages)
        samples: list[Sample] = []
        extra_usage = Usage()
        trace: list[str] = []
        best: Sample | None = None
        for round_ in range(params.rounds + 1):
            if not sampling.time_left(request):
                trace.append(f"round {round_}: not started ({'cancelled' if request.cancel.cancelled else 'deadline'})")
                break
            s = await sampling.one(request, backend, round_, messages=tuple(messages))
            samples.append(s)
            if verifier is not None:
                v = await safe_verify(verifier, request.question, s.generation.answer, s.answer)
                extra_usage = extra_usage + v.usage
                s.score = v.score
                if best is not None and (s.score or 0) <= (best.score or 0):
                    trace.append(f"round {round_}: score {s.score} did not improve on {best.score}; stop")
                    break
            best = s if best is None or verifier is None or (s.score or 0) > (best.score or 0) else best
            if round_ == params.rounds or request.cancel.cancelled:
                break
            critique = await sampling.answer_only(
                request, backend,
                [Message("user", CRITIQUE_TEMPLATE.format(question=request.question, answer=s.generation.answer))])
            extra_usage = extra_usage + critique.usage
            if "no issues" in critique.answer.lower():
                trace.append(f"round {round_}: critique found no issues; stop")
                break
            trace.append(f"round {round_}: critique found problems; revising")
            messages += [Message("assistant", s.generation.answer),
                         Message("user", REVISE_TEMPLATE.format(critique=critique.answer.strip()))]
        if not samples:
            return stopped_result(request)
        chosen = best or samples[-1]
        return StrategyResult(
            answer=chosen.generation.answer, chosen=chosen.generation, samples=samples,
            usage=total_usage([x.generation for x in samples]) + extra_usage,
            decision="; ".join(trace) or "single round", confidence=chosen.score,
            extra={"rounds": len(samples)},
        )
