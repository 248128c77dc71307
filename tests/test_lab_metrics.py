import math

import pytest

from ponder.lab.metrics import knee, maj_at_k, majority_credit, pareto_front, pass_at_k, percentile, wilson_interval


def test_pass_at_k_hand_computed():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # 1 - C(7,5)/C(10,5) = 1 - 21/252
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 8, 5) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(10, 11, 1)


def test_majority_with_ties_shares_credit():
    assert majority_credit(["a", "b"], "a") == 0.5
    assert majority_credit(["a", "a", "b"], "a") == 1.0
    assert majority_credit(["b", "b", "a"], "a") == 0.0
    assert majority_credit([None, None], "a") == 0.0


def test_maj_at_k_exact_enumeration():
    answers = ["a", "a", "b"]
    # k=1: 2/3 ; k=2: subsets aa(1) ab(.5) ab(.5) -> 2/3 ; k=3: 1
    assert maj_at_k(answers, "a", 1) == pytest.approx(2 / 3)
    assert maj_at_k(answers, "a", 2) == pytest.approx(2 / 3)
    assert maj_at_k(answers, "a", 3) == 1.0


def test_maj_at_1_equals_accuracy_of_one_sample():
    answers = ["x", "y", "x", None, "x"]
    assert maj_at_k(answers, "x", 1) == pytest.approx(3 / 5)


def test_wilson_interval():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    assert math.isnan(percentile([], 50))


def test_knee_and_pareto():
    curve = [(64, 0.2), (256, 0.6), (1024, 0.65), (4096, 0.66)]
    assert knee(curve) == 1
    assert knee([(1, 0.1), (2, 0.2)]) is None
    pts = [(1.0, 0.5), (2.0, 0.4), (3.0, 0.7), (3.5, 0.7)]
    assert pareto_front(pts) == [0, 2]
