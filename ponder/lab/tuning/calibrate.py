"""Calibrating a router and measuring it (RouteLLM-style).

A labeled example has a router score and whether the fast and the strong
(reasoning) configuration answered it correctly, with their costs.  A
threshold *t* sends every request scoring above *t* to the strong side.

* :func:`threshold_for_rate` - the threshold giving a target escalation rate;
* :func:`threshold_for_quality` - the lowest escalation rate whose quality
  reaches a floor;
* :func:`curve`, :func:`apgr`, :func:`cpt` - the cost-quality curve over all
  thresholds, the average performance-gap recovered (area under the PGR
  curve; random routing scores 0.5) and the share of strong calls needed to
  recover a given share of the quality gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ponder.errors import ConfigError


@dataclass(frozen=True)
class Labeled:
    score: float
    fast_correct: bool
    strong_correct: bool
    fast_tokens: float = 0.0
    strong_tokens: float = 0.0


@dataclass(frozen=True)
class Point:
    threshold: float
    rate: float  # share escalated
    quality: float
    tokens: float  # mean tokens per request


def _evaluate(examples: Sequence[Labeled], t: float) -> Point:
    n = len(examples)
    up = [e.score > t for e in examples]
    q = sum((e.strong_correct if u else e.fast_correct) for e, u in zip(examples, up)) / n
    tok = sum((e.strong_tokens if u else e.fast_tokens) for e, u in zip(examples, up)) / n
    return Point(t, sum(up) / n, q, tok)


def curve(examples: Sequence[Labeled]) -> list[Point]:
    """One point per distinct threshold, from escalating everything to escalating nothing."""
    if not examples:
        raise ConfigError("no labeled examples to calibrate on", param="RUN_DIR")
    ts = sorted({e.score for e in examples})
    thresholds = [-math.inf] + ts
    pts = [_evaluate(examples, t) for t in thresholds]
    return sorted(pts, key=lambda p: (p.rate, -p.threshold))


def threshold_for_rate(examples: Sequence[Labeled], rate: float) -> Point:
    """The threshold whose escalation rate is closest to ``rate`` (ties: the lower rate)."""
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"escalation rate must be in [0, 1], got {rate}", param="--escalation-rate")
    return min(curve(examples), key=lambda p: (abs(p.rate - rate), p.rate))


def threshold_for_quality(examples: Sequence[Labeled], floor: float) -> Point:
    """The cheapest threshold (fewest escalations) whose quality reaches ``floor``."""
    pts = curve(examples)
    ok = [p for p in pts if p.quality >= floor - 1e-12]
    if not ok:
        best = max(p.quality for p in pts)
        raise ConfigError(f"no threshold reaches quality {floor:.3f}; the best achievable on this set is {best:.3f}",
                          param="--min-accuracy")
    return min(ok, key=lambda p: (p.rate, -p.quality))


def pgr(quality: float, q_fast: float, q_strong: float) -> float:
    gap = q_strong - q_fast
    return 0.0 if gap <= 0 else (quality - q_fast) / gap


def _upper_envelope(pts: list[Point]) -> list[tuple[float, float]]:
    """Best quality reachable at or below each escalation rate (a router can always escalate less)."""
    out, best = [], -math.inf
    for p in sorted(pts, key=lambda p: p.rate):
        best = max(best, p.quality)
        out.append((p.rate, best))
    return out


def apgr(examples: Sequence[Labeled]) -> float:
    """Area under PGR(rate) for rate in [0, 1] (trapezoids); random routing gives 0.5."""
    q_fast = sum(e.fast_correct for e in examples) / len(examples)
    q_strong = sum(e.strong_correct for e in examples) / len(examples)
    env = _upper_envelope(curve(examples))
    if env[0][0] > 0:
        env.insert(0, (0.0, q_fast))
    if env[-1][0] < 1:
        env.append((1.0, env[-1][1]))
    area = 0.0
    for (r0, q0), (r1, q1) in zip(env, env[1:]):
        area += (r1 - r0) * (pgr(q0, q_fast, q_strong) + pgr(q1, q_fast, q_strong)) / 2
    return area


def cpt(examples: Sequence[Labeled], target: float) -> float | None:
    """Smallest share of strong calls that recovers ``target`` of the quality gap (None: never)."""
    q_fast = sum(e.fast_correct for e in examples) / len(examples)
    q_strong = sum(e.strong_correct for e in examples) / len(examples)
    for rate, q in _upper_envelope(curve(examples)):
        if pgr(q, q_fast, q_strong) >= target - 1e-12:
            return rate
    return None
