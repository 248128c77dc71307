"""Metrics of the lab, each a small pure function with a hand-checked test.

* accuracy with a Wilson 95% interval (sane at 0% and 100%, unlike the normal
  approximation);
* unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k);
* maj@k: expected majority-vote accuracy over all k-subsets of the n samples
  drawn (exact enumeration when small, a fixed-seed estimate otherwise); a
  tie counts as 1/(number of tied groups) if the correct answer is among them;
* percentiles, the knee of an accuracy-vs-compute curve, the Pareto frontier.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from typing import Hashable, Sequence


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n <= 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples (without replacement from n, c correct) is correct."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_credit(answers: Sequence[Hashable | None], correct: Hashable) -> float:
    """Credit of a majority vote over ``answers`` (None abstains); ties share credit."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    tied = [a for a, v in votes.items() if v == top]
    return (1.0 / len(tied)) if correct in tied else 0.0


def maj_at_k(answers: Sequence[Hashable | None], correct: Hashable, k: int, *, max_subsets: int = 2000,
             seed: int = 0) -> float:
    """Expected majority-vote credit over k-subsets of the drawn answers."""
    n = len(answers)
    if k < 1 or k > n:
        raise ValueError(f"need 1 <= k <= n (n={n}, k={k})")
    total = math.comb(n, k)
    if total <= max_subsets:
        subsets = itertools.combinations(range(n), k)
        return sum(majority_credit([answers[i] for i in s], correct) for s in subsets) / total
    rng = random.Random(seed)
    acc = 0.0
    for _ in range(max_subsets):
        idx = rng.sample(range(n), k)
        acc += majority_credit([answers[i] for i in idx], correct)
    return acc / max_subsets


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def knee(points: Sequence[tuple[float, float]]) -> int | None:
    """Index of the knee of an increasing (compute, accuracy) curve.

    The point farthest above the chord from the first to the last point, with
    compute on a log scale (accuracy grows roughly log-linearly with tokens).
    ``None`` for fewer than three points or a curve with no bend above its chord.
    """
    if len(points) < 3:
        return None
    pts = sorted(points)
    xs = [math.log(max(x, 1e-9)) for x, _ in pts]
    ys = [y for _, y in pts]
    x0, y0, x1, y1 = xs[0], ys[0], xs[-1], ys[-1]
    if x1 == x0:
        return None
    best, best_d = None, 0.0
    for i in range(1, len(pts) - 1):
        chord = y0 + (y1 - y0) * (xs[i] - x0) / (x1 - x0)
        d = ys[i] - chord
        if d > best_d:
            best, best_d = i, d
    if best is None:
        return None
    return points.index(pts[best])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of (cost, accuracy) points no other point beats on both (lower cost, higher accuracy)."""
    front = []
    for i, (c, a) in enumerate(points):
        dominated = any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for j, (c2, a2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])
