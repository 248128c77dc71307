"""Best-of-N and weighted best-of-N with a verifier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ponder.backends.base import Backend
from ponder.strategies import sampling
from ponder.strategies.base import Sample, StrategyRequest, StrategyResult, total_usage
from ponder.strategies.consistency import _check_equivalence
from ponder.strategies.resolve import check_count, check_verifier_name, verifier_for
from ponder.strategies.voting import describe, representative, tally
from ponder.types import Usage
from ponder.verifiers.base import safe_verify
from ponder.verifiers.equivalence import Equivalence


@dataclass(frozen=True)
class BestOfNParams:
    n: int = 4
    verifier: str = "judge"

    def validate(self, max_samples: int | None = None) -> None:
        check_count("n", self.n, max_samples)
        check_verifier_name(self.verifier)


@dataclass(frozen=True)
class WeightedBestOfNParams(BestOfNParams):
    equivalence: str = "auto"

    def validate(self, max_samples: int | None = None) -> None:
        super().validate(max_samples)
        _check_equivalence(self.equivalence)


def score_samples(request: StrategyRequest, backend: Backend, samples: list[Sample], verifier_name: str) -> tuple[Usage, int]:
    """Score every sample; returns the judges' usage and how many verifier calls failed."""
    verifier = verifier_for(request, backend, verifier_name)
    usage = Usage()
    errors = 0
    for s in samples:
        v = safe_verify(verifier, request.question, s.generation.answer, s.answer)
        usage = usage + v.usage
        s.score = v.score
        if v.error:
            errors += 1
    return usage, errors


class BestOfN:
    name: ClassVar[str] = "best-of-n"
    Params: ClassVar[type] = BestOfNParams

    def run(self, request: StrategyRequest, backend: Backend, params: BestOfNParams) -> StrategyResult:
        params.validate(request.max_samples)
        samples = sampling.draw(request, backend, params.n)
        judge_usage, errors = score_samples(request, backend, samples, params.verifier)
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


class WeightedBestOfN:
    """Sum verifier scores per answer group; the heaviest group wins."""

    name: ClassVar[str] = "weighted-best-of-n"
    Params: ClassVar[type] = WeightedBestOfNParams

    def run(self, request: StrategyRequest, backend: Backend, params: WeightedBestOfNParams) -> StrategyResult:
        params.validate(request.max_samples)
        samples = sampling.draw(request, backend, params.n)
        judge_usage, errors = score_samples(request, backend, samples, params.verifier)
        t = tally(samples, Equivalence(params.equivalence), weights=[s.score or 0.0 for s in samples])
        chosen = representative(samples, t.winner)
        return StrategyResult(
            answer=chosen.generation.answer, chosen=chosen.generation, samples=samples,
            usage=total_usage([s.generation for s in samples]) + judge_usage,
            decision=f"weighted vote: {describe(t, len(samples))}" + (f"; {errors} verifier_error(s)" if errors else ""),
            confidence=t.share(t.winner),
            extra={"scores": [s.score for s in samples], "weights": {f"g{g}": round(w, 6) for g, w in t.weights.items()},
                   "verifier_errors": errors},
        )
