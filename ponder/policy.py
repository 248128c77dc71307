"""Policy: turn a request into a plan (lane, thinking budget, strategy).

This is the single place where request fields, lane defaults and config
meet.  The gateway, ``ponder ask`` and the lab all plan through here, so what
the lab measures is what the gateway serves.  A client's explicit settings
always win over lane defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ponder.api.request import ChatCompletionRequest
from ponder.backends.models import model_label
from ponder.config import LaneConfig, PonderConfig
from ponder.errors import InvalidRequest, ModelNotFound
from ponder.strategies import build_params, get_strategy
from ponder.thinking.budget import resolve_budget
from ponder.types import Message, Sampling, ThinkingBudget

DEFAULT_TEMPERATURE = 0.6
DEFAULT_TOP_P = 0.95
#: ``model`` values that mean "let ponder pick the lane"
AUTO_MODELS = {"auto", "ponder", "default", ""}


@dataclass(frozen=True)
class Plan:
    lane: LaneConfig
    messages: tuple[Message, ...]
    budget: ThinkingBudget
    sampling: Sampling
    strategy: str
    strategy_params: Any
    visibility: str
    n: int = 1
    #: how the lane was chosen, for the response's ``ponder.route``
    route: dict = field(default_factory=dict)


def lane_for(config: PonderConfig, requested: str | None) -> tuple[LaneConfig, str]:
    """Find the lane a ``model`` (or ``ponder.lane``) value names."""
    if requested is None or requested.lower() in AUTO_MODELS:
        return config.lane(None), "default lane"
    for lane in config.lanes:
        if requested == lane.name:
            return lane, f"pinned by name {requested!r}"
    for lane in config.lanes:
        if requested in (lane.model, model_label(lane.model) if lane.backend == "llama_cpp" else lane.upstream_model):
            return lane, f"pinned by model {requested!r}"
    names = ", ".join(lane.name for lane in config.lanes)
    raise ModelNotFound(f"unknown model {requested!r}; available: {names} (or 'auto')", param="model")


def plan_request(req: ChatCompletionRequest, config: PonderConfig) -> Plan:
    pinned = req.ponder.lane if req.ponder and req.ponder.lane else req.model
    lane, why = lane_for(config, pinned)
    budget = resolve_budget(
        config.thinking.effort_table(),
        effort=req.reasoning_effort,
        max_thinking_tokens=req.max_thinking_tokens,
        min_thinking_tokens=req.min_thinking_tokens,
        default_effort=lane.effort,
    )
    if req.n > config.server.max_samples:
        raise InvalidRequest(f"n = {req.n} is above the ceiling of {config.server.max_samples}", param="n")
    answer_tokens = req.max_completion_tokens or req.max_tokens or lane.answer_tokens
    sampling = Sampling(
        temperature=DEFAULT_TEMPERATURE if req.temperature is None else req.temperature,
        top_p=DEFAULT_TOP_P if req.top_p is None else req.top_p,
        seed=req.seed,
        stop=req.stops(),
        max_answer_tokens=answer_tokens,
    )
    strategy_name = (req.ponder.strategy if req.ponder and req.ponder.strategy else None) or lane.strategy
    strategy = get_strategy(strategy_name)
    params = build_params(strategy, dict(req.ponder.params) if req.ponder else {}, config.server.max_samples)
    visibility = (req.thinking.visibility if req.thinking and req.thinking.visibility else None) or config.server.default_visibility
    return Plan(
        lane=lane,
        messages=tuple(req.chat()),
        budget=budget,
        sampling=sampling,
        strategy=strategy_name,
        strategy_params=params,
        visibility=visibility,
        n=req.n,
        route={"lane": lane.name, "reason": why},
    )
