"""Policy: turn a request into a plan (lane, thinking budget, strategy).

This is the single place where request fields, lane defaults and config
meet.  The gateway, ``ponder ask`` and the lab all plan through here, so what
the lab measures is what the gateway serves.  A client's explicit settings
always win over lane defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ponder.api.request import ChatCompletionRequest
from ponder.backends.models import model_label
from ponder.config import LaneConfig, PonderConfig
from ponder.errors import InvalidRequest, ModelNotFound
from ponder.strategies import build_params, get_strategy
from ponder.thinking.budget import resolve_budget
from ponder.types import Message, Sampling, ThinkingBudget, Usage

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
    #: cascade routing: the plan to escalate to when the fast answer is not trusted
    escalation: "Plan | None" = None
    #: load shedding lowered this request's effort: {"from", "to", "reason"}
    degraded: dict | None = None
    #: tokens spent deciding the route (the llm router), counted in the request's usage
    overhead: Usage = field(default_factory=Usage)


def is_auto(config: PonderConfig, requested: str | None) -> bool:
    """Does this ``model`` value ask ponder to pick (rather than name a lane)?"""
    if requested is None:
        return True
    if any(lane.name == requested for lane in config.lanes):
        return False
    return requested.lower() in AUTO_MODELS


def lane_for(config: PonderConfig, requested: str | None) -> tuple[LaneConfig, str]:
    """Find the lane a ``model`` (or ``ponder.lane``) value names."""
    for lane in config.lanes:
        if requested == lane.name:
            return lane, f"pinned by name {requested!r}"
    if requested is None or requested.lower() in AUTO_MODELS:
        return config.lane(None), "default lane"
    for lane in config.lanes:
        if requested in (lane.model, model_label(lane.model) if lane.backend == "llama_cpp" else lane.upstream_model):
            return lane, f"pinned by model {requested!r}"
    names = ", ".join(lane.name for lane in config.lanes)
    raise ModelNotFound(f"unknown model {requested!r}; available: {names} (or 'auto')", param="model")


def plan_request(req: ChatCompletionRequest, config: PonderConfig, *, policy: Any = None,
                 router: Any = None) -> Plan:
    """Route (when the request leaves the lane open and a policy is active), then plan.

    Band settings of the policy fill only what the request leaves open: an
    explicit ``reasoning_effort`` / ``max_thinking_tokens`` / strategy wins.
    """
    pinned = req.ponder.lane if req.ponder and req.ponder.lane else req.model
    if policy is None or router is None or not is_auto(config, pinned):
        lane, why = lane_for(config, pinned)
        return _plan(req, config, lane, None, {"lane": lane.name, "reason": why})
    if policy.router == "cascade":
        first, last = policy.bands[0], policy.bands[-1]
        lane = config.lane(policy.lane_name(first, config))
        route = {"router": "cascade", "lane": lane.name,
                 "reason": f"cascade: {first.label()} first, escalating to {last.label()} when its answer is not trusted"}
        escalation = _plan(req, config, config.lane(policy.lane_name(last, config)), last, route)
        return replace(_plan(req, config, lane, first, route), escalation=escalation)
    rs = router.score(req.chat())
    i, band = policy.band_for(rs.score)
    lane = config.lane(policy.lane_name(band, config))
    route = {"router": rs.router, "score": round(rs.score, 4), "band": i, "lane": lane.name,
             "reason": f"{rs.reason} -> band {i} ({band.label()})"}
    if rs.usage.total_tokens:
        route["router_usage"] = rs.usage.to_openai()
    return replace(_plan(req, config, lane, band, route), overhead=rs.usage)


def _plan(req: ChatCompletionRequest, config: PonderConfig, lane: LaneConfig, band: Any, route: dict) -> Plan:
    effort, cap = req.reasoning_effort, req.max_thinking_tokens
    if band is not None and effort is None and cap is None:
        effort, cap = band.effort, band.budget
    budget = resolve_budget(
        config.thinking.effort_table(),
        effort=effort,
        max_thinking_tokens=cap,
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
    client_strategy = req.ponder.strategy if req.ponder and req.ponder.strategy else None
    raw_params = dict(req.ponder.params) if req.ponder else {}
    if client_strategy:
        strategy_name = client_strategy
    elif band is not None and band.strategy:
        strategy_name = band.strategy
        raw_params = {**band.params, **raw_params}
    else:
        strategy_name = lane.strategy
    strategy = get_strategy(strategy_name)
    params = build_params(strategy, raw_params, config.server.max_samples)
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
        route=route,
    )
