"""Self-consistency (fixed N) and adaptive-consistency (stop when the vote is settled)."""

from __future__ import annotations

from dataclasses import dataclass

from ponder.backends.base import Backend
from ponder.errors import InvalidRequest
from ponder.strategies import sampling
from ponder.strategies.base import StrategyRequest, StrategyResult, param, register, total_usage
from ponder.strategies.resolve import check_count
from ponder.strategies.single import stopped_result
from ponder.strategies.voting import describe, prob_leader_ahead, representative, tally_async
from ponder.verifiers.equivalence import Equivalence

EQUIVALENCES = ("auto", "math", "numeric", "string", "choice")


def check_equivalence(name: str) -> None:
    if name not in EQUIVALENCES:
        raise InvalidRequest(f"unknown equivalence {name!r}; choose one of {', '.join(EQUIVALENCES)}",
                             param="ponder.params.equivalence")


@dataclass(frozen=True)
class SelfConsistencyParams:
    n: int = param(5, "samples drawn (together, sharing the prompt)", ">= 1, <= server.max_samples")
    equivalence: str = param("auto", "when two answers are the same answer", "|".join(EQUIVALENCES))

    def validate(self, max_samples: int | None = None) -> None:
        check_count("n", self.n, max_samples)
        check_equivalence(self.equivalence)


async def vote_result(samples, equivalence: Equivalence, label: str, *, stopped: str | None = None,
                      weights: list[float] | None = None, **extra) -> StrategyResult:
    t = await tally_async(samples, equivalence, weights)
    chosen = representative(samples, t.winner)
    return StrategyResult(
        answer=chosen.generation.answer,
        chosen=chosen.generation,
        samples=samples,
        usage=total_usage([s.generation for s in samples]),
        decision=f"{label}: {describe(t, len(samples))}",
        confidence=t.share(t.winner),
        extra={"votes": {f"g{g}": c for g, c in t.counts.items()}, **extra},
        stopped=stopped,
    )


@register("self-consistency", "N samples, answers grouped by equivalence, majority vote", count_param="n",
          pooled=True)
class SelfConsistency:
    Params = SelfConsistencyParams

    async def run(self, request: StrategyRequest, backend: Backend, params: SelfConsistencyParams) -> StrategyResult:
        samples = await sampling.draw(request, backend, params.n)
        if not samples:
            return stopped_result(request)
        stopped = _stopped(request, samples)
        return await vote_result(samples, Equivalence(params.equivalence), f"majority of {len(samples)}",
                                 stopped=stopped)


def _stopped(request: StrategyRequest, samples) -> str | None:
    if request.cancel.cancelled:
        return "cancelled"
    if any(s.generation.finish_reason == "deadline" or s.generation.thinking_report.stopped == "deadline"
           for s in samples):
        return "deadline"
    return None


@dataclass(frozen=True)
class AdaptiveParams:
    n_max: int = param(16, "most samples drawn", ">= 1, <= server.max_samples")
    round_size: int = param(4, "samples drawn together per round (match the engine's batch)", ">= 1, <= n_max")
    #: stop once P(leader's true share > runner-up's) reaches this
    threshold: float = param(0.95, "stop once P(leader's share > runner-up's) under a Beta posterior reaches this",
                             "(0.5, 1)")
    min_samples: int = param(2, "samples drawn before the rule may stop", ">= 1, <= n_max")
    equivalence: str = param("auto", "when two answers are the same answer", "|".join(EQUIVALENCES))

    def validate(self, max_samples: int | None = None) -> None:
        check_count("n_max", self.n_max, max_samples)
        check_count("round_size", self.round_size, self.n_max)
        check_count("min_samples", self.min_samples, self.n_max)
        if not 0.5 < self.threshold < 1.0:
            raise InvalidRequest("threshold must be in (0.5, 1)", param="ponder.params.threshold")
        check_equivalence(self.equivalence)


@register("adaptive-consistency", "samples in rounds; stops when a Beta posterior says the leading answer is "
          "settled, or when it can no longer be overtaken", count_param="n_max", pooled=True)
class AdaptiveConsistency:
    Params = AdaptiveParams

    async def run(self, request: StrategyRequest, backend: Backend, params: AdaptiveParams) -> StrategyResult:
        eq = Equivalence(params.equivalence)
        samples = []
        p_settled = 0.0
        overtaken_proof = False
        while len(samples) < params.n_max and sampling.time_left(request):
            k = min(params.round_size, params.n_max - len(samples))
            if len(samples) < params.min_samples:
                k = max(k, params.min_samples - len(samples))
            got = await sampling.draw(request, backend, k, start=len(samples))
            if not got:
                break
            samples += got
            if len(samples) < params.min_samples:
                continue
            t = await tally_async(samples, eq)
            counts = sorted(t.counts.values(), reverse=True) + [0, 0]
            p_settled = prob_leader_ahead(counts[0], counts[1])
            if t.winner is not None and p_settled >= params.threshold:
                break
            # no runner-up can catch up within the remaining samples: fixed
            # self-consistency with n_max samples would pick the same answer
            if t.winner is not None and counts[0] - counts[1] > params.n_max - len(samples):
                overtaken_proof = True
                break
        if not samples:
            return stopped_result(request)
        stopped_early = len(samples) < params.n_max
        why = "the leader can no longer be overtaken" if overtaken_proof else f"P(leader ahead)={p_settled:.3f}"
        label = (f"adaptive stop after {len(samples)}/{params.n_max} samples ({why})"
                 if stopped_early else f"adaptive used all {params.n_max} samples (P(leader ahead)={p_settled:.3f})")
        return await vote_result(samples, eq, label, stopped=_stopped(request, samples), samples_used=len(samples),
                                 p_settled=round(p_settled, 6))
