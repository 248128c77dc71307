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

from ponder.backends.registry import kind_of, lane_has
from ponder.config import LaneConfig, PonderConfig
from ponder.errors import InvalidRequest, ModelNotFound
from ponder.guard import plan_guard
from ponder.strategies import build_params, get_strategy
from ponder.thinking.budget import resolve_budget
from ponder.request import PonderRequest
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
    #: one answer may hold several calls of the client's functions
    parallel_tool_calls: bool = True
    #: the prompt, rendered and tokenized once when the request is prepared (None: not prepared yet)
    prompt: Any = field(default=None, compare=False)
    #: the strategy object (looked up once, when planning)
    runner: Any = field(default=None, compare=False, repr=False)
    #: what the lane does about flagged answers (:class:`ponder.guard.GuardPlan`; None: report only)
    guard: Any = None
    #: early exit by probing (:class:`ponder.strategies.probe.EarlyExit`; None: off)
    early_exit: Any = None
    #: scheduling: class rank (0 interactive, 1 standard, 2 batch), and the key and weight of its fair share
    priority: int = 1
    sched_key: str = ""
    sched_weight: float = 1.0

    @property
    def prompt_tokens(self) -> int | None:
        return self.prompt.n_tokens if self.prompt is not None else None

    def samples_per_choice(self) -> int:
        """How many samples the plan's strategy may draw for one choice (the strategy declares it)."""
        runner = self.runner or get_strategy(self.strategy)
        return runner.info.worst_case_samples(self.strategy_params)

    def worst_case_tokens(self, prompt_tokens: int) -> int:
        """Prompt plus every sample thinking to its cap and answering in full."""
        per = self.budget.max_tokens + self.sampling.max_answer_tokens
        total = prompt_tokens + self.n * self.samples_per_choice() * per
        if self.escalation is not None:
            total += self.n * self.escalation.worst_case_tokens(0)
        if self.guard is not None:
            total += self.n * self.guard.worst_case_tokens(self)
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
        if requested in kind_of(lane).labels(lane):
            return lane, f"pinned by model {requested!r}"
    names = ", ".join(lane.name for lane in config.lanes)
    raise ModelNotFound(f"unknown model {requested!r}; available: {names} (or 'auto')", param="model")


def plan_request(req: PonderRequest, config: PonderConfig, *, policy: Any = None,
                 router: Any = None, score: Any = None) -> Plan:
    """Route (when the request leaves the lane open and a policy is active), then plan.

    ``score`` is a router score already computed (the llm router runs on an
    engine, so the caller awaits it first).  Band settings of the policy
    fill only what the request leaves open: an explicit
    ``reasoning_effort`` / ``max_thinking_tokens`` / strategy wins.
    """
    pinned = req.lane or req.model
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
    rs = score if score is not None else router.score(list(req.messages))
    i, band = policy.band_for(rs.score)
    lane = config.lane(policy.lane_name(band, config))
    route = {"router": rs.router, "score": round(rs.score, 4), "band": i, "lane": lane.name,
             "reason": f"{rs.reason} -> band {i} ({band.label()})"}
    if rs.usage.total_tokens:
        route["router_usage"] = rs.usage.to_openai()
    return replace(_plan(req, config, lane, band, route), overhead=rs.usage)


def _plan(req: PonderRequest, config: PonderConfig, lane: LaneConfig, band: Any, route: dict) -> Plan:
    server = config.server
    if req.n > server.max_samples:
        raise InvalidRequest(f"n = {req.n} is above the ceiling of {server.max_samples}", param="n")
    budget = _budget(req, config, lane, band)
    clamped: dict = {}
    strategy_name, runner, params = _strategy(req, server, lane, band)
    client_tools, tool_choice = _client_tools(req, strategy_name)
    grammar, response_format = sampling_format(req, lane)  # a schema becomes a grammar once per request
    sampling = _sampling(req, server, lane, clamped,
                         _forced_call_grammar(client_tools, tool_choice, req, lane) or grammar)
    plan = Plan(
        lane=lane, messages=req.messages, budget=budget, sampling=sampling, strategy=strategy_name,
        strategy_params=params, visibility=req.visibility or server.default_visibility, n=req.n, route=route,
        clamped=clamped, deadline_s=_deadline(req, server.deadline_s), logprobs=req.logprobs,
        response_format=response_format,
        tools=req.tools if req.tools is not None else tuple(lane.tools.enabled),
        cache=req.cache or ("use" if config.cache.enabled else "off"),
        client_tools=client_tools, tool_choice=tool_choice, runner=runner,
        parallel_tool_calls=req.parallel_tool_calls is not False, early_exit=_early_exit(req, lane, band),
        priority=_priority(req, config, lane, budget, clamped),
    )
    guard = plan_guard(plan, config, req.max_thinking_tokens)
    if guard is not None:
        plan = replace(plan, guard=guard)
    _check_cost(plan, server.max_request_tokens)
    return plan


def _budget(req: PonderRequest, config: PonderConfig, lane: LaneConfig, band: Any) -> ThinkingBudget:
    effort, cap = req.effort, req.max_thinking_tokens
    if band is not None and effort is None and cap is None:
        effort, cap = band.effort, band.budget
    return resolve_budget(config.thinking.effort_table(), effort=effort, max_thinking_tokens=cap,
                          min_thinking_tokens=req.min_thinking_tokens, default_effort=lane.effort)


def _forced_call_grammar(tools: tuple, choice: Any, req: PonderRequest, lane: LaneConfig) -> str | None:
    """On an engine that takes a grammar, a forced ``tool_choice`` constrains the answer to a valid call."""
    from ponder.tools.forced import call_grammar, forced_names

    if not forced_names(tools, choice) or not lane_has(lane, "grammar"):
        return None
    if req.output_format is not None:
        raise InvalidRequest("a forced tool_choice and response_format cannot both constrain the answer",
                             param="tool_choice")
    return call_grammar(tools, choice)


def _sampling(req: PonderRequest, server: Any, lane: LaneConfig, clamped: dict, grammar: str | None) -> Sampling:
    answer_tokens = req.max_answer_tokens or lane.answer_tokens
    if answer_tokens > server.max_answer_tokens:
        clamped[req.answer_tokens_field] = {"from": answer_tokens, "to": server.max_answer_tokens,
                                            "why": "server.max_answer_tokens"}
        answer_tokens = server.max_answer_tokens
    return Sampling(
        temperature=DEFAULT_TEMPERATURE if req.temperature is None else req.temperature,
        top_p=DEFAULT_TOP_P if req.top_p is None else req.top_p,
        **({"top_k": req.top_k} if req.top_k is not None else {}),
        seed=req.seed, stop=req.stop, max_answer_tokens=answer_tokens, top_logprobs=req.top_logprobs,
        grammar=grammar,
    )


def _strategy(req: PonderRequest, server: Any, lane: LaneConfig, band: Any) -> tuple[str, Any, Any]:
    """(name, strategy object, typed parameters): the request's, else the band's, else the lane's."""
    raw_params = dict(req.params)
    if req.strategy:
        name = req.strategy
    elif band is not None and band.strategy:
        name = band.strategy
        raw_params = {**band.params, **raw_params}
    else:
        name = lane.strategy
        raw_params = {**lane.params, **raw_params}
    runner = get_strategy(name)
    params = build_params(runner, raw_params, server.max_samples)
    if runner.info.needs_text and not lane_has(lane, "text_completion"):
        raise InvalidRequest(f"strategy {name!r} needs an engine that continues raw text (text_completion: a chat "
                             f"API cannot resume a half-written thought), which lane {lane.name!r} lacks",
                             param="ponder.strategy")
    return name, runner, params


def _priority(req: PonderRequest, config: PonderConfig, lane: LaneConfig, budget: ThinkingBudget,
              clamped: dict) -> int:
    """The request's scheduling class: its lane's, else its effort tier's; ``ponder.priority`` may only lower it."""
    from ponder.config_ops import CLASSES

    s = config.server.scheduling
    natural = s.lanes.get(lane.name) or s.efforts.get(budget.effort or "", s.default)
    rank = CLASSES.index(natural)
    if req.priority is not None:
        asked = CLASSES.index(req.priority)
        if asked < rank:
            clamped["ponder.priority"] = {"from": req.priority, "to": natural, "why": "a request may lower its "
                                                                                     "class, not raise it"}
        rank = max(rank, asked)
    return rank


def _early_exit(req: PonderRequest, lane: LaneConfig, band: Any) -> Any:
    """The request's early exit, else the policy band's, else the lane's; it needs an engine that continues text."""
    from ponder.strategies.probe import EarlyExit

    raw = req.early_exit
    if raw is None and band is not None and band.early_exit is not None:
        raw = band.early_exit
    exit_ = EarlyExit.of(raw if raw is not None else lane.early_exit)
    if exit_ is not None and not lane_has(lane, "text_completion"):
        raise InvalidRequest(f"early_exit probes the trace as it is thought, which needs an engine that continues "
                             f"raw text (text_completion); lane {lane.name!r} lacks it", param="ponder.early_exit")
    return exit_


def _deadline(req: PonderRequest, default: float | None) -> float | None:
    seconds = req.deadline_s or default
    if req.deadline_cap_s is not None:
        seconds = req.deadline_cap_s if seconds is None else min(seconds, req.deadline_cap_s)
    return seconds


def _check_cost(plan: Plan, ceiling: int) -> None:
    estimate = sum(len(m.content) for m in plan.messages) // 4
    worst = plan.worst_case_tokens(estimate)
    if worst > ceiling:
        raise InvalidRequest(
            f"this request could spend up to {worst:,} tokens ({plan.n} choice(s) x "
            f"{plan.samples_per_choice()} sample(s) x ({plan.budget.max_tokens} thinking + "
            f"{plan.sampling.max_answer_tokens} answer) + prompt); the limit is {ceiling:,} "
            f"(server.max_request_tokens)", param="max_thinking_tokens", code="request_too_expensive")


def _client_tools(req: PonderRequest, strategy: str) -> tuple[tuple, Any]:
    """The client's functions as dicts, and a checked tool_choice."""
    choice = req.tool_choice
    if not req.client_tools:
        if choice not in (None, "none", "auto"):
            raise InvalidRequest("tool_choice needs tools", param="tool_choice")
        return (), None
    tools = req.client_tools
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


def sampling_format(req: PonderRequest, lane: LaneConfig) -> tuple[str | None, dict | None]:
    """(grammar ponder enforces, response_format passed to the engine) of a structured-output request."""
    fmt = req.output_format
    if fmt is None:
        return None, None
    if lane_has(lane, "grammar"):
        return _grammar(fmt), None
    if lane_has(lane, "response_format"):
        return None, fmt.wire
    raise InvalidRequest(f"lane {lane.name!r} cannot produce structured output (its engine takes no grammar and "
                         "no response_format)", param="response_format", code="unsupported_parameter")


def _grammar(fmt: Any) -> str:
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if fmt.type == "json_object":
        return JSON_GBNF
    try:
        return json_schema_to_gbnf(json.dumps(fmt.schema))
    except Exception as exc:
        raise InvalidRequest(f"response_format.json_schema.schema cannot be turned into a grammar: {exc}",
                             param="response_format.json_schema.schema") from None
