"""Majority and weighted votes over answer groups, and the adaptive stopping rule."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ponder.strategies.base import Sample
from ponder.verifiers.equivalence import Equivalence


@dataclass
class Tally:
    #: group index -> summed weight (1 per sample for a plain vote)
    weights: dict[int, float]
    counts: dict[int, int]
    winner: int | None
    tied: list[int]
    #: samples with no extractable answer
    abstained: int

    @property
    def total(self) -> float:
        return sum(self.weights.values())

    def share(self, group: int | None) -> float:
        if group is None or not self.total:
            return 0.0
        return self.weights[group] / self.total


def tally(samples: list[Sample], equivalence: Equivalence, weights: list[float] | None = None) -> Tally:
    """Group answers by equivalence and add up (weighted) votes.

    Ties go to the group that appeared first, and are reported.
    """
    groups = equivalence.group([s.answer for s in samples])
    w: dict[int, float] = {}
    c: dict[int, int] = {}
    abstained = 0
    for i, (s, g) in enumerate(zip(samples, groups)):
        s.group = g
        if g is None:
            abstained += 1
            continue
        w[g] = w.get(g, 0.0) + (1.0 if weights is None else weights[i])
        c[g] = c.get(g, 0) + 1
    if not w:
        return Tally(w, c, None, [], abstained)
    best = max(w.values())
    tied = sorted(g for g, v in w.items() if math.isclose(v, best, rel_tol=1e-12, abs_tol=1e-12))
    return Tally(w, c, tied[0], tied if len(tied) > 1 else [], abstained)


async def tally_async(samples: list[Sample], equivalence: Equivalence, weights: list[float] | None = None) -> Tally:
    """:func:`tally` off the event loop (math-verify may take its time)."""
    import asyncio

    return await asyncio.to_thread(tally, samples, equivalence, weights)


def representative(samples: list[Sample], group: int | None) -> Sample:
    """The sample shown for a group: its first member (or the first sample)."""
    for s in samples:
        if s.group == group and group is not None:
            return s
    return samples[0]


def prob_leader_ahead(leader: int, runner_up: int) -> float:
    """P(p_leader > p_runner_up) under a uniform prior: P(X > 1/2), X ~ Beta(a+1, b+1).

    Exact for integer parameters: P(X <= 1/2) = I_{1/2}(a, b)
    = sum_{j=a}^{a+b-1} C(a+b-1, j) / 2^(a+b-1).
    """
    a, b = leader + 1, runner_up + 1
    n = a + b - 1
    cdf_half = sum(math.comb(n, j) for j in range(a, n + 1)) / 2 ** n
    return 1.0 - cdf_half


def describe(t: Tally, n: int) -> str:
    if t.winner is None:
        return f"no answer could be extracted from any of {n} samples"
    votes = ", ".join(f"g{g}:{t.counts[g]}" for g in sorted(t.counts, key=lambda g: -t.weights[g]))
    msg = f"group g{t.winner} won {t.weights[t.winner]:g} of {t.total:g} votes ({votes})"
    if t.tied:
        msg += f"; tie between {', '.join(f'g{g}' for g in t.tied)} broken by first appearance"
    if t.abstained:
        msg += f"; {t.abstained} sample(s) gave no answer"
    return msg
