"""Routing: which lane, effort and strategy a request gets.

A router scores difficulty (:mod:`ponder.routing.base`); a policy cuts the
score into bands of (lane, effort, strategy) (:mod:`ponder.routing.policy`).
"""

from __future__ import annotations

from typing import Callable

from ponder.backends.base import Backend
from ponder.routing.policy import RoutingPolicy


def build_router(policy: RoutingPolicy, fast_backend: Callable[[], Backend]):
    """The router a policy names.  ``fast_backend`` is only called by the llm router."""
    if policy.router == "heuristic":
        from ponder.routing.heuristic import HeuristicRouter

        return HeuristicRouter()
    if policy.router == "classifier":
        from ponder.routing import classifier

        return classifier.ClassifierRouter(classifier.load(policy.router_options.get("model")))
    if policy.router == "llm":
        from ponder.routing.llm import LLMRouter

        return LLMRouter(fast_backend)
    if policy.router == "cascade":
        return CascadeMarker()
    raise ValueError(policy.router)  # pragma: no cover - the policy model restricts names


class CascadeMarker:
    """The cascade decides after answering, not before; planning only needs to know it is on."""

    name = "cascade"
