"""Test-time strategies behind one interface, found by name in :data:`REGISTRY`."""

from __future__ import annotations

import dataclasses
from typing import Any

from ponder.errors import InvalidRequest
from ponder.strategies.base import Sample, Strategy, StrategyRequest, StrategyResult
from ponder.strategies.best_of_n import BestOfN, WeightedBestOfN
from ponder.strategies.consistency import AdaptiveConsistency, SelfConsistency
from ponder.strategies.iterate import Refine, VerifyRetry
from ponder.strategies.search import DVTS, MCTS, Beam
from ponder.strategies.single import Single

REGISTRY: dict[str, Strategy] = {
    s.name: s
    for s in (Single(), SelfConsistency(), AdaptiveConsistency(), BestOfN(), WeightedBestOfN(), Refine(),
              VerifyRetry(), Beam(), MCTS(), DVTS())
}


#: the parameter that sets "how many" for each strategy (absent: the strategy draws one sample)
COUNT_PARAM: dict[str, str] = {
    "self-consistency": "n",
    "adaptive-consistency": "n_max",
    "best-of-n": "n",
    "weighted-best-of-n": "n",
    "verify-retry": "k",
    "refine": "rounds",
    "beam": "width",
    "dvts": "subtrees",
    "mcts": "simulations",
}


def get_strategy(name: str) -> Strategy:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InvalidRequest(
            f"unknown strategy {name!r}; available: {', '.join(sorted(REGISTRY))}", param="ponder.strategy"
        ) from None


def build_params(strategy: Strategy, raw: dict[str, Any], max_samples: int | None = None) -> Any:
    """Typed parameters from a plain dict; unknown keys are an error."""
    fields = {f.name for f in dataclasses.fields(strategy.Params)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        allowed = ", ".join(sorted(fields)) or "none"
        raise InvalidRequest(
            f"unknown parameter(s) for strategy {strategy.name!r}: {', '.join(unknown)} (allowed: {allowed})",
            param="ponder.params",
        )
    try:
        params = strategy.Params(**raw)
    except TypeError as exc:
        raise InvalidRequest(f"bad parameters for strategy {strategy.name!r}: {exc}", param="ponder.params") from None
    params.validate(max_samples)
    return params


__all__ = ["COUNT_PARAM", "REGISTRY", "Sample", "Strategy", "StrategyRequest", "StrategyResult", "build_params", "get_strategy"]
