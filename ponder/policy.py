"""Policy: turn a request into a plan (lane, thinking budget, strategy, limits).

This is the single place where request fields, lane defaults and config
meet.  The gateway, ``ponder ask`` and the lab all plan through here, so what
the lab measures is what the gateway serves.  A client's explicit settings
win over lane defaults — within the global caps every request is held to
(``server.max_samples``, ``server.max_answer_tokens``, ``thinking.max_budget``,
``server.max_request_tokens``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from ponder.api.request import ChatCompletionRequest
from ponder.backends.models import model_label
from ponder.config import LaneConfig, PonderConfig
from ponder.errors import InvalidRequest, ModelNotFound
from ponder.strategies import build_params, count_param, get_strategy
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
    #: what was clamped to fit a limit: {"field": {"from", "to", "why"}}
    clamped: dict = field(default_factory=dict)
    #: the request's own deadline in seconds (None: none)
    deadline_s: float | None = None
    #: return per-token log-probabilities of the answer
    logprobs: bool = False
    #: the OpenAI response_format (for upstreams that take it as is)
    response_format: dict | None = None
    #: built-in tools the model may call inside its thinking
    tools: tuple[str, ...] = ()
    #: answer cache mode: use | refresh | off
    cache: str = "off"
    #: the client's functions (OpenAI tools, as dicts) and tool_choice
    client_tools: tuple = ()
    tool_choice: Any = None
    #: the prompt's tokens, once counted against the context (preflight)
    prompt_tokens: int | None = None

    def samples_per_choice(self) -> int:
        """How many samples the plan's strategy may draw for one choice."""
        name = count_param(self.strategy)
        v = getattr(self.strategy_params, name, 1) if name else 1
        v = max(1, v) if isinstance(v, int) else 1
        if self.strategy == "refine":
            v += 1
        if self.strategy in ("beam", "dvts"):
            v *= max(1, getattr(self.strategy_params, "branch", 1))
        return v

    def worst_case_tokens(self, prompt_tokens: int) -> int:
        """Prompt plus every sample thinking to its cap and answering in full."""
        per = self.budget.max_tokens + self.sampling.max_answer_tokens
        total = prompt_tokens + self.n * self.samples_per_choice() * per
        if self.escalation is not None:
            total += self.n * self.escalation.worst_case_tokens(0)
        return total


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
                 router: Any = None, score: Any = None) -> Plan:
    """Route (when the request leaves the lane open and a policy is active), then plan.

    ``score`` is a router score already computed (the llm router runs on an
    engine, so the caller awaits it first).  Band settings of the policy
    fill only what the request leaves open: an explicit
    ``reasoning_effort`` / ``max_thinking_tokens`` / strategy wins.
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
    rs = score if score is not None else router.score(req.chat())
    i, band = policy.band_for(rs.score)
    lane = config.lane(policy.lane_name(band, config))
    route = {"router": rs.router, "score": round(rs.score, 4), "band": i, "lane": lane.name,
             "reason": f"{rs.reason} -> band {i} ({band.label()})"}
    if rs.usage.total_tokens:
        route["router_usage"] = rs.usage.to_openai()
    return replace(_plan(req, config, lane, band, route), overhead=rs.usage)


def _plan(req: ChatCompletionRequest, config: PonderConfig, lane: LaneConfig, band: Any, route: dict) -> Plan:
    server = config.server
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
    if req.n > server.max_samples:
        raise InvalidRequest(f"n = {req.n} is above the ceiling of {server.max_samples}", param="n")
    clamped: dict = {}
    asked = req.max_completion_tokens or req.max_tokens
    answer_tokens = asked or lane.answer_tokens
    if answer_tokens > server.max_answer_tokens:
        field_name = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        clamped[field_name] = {"from": answer_tokens, "to": server.max_answer_tokens,
                               "why": "server.max_answer_tokens"}
        answer_tokens = server.max_answer_tokens
    grammar, response_format = _structured(req, lane)
    sampling = Sampling(
        temperature=DEFAULT_TEMPERATURE if req.temperature is None else req.temperature,
        top_p=DEFAULT_TOP_P if req.top_p is None else req.top_p,
        seed=req.seed,
        stop=req.stops(),
        max_answer_tokens=answer_tokens,
        top_logprobs=req.top_logprobs or 0,
        grammar=grammar,
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
        raw_params = {**lane.params, **raw_params}
    strategy = get_strategy(strategy_name)
    params = build_params(strategy, raw_params, server.max_samples)
    if strategy.info.needs_text and lane.backend != "llama_cpp":
        raise InvalidRequest(f"strategy {strategy_name!r} needs the embedded engine (a chat API cannot resume a "
                             f"half-written thought); lane {lane.name!r} is an upstream", param="ponder.strategy")
    visibility = (req.thinking.visibility if req.thinking and req.thinking.visibility else None) \
        or server.default_visibility
    client_tools, tool_choice = _client_tools(req, strategy_name)
    built_in = tuple(req.ponder.tools) if req.ponder and req.ponder.tools is not None else tuple(lane.tools.enabled)
    cache = (req.ponder.cache if req.ponder and req.ponder.cache else None) or ("use" if config.cache.enabled
                                                                                 else "off")
    plan = Plan(
        lane=lane,
        messages=tuple(req.chat()),
        budget=budget,
        sampling=sampling,
        strategy=strategy_name,
        strategy_params=params,
        visibility=visibility,
        n=req.n,
        route=route,
        clamped=clamped,
        deadline_s=(req.ponder.deadline_s if req.ponder and req.ponder.deadline_s else None) or server.deadline_s,
        logprobs=bool(req.logprobs),
        response_format=response_format,
        tools=built_in,
        cache=cache,
        client_tools=client_tools,
        tool_choice=tool_choice,
    )
    estimate = sum(len(m.content) for m in plan.messages) // 4
    worst = plan.worst_case_tokens(estimate)
    if worst > server.max_request_tokens:
        raise InvalidRequest(
            f"this request could spend up to {worst:,} tokens ({plan.n} choice(s) x "
            f"{plan.samples_per_choice()} sample(s) x ({budget.max_tokens} thinking + {answer_tokens} answer) "
            f"+ prompt); the limit is {server.max_request_tokens:,} (server.max_request_tokens)",
            param="max_thinking_tokens", code="request_too_expensive")
    return plan


def _client_tools(req: ChatCompletionRequest, strategy: str) -> tuple[tuple, Any]:
    """The client's functions as dicts, and a checked tool_choice."""
    choice = req.tool_choice
    if not req.tools:
        if choice not in (None, "none", "auto"):
            raise InvalidRequest("tool_choice needs tools", param="tool_choice")
        return (), None
    tools = tuple(t.model_dump(exclude_none=True) for t in req.tools)
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("tools: function names must be unique", param="tools")
    if isinstance(choice, dict):
        name = ((choice.get("function") or {}).get("name") if choice.get("type") == "function" else None)
        if name not in names:
            raise InvalidRequest(f"tool_choice names {name!r}, which is not among the tools ({', '.join(names)})",
                                 param="tool_choice")
    elif choice not in (None, "none", "auto", "required"):
        raise InvalidRequest("tool_choice must be none, auto, required or {\"type\": \"function\", ...}",
                             param="tool_choice")
    if choice == "none":
        return (), None
    if strategy != "single":
        raise InvalidRequest(f"strategy {strategy!r} votes or searches over answers; with client tools the model's "
                             f"call is returned to the client, so only `single` applies", param="ponder.strategy")
    return tools, choice


def _structured(req: ChatCompletionRequest, lane: LaneConfig) -> tuple[str | None, dict | None]:
    """(grammar for the embedded engine, response_format for an upstream) of a structured-output request."""
    rf = req.response_format
    if rf is None or rf.type == "text":
        return None, None
    if lane.backend == "openai":
        if not lane.response_format:
            raise InvalidRequest(f"lane {lane.name!r} cannot produce structured output (its upstream takes no "
                                 "response_format)", param="response_format", code="unsupported_parameter")
        return None, rf.model_dump(by_alias=True, exclude_none=True)
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if rf.type == "json_object":
        return JSON_GBNF, None
    try:
        return json_schema_to_gbnf(json.dumps(rf.json_schema.schema_)), None
    except Exception as exc:
        raise InvalidRequest(f"response_format.json_schema.schema cannot be turned into a grammar: {exc}",
                             param="response_format.json_schema.schema") from None
