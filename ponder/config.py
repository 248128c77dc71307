"""One YAML file configures ponder: lanes, thinking tiers, server, keys, state, ledger.

Every section is a pydantic model with ``extra="forbid"``, so a typo is a
start-up error that names the key (``lanes.0.prices.inptu_per_1m: unknown
key``) instead of a silently ignored setting.  Config objects are never
mutated after loading: per-request settings live on the request.

YAML reads a bare ``off``/``on``/``no``/``yes`` as a boolean; where a key
takes a word (``policy``, ``effort``), those booleans are read back as the
words they were meant to be.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ponder.config_base import _Strict, _word
from ponder.config_ops import (AnomalyConfig, AuthConfig, CacheConfig, ConversationsConfig, GuardsConfig, KeyConfig,
                               KeyLimits, LedgerConfig, SchedulingConfig, StateConfig,
                               TelemetryConfig)
from ponder.errors import ConfigError
from ponder.thinking.budget import DEFAULT_EFFORTS, DEFAULT_MAX_BUDGET, EffortTable
from ponder.thinking.machine import LoopGuardSettings


__all__ = ["AuthConfig", "CacheConfig", "ConversationsConfig", "KeyConfig", "KeyLimits", "LaneConfig", "LedgerConfig", "PonderConfig",
           "Prices", "ServerConfig", "SheddingConfig", "StateConfig", "ThinkingConfig", "ToolsConfig", "config_from_dict",
           "load_config"]


class Prices(_Strict):
    """US dollars per 1M tokens.  Thinking is billed as output; tool results as input."""

    input_per_1m: float = Field(0.0, ge=0)
    output_per_1m: float = Field(0.0, ge=0)
    cached_input_per_1m: float | None = Field(None, ge=0)


class ToolsConfig(_Strict):
    """Built-in tools a lane lets the model call inside its thinking."""

    enabled: list[Literal["python", "calculator"]] = Field(default_factory=list)
    #: calls per request (all samples together)
    max_calls: int = Field(4, ge=1, le=64)
    #: calls within one rollout (one sample's chain of call → result → call)
    max_depth: int = Field(3, ge=1, le=64)
    #: seconds per call
    timeout_s: float = Field(10.0, gt=0, le=120)
    #: tool seconds per request
    max_total_s: float = Field(30.0, gt=0, le=600)
    #: tool results longer than this many tokens are cut
    max_result_tokens: int = Field(256, ge=16, le=8192)
    cache_ttl_s: float = Field(600.0, ge=0)


class LaneConfig(_Strict):
    """A lane = an engine + model + default thinking effort + prices."""

    name: str = "default"
    backend: Literal["llama_cpp", "openai"] = "llama_cpp"
    #: GGUF path or a known name (smollm2, qwen2.5-coder-0.5b) for llama_cpp
    model: str | None = None
    #: for backend=openai: the upstream's /v1 base URL (or a fleet of replicas: ``base_urls``) and model name
    base_url: str | None = None
    base_urls: list[str] = Field(default_factory=list)
    #: a replica of a fleet that cannot be reached (or fails 3 calls in a row) is left out this long
    eject_s: float = Field(10.0, gt=0, le=3600)
    #: how often each replica's ``GET /health`` is checked (a failing one is ejected, a passing one readmitted);
    #: 0: no active checks (calls that fail still eject)
    health_interval_s: float = Field(5.0, ge=0, le=3600)
    upstream_model: str | None = None
    #: name of the environment variable holding the upstream API key
    api_key_env: str | None = None
    #: force native-reasoning handling on/off (default: detect)
    native_reasoning: bool | None = None
    #: how an upstream that returns thinking inline in ``content`` marks it (see ponder.thinking.formats):
    #: ``think`` (<think> tags: R1, Qwen3) or ``harmony`` (gpt-oss channels, served without a reasoning parser)
    reasoning_format: str = "think"
    #: extra body fields sent when thinking is off, e.g. for Qwen3 on vLLM:
    #: ``{"chat_template_kwargs": {"enable_thinking": false}}``
    no_think_body: dict = Field(default_factory=dict)
    #: the upstream accepts ``response_format`` (structured output) as OpenAI defines it
    response_format: bool = True
    #: the engine schedules by request priority and takes ponder's class in its body: ``vllm`` (run with
    #: ``--scheduling-policy priority``), ``sglang`` (``--enable-priority-scheduling``), or ``none``
    engine_priority: Literal["none", "vllm", "sglang"] = "none"
    #: ``auto``: at start-up ask the engine what it offers (llama-server's raw completions make every strategy,
    #: exact thinking control and tools inside the thinking available); ``chat``: a chat API only, never probed
    capabilities: Literal["auto", "chat"] = "auto"
    #: the model's chat template for raw completions on vLLM or SGLang (which do not publish theirs): the
    #: model's ``tokenizer_config.json``, a Jinja file, or the template text; llama-server's is read from it
    chat_template: str | None = None
    #: tokens one sequence may hold (the embedded engine's per-request context)
    n_ctx: int = Field(4096, ge=256)
    #: KV cells shared by all sequences of the embedded engine (default 4 x n_ctx)
    kv_cells: int | None = Field(None, ge=256)
    #: sequences the embedded engine decodes together in one step
    max_sequences: int = Field(16, ge=1, le=240)
    #: llama.cpp threads (default: all cores but one when there are more than two)
    n_threads: int | None = Field(None, ge=1)
    flash_attn: bool | None = None
    #: total deadline per upstream attempt: connect, first byte and the whole stream
    timeout_s: float = Field(120.0, gt=0)
    max_connections: int = Field(64, ge=1)
    #: retries of the same lane on connection errors before any byte (jittered backoff)
    retries: int = Field(1, ge=0, le=10)
    retry_backoff_s: float = Field(0.2, ge=0, le=30)
    #: lanes tried in order when this one fails before the first byte reaches the client
    fallbacks: list[str] = Field(default_factory=list)
    effort: str = "medium"
    strategy: str = "single"
    #: parameters of the lane's strategy
    params: dict[str, Any] = Field(default_factory=dict)
    answer_tokens: int = Field(512, ge=1)
    prices: Prices = Prices()
    tools: ToolsConfig = ToolsConfig()
    #: what a flagged answer triggers (escalate, vote): see ponder.flags
    guards: GuardsConfig = GuardsConfig()
    #: early exit by probing for this lane's requests: true, or {probe_every, agree, probe_tokens}
    early_exit: bool | dict[str, int] = False

    @field_validator("effort", mode="before")
    @classmethod
    def _effort_word(cls, v: Any) -> Any:
        return "none" if v is False else _word(v)

    @field_validator("reasoning_format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        from ponder.thinking.formats import FORMATS

        if v not in FORMATS:
            raise ValueError(f"unknown reasoning format {v!r}; known: {', '.join(sorted(FORMATS))}")
        return v

    @model_validator(mode="after")
    def _kind_settings(self) -> "LaneConfig":
        from ponder.backends.registry import kind_of

        problem = kind_of(self).check(self)
        if problem:
            raise ValueError(problem)
        if self.kv_cells is not None and self.kv_cells < self.n_ctx:
            raise ValueError(f"kv_cells ({self.kv_cells}) must be at least n_ctx ({self.n_ctx})")
        return self


class ThinkingConfig(_Strict):
    efforts: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_EFFORTS))
    max_budget: int = Field(DEFAULT_MAX_BUDGET, ge=1)
    loop_guard: LoopGuardSettings = LoopGuardSettings()

    @field_validator("efforts", mode="before")
    @classmethod
    def _effort_names(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {("none" if k is False else _word(k)): cap for k, cap in v.items()}
        return v

    @field_validator("efforts")
    @classmethod
    def _efforts_valid(cls, v: dict[str, int]) -> dict[str, int]:
        for name, cap in v.items():
            if cap < 0:
                raise ValueError(f"effort {name!r} must be >= 0")
        if "none" not in v:
            v = {"none": 0, **v}
        return v

    @model_validator(mode="after")
    def _caps_within_max(self) -> "ThinkingConfig":
        for name, cap in self.efforts.items():
            if cap > self.max_budget:
                raise ValueError(f"efforts.{name}: {cap} exceeds thinking.max_budget ({self.max_budget})")
        return self

    def effort_table(self) -> EffortTable:
        return EffortTable(caps=dict(self.efforts), max_budget=self.max_budget)


class SheddingConfig(_Strict):
    """Load shedding by budget: under pressure new requests think less; nobody is cut.

    The pressure level is the number of marks reached by the queue depth
    (sequences waiting for an engine) or by the thinking tokens in flight (the
    budgets of admitted, unfinished requests); each level lowers a new
    request's effort by one tier (high -> medium -> low), never below
    ``floor``.  Past a hard ceiling the gateway answers 429 with Retry-After.
    """

    enabled: bool = True
    queue_marks: list[int] = Field(default_factory=lambda: [4, 8, 16])
    thinking_marks: list[int] = Field(default_factory=lambda: [16384, 32768, 65536])
    floor: str = "low"
    hard_queue: int | None = Field(None, ge=0)
    hard_thinking_tokens: int | None = Field(None, ge=0)
    retry_after_s: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _marks(self) -> "SheddingConfig":
        for name in ("queue_marks", "thinking_marks"):
            marks = getattr(self, name)
            if marks != sorted(marks) or any(m < 0 for m in marks):
                raise ValueError(f"{name} must be non-negative and increasing")
        return self


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    #: sequences waiting for an embedded engine beyond this: new requests get HTTP 429
    queue_size: int = Field(64, ge=0)
    #: hidden-mode progress chunks are sent at least this often
    progress_interval_s: float = Field(1.0, gt=0, le=2.0)
    #: ceiling on ``n`` and on strategy sample counts per request
    max_samples: int = Field(16, ge=1)
    #: ceiling on answer tokens a request may ask for
    max_answer_tokens: int = Field(4096, ge=1)
    #: a request whose worst case (prompt + samples x (thinking cap + answer)) is above this is refused
    max_request_tokens: int = Field(2_000_000, ge=1)
    #: a thinking budget that cannot fit the context: clamped to what fits (reported in
    #: ``ponder.clamped``) or refused with 400
    budget_overflow: Literal["clamp", "reject"] = "clamp"
    #: ``thinking.visibility`` when the request does not say
    default_visibility: Literal["hidden", "visible", "summary"] = "visible"
    #: summary mode: summarize every K thinking tokens
    summary_every_tokens: int = Field(128, ge=8)
    #: the lane whose model writes thinking summaries (default: the first lane's engine)
    summary_lane: str | None = None
    #: request bodies larger than this get 413 (checked while reading)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_messages: int = Field(512, ge=1)
    #: characters per message
    max_message_chars: int = Field(256_000, ge=1)
    #: JSON nesting deeper than this is refused before parsing
    max_json_depth: int = Field(64, ge=4, le=1000)
    #: default per-request deadline (seconds, covering queueing, strategy and every attempt)
    deadline_s: float | None = Field(None, gt=0)
    #: after a deadline cuts thinking, the answer may take this long
    answer_grace_s: float = Field(2.0, ge=0)
    #: a streamed response's headers wait this long for the first event, so early failures get a status code
    first_byte_wait_s: float = Field(0.5, ge=0, le=30)
    #: on SIGTERM, in-flight requests get this long to finish before they are cancelled (and accounted)
    drain_s: float = Field(10.0, ge=0)
    #: one structured line per request at the default log level
    access_log: bool = True
    log_format: Literal["text", "json"] = "text"
    shedding: SheddingConfig = SheddingConfig()
    #: spike detection and burn rate (ponder_thinking_anomaly, ponder_key_cap_eta_seconds)
    anomaly: AnomalyConfig = AnomalyConfig()
    #: scheduling classes and fair admission on the embedded engines
    scheduling: SchedulingConfig = SchedulingConfig()


class PonderConfig(_Strict):
    server: ServerConfig = ServerConfig()
    thinking: ThinkingConfig = ThinkingConfig()
    #: built-in default: two lanes on the packaged model, sharing one engine:
    #: ``reasoning`` (thinks at medium effort) and ``fast`` (no thinking)
    lanes: list[LaneConfig] = Field(default_factory=lambda: [
        LaneConfig(name="reasoning"), LaneConfig(name="fast", effort="none")])
    #: the lane a request gets when its ``model`` names none
    default_lane: str | None = None
    #: routing policy for requests with model "auto": a policy YAML path,
    #: "default" (the shipped policy) or "off" (always the default lane)
    policy: str = "default"
    auth: AuthConfig = AuthConfig()
    state: StateConfig = StateConfig()
    ledger: LedgerConfig = LedgerConfig()
    cache: CacheConfig = CacheConfig()
    conversations: ConversationsConfig = ConversationsConfig()
    telemetry: TelemetryConfig = TelemetryConfig()

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_word(cls, v: Any) -> Any:
        return _word(v)

    @model_validator(mode="after")
    def _lanes_valid(self) -> "PonderConfig":
        if not self.lanes:
            raise ValueError("at least one lane is required")
        names = [lane.name for lane in self.lanes]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate lane names: {sorted(dupes)}")
        if self.default_lane is not None and self.default_lane not in names:
            raise ValueError(f"default_lane {self.default_lane!r} is not a lane ({names})")
        if self.server.summary_lane is not None and self.server.summary_lane not in names:
            raise ValueError(f"server.summary_lane {self.server.summary_lane!r} is not a lane ({names})")
        for i, lane in enumerate(self.lanes):
            if lane.effort not in self.thinking.efforts:
                raise ValueError(f"lanes.{i}.effort: {lane.effort!r} is not in thinking.efforts "
                                 f"({', '.join(self.thinking.efforts)})")
            for j, fb in enumerate(lane.fallbacks):
                if fb not in names:
                    raise ValueError(f"lanes.{i}.fallbacks.{j}: {fb!r} is not a lane ({', '.join(names)})")
                if fb == lane.name:
                    raise ValueError(f"lanes.{i}.fallbacks.{j}: a lane cannot fall back to itself")
            esc = lane.guards.escalate_to
            if esc is not None and esc not in names:
                raise ValueError(f"lanes.{i}.guards.escalate_to: {esc!r} is not a lane ({', '.join(names)})")
        for k in self.auth.keys:
            for ln in k.limits.lanes or []:
                if ln not in names:
                    raise ValueError(f"auth key {k.name!r}: lanes names {ln!r}, which is not a lane")
            if k.limits.max_effort is not None and k.limits.max_effort not in self.thinking.efforts:
                raise ValueError(f"auth key {k.name!r}: max_effort {k.limits.max_effort!r} is not an effort tier")
        return self

    def lane(self, name: str | None) -> LaneConfig:
        target = name or self.default_lane or self.lanes[0].name
        for lane in self.lanes:
            if lane.name == target:
                return lane
        raise KeyError(target)


def load_config(path: str | os.PathLike | None) -> PonderConfig:
    """Read and validate a YAML config; ``None`` gives the built-in default."""
    if path is None:
        return PonderConfig()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}", param="--config")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}", param="--config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping", param="--config")
    return config_from_dict(data, source=str(p))


def config_from_dict(data: dict, *, source: str = "config") -> PonderConfig:
    try:
        return PonderConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        head, sep, rest = msg.partition(": ")
        if sep and head.replace(".", "").replace("_", "").isalnum() and "." in head:
            # a validator that names the exact key: lanes.0.effort, efforts.high
            key, msg = (head if head.split(".")[0] in ("lanes", "thinking", "server", "auth", "state", "ledger")
                        or not key else f"{key}.{head}"), rest
        key = key or "(top level)"
        raise ConfigError(f"{key}: {msg} (in {source})", param=key) from None
