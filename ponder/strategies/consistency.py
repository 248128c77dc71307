"""Self-consistency (fixed N) and adaptive-consistency (stop when settled)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ponder.backends.base import Backend
from ponder.errors import InvalidRequest
from ponder.strategies import sampling
from ponder.strategies.base import StrategyRequest, StrategyResult, total_usage
from ponder.strategies.resolve import check_count
from ponder.strategies.voting import describe, prob_leader_ahead, representative, tally
from ponder.verifiers.equivalence import Equivalence

EQUIVALENCES = ("auto", "math", "numeric", "string", "choice")


def _check_equivalence(name: str) -> None:
    if name not in EQUIVALENCES:
        raise InvalidRequest(f"unknown equivalence {name!r}; choose one of {', '.join(EQUIVALENCES)}",
                             param="ponder.params.equivalence")


@dataclass(frozen=True)
class SelfConsistencyParams:
    n: int = 5
    equivalence: str = "auto"

    def validate(self, max_samples: int | None = None) -> None:
        check_count("n", self.n, max_samples)
        _check_equivalence(self.equivalence)


def vote_result(samples, equivalence: Equivalence, label: str, **extra) -> StrategyResult:
    t = tally(samples, equivalence)
    chosen = representative(samples, t.winner)
    return StrategyResult(
        answer=chosen.generation.answer,
        chosen=chosen.generation,
        samples=samples,
        usage=total_usage([s.generation for s in samples]),
        decision=f"{label}: {describe(t, len(samples))}",
        confidence=t.share(t.winner),
        extra={"votes": {f"g{g}": c for g, c in t.counts.items()}, **extra},
    )


class SelfConsistency:
    name: ClassVar[str] = "self-consistency"
    Params: ClassVar[type] = SelfConsistencyParams

    def run(self, request: StrategyRequest, backend: Backend, params: SelfConsistencyParams) -> StrategyResult:
        params.validate(request.max_samples)
        samples = sampling.draw(request, backend, params.n)
        return vote_result(samples, Equivalence(params.equivalence), f"majority of {len(samples)}")


@dataclass(frozen=True)
class AdaptiveParams:
    n_max: int = 16
    round_size: int = 2
    #: stop once P(leader's true share > runner-up's) reaches this
    threshold: float = 0.95
    min_samples: int = 2
    equivalence: str = "auto"

    def validate(self, max_samples: int | None = None) -> None:
        check_count("n_max", self.n_max, max_samples)
        check_count("round_size", self.round_size, self.n_max)
        check_count("min_samples", self.min_samples, self.n_max)
        if not 0.5 < self.threshold < 1.0:
            raise InvalidRequest("threshold must be in (0.5, 1)", param="ponder.params.threshold")
        _check_equivalence(self.equivalence)


class AdaptiveConsistency:
    """Sample in small rounds; stop when a Beta posterior says the leader is settled."""

    name: ClassVar[str] = "adaptive-consistency"
    Params: ClassVar[type] = AdaptiveParams

    def run(self, request: StrategyRequest, backend: Backend, params: AdaptiveParams) -> StrategyResult:
        params.validate(request.max_samples)
        eq = Equivalence(params.equivalence)
        samples = []
        p_settled = 0.0
        overtaken_proof = False
        while len(samples) < params.n_max and not request.cancel.cancelled:
            k = min(params.round_size, params.n_max - len(samples))
            samples += sampling.draw(request, backend, k, start=len(samples))
            if len(samples) < params.min_samples:
                continue
            t = tally(samples, eq)
            counts = sorted(t.counts.values(), reverse=True) + [0, 0]
            p_settled = prob_leader_ahead(counts[0], counts[1])
            if t.winner is not None and p_settled >= params.threshold:
                break
            # no runner-up can catch up within the remaining samples: fixed
            # self-consistency with n_max samples would pick the same answer
            if t.winner is not None and counts[0] - counts[1] > params.n_max - len(samples):
                overtaken_proof = True
                break
        stopped_early = len(samples) < params.n_max
        why = "the leader can no longer be overtaken" if overtaken_proof else f"P(leader ahead)={p_settled:.3f}"
        label = (f"adaptive stop after {len(samples)}/{params.n_max} samples ({why})"
                 if stopped_early else f"adaptive used all {params.n_max} samples (P(leader ahead)={p_settled:.3f})")
        return vote_result(samples, eq, label, samples_used=len(samples), p_settled=round(p_settled, 6))
