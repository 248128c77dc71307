"""Test-time strategies behind one interface, found by name in :data:`REGISTRY`.

Each module registers its strategies with :func:`ponder.strategies.base.register`;
importing this package imports them all.
"""

from __future__ import annotations

from ponder.strategies.base import (
    REGISTRY,
    Sample,
    Strategy,
    StrategyInfo,
    StrategyRequest,
    StrategyResult,
    build_params,
    get_strategy,
)
from ponder.strategies import single, consistency, best_of_n, iterate, search  # noqa: F401  (registration)
from ponder.strategies import confidence  # noqa: F401,E402  (registration)


def count_param(name: str) -> str | None:
    """The parameter that sets "how many" for a strategy (None: one sample)."""
    return REGISTRY[name].info.count_param if name in REGISTRY else None


def pooled() -> set[str]:
    """Strategies whose samples are independent seeded draws (the lab draws them once per item)."""
    return {name for name, s in REGISTRY.items() if s.info.pooled}


__all__ = ["REGISTRY", "Sample", "Strategy", "StrategyInfo", "StrategyRequest", "StrategyResult", "build_params",
           "count_param", "get_strategy", "pooled"]
