"""Best-of-N and weighted best-of-N with a verifier."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ponder.backends.base import Backend
from ponder.strategies import sampling
from ponder.strategies.base import Sample, StrategyRequest, StrategyResult, param, register, total_usage
from ponder.strategies.consistency import EQUIVALENCES, check_equivalence
from ponder.strategies.resolve import VERIFIER_NAMES, check_count, check_verifier_name, verifier_for
from ponder.strategies.single import stopped_result
from ponder.strategies.voting import describe, representative, tally_async
from ponder.types import Usage
from ponder.verifiers.base import safe_verify
from ponder.verifiers.equivalence import Equivalence


@dataclass(frozen=True)
class BestOfNParams:
    n: int = param(4, "samples drawn (together)", ">= 1, <= server.max_samples")
    verifier: str = param("judge", "what scores each sample", "|".join(VERIFIER_NAMES))

    def validate(self, max_samples: int | None = None) -> None:
        check_count("n", self.n, max_samples)
        check_verifier_name(self.verifier)


@dataclass(frozen=True)
class WeightedBestOfNParams(BestOfNParams):
    equivalence: str = param("auto", "when two answers are the same answer", "|".join(EQUIVALENCES))

    def validate(self, max_samples: int | None = None) -> None:
        super().validate(max_samples)
        check_equivalence(self.equivalence)


async def score_samples(request: StrategyRequest, backend: Backend, samples: list[Sample],
                        verifier_name: str) -> tuple[Usage, int]:
    """Score every sample (concurrently); returns the judges' usage and how many verifier calls failed."""
    verifier = verifier_for(request, backend, verifier_name)
    verdicts = await asyncio.gather(*(safe_verify(verifier, request.question, s.generation.answer, s.answer)
                                      for s in samples))
    usage = Usage()
    errors = 0
    for s, v in zip(samples, verdicts):
        usage = usage + v.usage
        s.score = v.score
        if v.error:
            errors += 1
    return usage, errors


@register("best-of-n", "N samples scored by a verifier; the highest score wins", count_param="n", pooled=True)
class BestOfN:
    Params = BestOfNParams

    async def run(self, request: StrategyRequest, backend: Backend, params: BestOfNParams) -> StrategyResult:
        samples = await sampling.draw(request, backend, params.n)
        if not samples:
            return stopped_result(request)
        judge_usage, errors = await score_samples(request, backend, samples, params.verifier)
        scored = [s for s in samples if s.score is not None]
        if scored:
            best = max(scored, key=lambda s: s.score)  # first of equal scores wins
            ties = sum(1 for s in scored if s.score == best.score)
            decision = f"highest verifier score {best.score:.3f} of {len(samples)} samples"
            if ties > 1:
                decision += f" ({ties} tied; first kept)"
        else:
            best = samples[0]
            decision = f"verifier_error on all {len(samples)} samples; returned the first"
        if errors:
            decision += f"; {errors} verifier_error(s)"
        return StrategyResult(
            answer=best.generation.answer, chosen=best.generation, samples=samples,
            usage=total_usage([s.generation for s in samples]) + judge_usage, decision=decision,
            confidence=best.score, extra={"scores": [s.score for s in samples], "verifier_errors": errors,
                                          "verifier_error": errors == len(samples)},
        )


@register("weighted-best-of-n", "verifier scores summed per answer group; the heaviest group wins",
          count_param="n", pooled=True)
class WeightedBestOfN:
    Params = WeightedBestOfNParams

    async def run(self, request: StrategyRequest, backend: Backend, params: WeightedBestOfNParams) -> StrategyResult:
        samples = await sampling.draw(request, backend, params.n)
        if not samples:
            return stopped_result(request)
        judge_usage, errors = await score_samples(request, backend, samples, params.verifier)
        t = await tally_async(samples, Equivalence(params.equivalence), [s.score or 0.0 for s in samples])
        chosen = representative(samples, t.winner)
        return StrategyResult(
            answer=chosen.generation.answer, chosen=chosen.generation, samples=samples,
            usage=total_usage([s.generation for s in samples]) + judge_usage,
            decision=f"weighted vote: {describe(t, len(samples))}" + (f"; {errors} verifier_error(s)" if errors else ""),
            confidence=t.share(t.winner),
            extra={"scores": [s.score for s in samples], "weights": {f"g{g}": round(w, 6) for g, w in t.weights.items()},
                   "verifier_errors": errors},
        )
