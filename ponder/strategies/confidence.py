"""Confidence-aware test-time compute: trace confidence, weighted and filtered votes, online early stopping.

The engine records the log-probability of every generated token (and the
top-k alternatives on request).  From them, following DeepConf (Fu et al.,
2025):

* **token confidence** ``C_i = -(1/k) * sum_j log P_i(j)`` over the top-k
  alternatives at position ``i`` (a peaked distribution gives a high value);
  without alternatives, the sampled token's log-probability stands in;
* **trace measures**: the mean token confidence, the lowest mean over a
  sliding window of tokens (``lowest_group``: a trace that loses its footing
  somewhere), the mean of the last tokens (``tail``), and the mean of the
  lowest 10% of window means (``bottom10``).

Strategies:

* ``confidence-weighted`` — N samples, votes weighted by trace confidence;
* ``confidence-filtered`` — N samples, only the most confident share votes;
* ``deepconf-online`` — a few warm-up traces set a confidence threshold;
  every later trace is stopped mid-generation as soon as its sliding-window
  confidence falls below it (the engine frees its slot at once, its tokens
  are no longer spent), and sampling stops once the weighted vote is settled.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

from ponder.backends.base import Backend
from ponder.errors import InvalidRequest
from ponder.strategies import sampling
from ponder.strategies.base import Sample, StrategyRequest, StrategyResult, param, register, total_usage
from ponder.strategies.consistency import EQUIVALENCES, check_equivalence, vote_result
from ponder.strategies.resolve import check_count
from ponder.strategies.single import stopped_result
from ponder.strategies.voting import prob_leader_ahead, tally_async
from ponder.types import Generation, TokenLogprob
from ponder.verifiers.equivalence import Equivalence

MEASURES = ("mean", "lowest_group", "tail", "bottom10")


def token_confidence(t: TokenLogprob) -> float:
    """DeepConf's token confidence; the sampled token's log-probability when no alternatives were kept."""
    if t.top:
        return -sum(lp for _, lp in t.top) / len(t.top)
    return t.logprob


def trace_confidence(g: Generation, *, window: int = 16, tail: int = 32) -> dict[str, float] | None:
    """Every trace measure of one sample (None when the engine kept no log-probabilities)."""
    if not g.logprobs:
        return None
    c = [token_confidence(t) for t in g.logprobs]
    w = max(1, min(window, len(c)))
    groups = []
    acc = sum(c[:w])
    groups.append(acc / w)
    for i in range(w, len(c)):
        acc += c[i] - c[i - w]
        groups.append(acc / w)
    lowest10 = sorted(groups)[: max(1, len(groups) // 10)]
    return {
        "mean": sum(c) / len(c),
        "lowest_group": min(groups),
        "tail": sum(c[-tail:]) / len(c[-tail:]),
        "bottom10": sum(lowest10) / len(lowest10),
        "tokens": float(len(c)),
        "topk": float(bool(g.logprobs[0].top)),
    }


def weight_of(conf: dict[str, float] | None, measure: str) -> float:
    """A positive vote weight from a measure (top-k confidences are positive; log-probabilities are not)."""
    if conf is None:
        return 1.0
    v = conf[measure]
    return max(v, 1e-6) if conf.get("topk") else math.exp(v)


def _check_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise InvalidRequest(f"measure must be one of {', '.join(MEASURES)}", param="ponder.params.measure")


def with_topk(request: StrategyRequest, top_k: int) -> StrategyRequest:
    """Samples need their top-k alternatives for DeepConf's token confidence."""
    if request.sampling.top_logprobs >= top_k:
        return request
    return replace(request, sampling=replace(request.sampling, top_logprobs=top_k))


def annotate(samples: list[Sample], window: int, tail: int) -> None:
    for s in samples:
        s.confidence = trace_confidence(s.generation, window=window, tail=tail)


@dataclass(frozen=True)
class ConfidenceVoteParams:
    n: int = param(8, "samples drawn (together)", ">= 1, <= server.max_samples")
    measure: str = param("lowest_group", "trace confidence used as the weight", "|".join(MEASURES))
    window: int = param(16, "tokens per sliding window (group confidence)", "1-4096")
    tail: int = param(32, "tokens of the tail measure", "1-4096")
    top_k: int = param(5, "alternatives per token for the confidence", "0-20")
    keep: float = param(1.0, "share of the most confident samples that vote (1: all)", "(0, 1]")
    equivalence: str = param("auto", "when two answers are the same answer", "|".join(EQUIVALENCES))

    def validate(self, max_samples: int | None = None) -> None:
        check_count("n", self.n, max_samples)
        _check_measure(self.measure)
        check_count("window", self.window, 4096)
        check_count("tail", self.tail, 4096)
        check_count("top_k", self.top_k, 20, low=0)
        if not 0 < self.keep <= 1:
            raise InvalidRequest("keep must be in (0, 1]", param="ponder.params.keep")
        check_equivalence(self.equivalence)


async def confidence_vote(request: StrategyRequest, backend: Backend, params: ConfidenceVoteParams, *,
                          keep: float, weighted: bool, label: str) -> StrategyResult:
    request = with_topk(request, params.top_k)
    samples = await sampling.draw(request, backend, params.n)
    if not samples:
        return stopped_result(request)
    annotate(samples, params.window, params.tail)
    order = sorted(range(len(samples)), key=lambda i: -weight_of(samples[i].confidence, params.measure))
    kept_idx = sorted(order[: max(1, math.ceil(keep * len(samples)))])
    kept = [samples[i] for i in kept_idx]
    weights = [weight_of(s.confidence, params.measure) for s in kept] if weighted else None
    result = await vote_result(kept, Equivalence(params.equivalence), label, weights=weights,
                               measure=params.measure, kept=len(kept),
                               confidences=[round(weight_of(s.confidence, params.measure), 5) for s in samples])
    # every drawn sample is reported and billed, voting or not
    result.samples = samples
    result.usage = total_usage([s.generation for s in samples])
    return result


@register("confidence-weighted", "N samples; votes weighted by each trace's confidence (DeepConf measures)",
          count_param="n", pooled=True)
class ConfidenceWeighted:
    Params = ConfidenceVoteParams

    async def run(self, request: StrategyRequest, backend: Backend, params: ConfidenceVoteParams) -> StrategyResult:
        return await confidence_vote(request, backend, params, keep=params.keep, weighted=True,
                                     label=f"confidence-weighted vote ({params.measure})")


@dataclass(frozen=True)
class ConfidenceFilterParams(ConfidenceVoteParams):
    keep: float = param(0.5, "share of the most confident samples that vote", "(0, 1]")
    weighted: bool = param(False, "weight the kept votes by confidence too", "true|false")


@register("confidence-filtered", "N samples; only the most confident share of traces votes", count_param="n",
          pooled=True)
class ConfidenceFiltered:
    Params = ConfidenceFilterParams

    async def run(self, request: StrategyRequest, backend: Backend, params: ConfidenceFilterParams) -> StrategyResult:
        return await confidence_vote(request, backend, params, keep=params.keep, weighted=params.weighted,
                                     label=f"vote of the {params.keep:.0%} most confident ({params.measure})")


class WindowMonitor:
    """Stops a trace when the mean token confidence of its last ``window`` tokens falls below ``threshold``."""

    def __init__(self, threshold: float, window: int) -> None:
        self.threshold, self.window = threshold, window
        self._win: deque[float] = deque(maxlen=window)
        self._sum = 0.0

    def __call__(self, t: TokenLogprob) -> bool:
        c = token_confidence(t)
        if len(self._win) == self.window:
            self._sum -= self._win[0]
        self._win.append(c)
        self._sum += c
        return len(self._win) == self.window and self._sum / self.window < self.threshold


@dataclass(frozen=True)
class OnlineParams:
    n_max: int = param(16, "most samples drawn", ">= 2, <= server.max_samples")
    warmup: int = param(4, "traces drawn in full first; they set the stopping threshold", ">= 1, < n_max")
    keep: float = param(0.9, "share of warm-up traces the threshold would have kept (0.9: stop only the "
                             "least confident; 0.1: stop all but the most confident)", "(0, 1)")
    window: int = param(16, "tokens per sliding window", "1-4096")
    top_k: int = param(5, "alternatives per token for the confidence", "0-20")
    round_size: int = param(4, "traces drawn together after the warm-up (match the engine's batch)", ">= 1")
    consensus: float = param(0.95, "stop drawing once the confidence-weighted leader holds this share, or the "
                                   "Beta rule says it is settled", "(0.5, 1]")
    equivalence: str = param("auto", "when two answers are the same answer", "|".join(EQUIVALENCES))

    def validate(self, max_samples: int | None = None) -> None:
        check_count("n_max", self.n_max, max_samples, low=2)
        check_count("warmup", self.warmup, self.n_max - 1)
        if not 0 < self.keep < 1:
            raise InvalidRequest("keep must be in (0, 1)", param="ponder.params.keep")
        check_count("window", self.window, 4096)
        check_count("top_k", self.top_k, 20, low=0)
        check_count("round_size", self.round_size, self.n_max)
        if not 0.5 < self.consensus <= 1:
            raise InvalidRequest("consensus must be in (0.5, 1]", param="ponder.params.consensus")
        check_equivalence(self.equivalence)


@register("deepconf-online", "warm-up traces set a confidence threshold; later traces stop mid-generation when "
          "their window confidence falls below it; sampling stops when the weighted vote is settled",
          count_param="n_max", pooled=True, fresh_after_warmup=True)
class DeepConfOnline:
    Params = OnlineParams

    async def run(self, request: StrategyRequest, backend: Backend, params: OnlineParams) -> StrategyResult:
        request = with_topk(request, params.top_k)
        eq = Equivalence(params.equivalence)
        # warm-up: full traces (the lab's pool shares them with the other strategies)
        warm = await sampling.draw(request, backend, params.warmup)
        if not warm:
            return stopped_result(request)
        annotate(warm, params.window, params.window)
        lows = sorted(s.confidence["lowest_group"] for s in warm if s.confidence)
        threshold = _percentile(lows, 100 * (1 - params.keep)) if lows else float("-inf")
        samples: list[Sample] = list(warm)
        stopped = 0
        why = "n_max reached"
        while len(samples) < params.n_max and sampling.time_left(request):
            voting = [s for s in samples if not s.generation.early_stopped]
            if voting:
                t = await tally_async(voting, eq, [weight_of(s.confidence, "lowest_group") for s in voting])
                counts = sorted(t.counts.values(), reverse=True) + [0, 0]
                if t.winner is not None and (t.share(t.winner) >= params.consensus
                                             or prob_leader_ahead(counts[0], counts[1]) >= params.consensus):
                    why = f"settled: the leader holds {t.share(t.winner):.2f} of the weighted vote"
                    break
            k = min(params.round_size, params.n_max - len(samples))
            spec = replace(sampling.spec_of(request), monitor=lambda: WindowMonitor(threshold, params.window))
            gens = await sampling.fresh(request, backend, list(range(len(samples), len(samples) + k)), spec=spec)
            if not gens:
                break
            new = [sampling.sample_of(g, request.answer_kind) for g in gens]
            annotate(new, params.window, params.window)
            stopped += sum(g.early_stopped for g in gens)
            samples += new
        voting = [s for s in samples if not s.generation.early_stopped] or samples[: params.warmup]
        result = await vote_result(voting, eq, f"deepconf-online: {len(voting)} of {len(samples)} traces voted, "
                                               f"{stopped} stopped early; {why}",
                                   weights=[weight_of(s.confidence, "lowest_group") for s in voting],
                                   threshold=round(threshold, 5), stopped_early=stopped, samples_used=len(samples))
        result.samples = samples
        result.usage = total_usage([s.generation for s in samples])
        return result


def _percentile(xs: list[float], q: float) -> float:
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
