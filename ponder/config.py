"""One YAML file configures ponder: lanes, thinking tiers, server settings.

Every section is a pydantic model with ``extra="forbid"``, so a typo is a
start-up error that names the key (``lanes.0.prices.inptu_per_1m: unknown
key``) instead of a silently ignored setting.  Config objects are never
mutated after loading: per-request settings live on the request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ponder.errors import ConfigError
from ponder.thinking.budget import DEFAULT_EFFORTS, DEFAULT_MAX_BUDGET, EffortTable
from ponder.thinking.control import LoopGuardSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prices(_Strict):
    """US dollars per 1M tokens.  Thinking is billed as output."""

    input_per_1m: float = Field(0.0, ge=0)
    output_per_1m: float = Field(0.0, ge=0)
    cached_input_per_1m: float | None = Field(None, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        cached_price = self.input_per_1m if self.cached_input_per_1m is None else self.cached_input_per_1m
        fresh = max(0, prompt_tokens - cached_tokens)
        return (fresh * self.input_per_1m + cached_tokens * cached_price + completion_tokens * self.output_per_1m) / 1e6


class LaneConfig(_Strict):
    """A lane = an engine + model + default thinking effort + prices."""

    name: str = "default"
    backend: Literal["llama_cpp", "openai"] = "llama_cpp"
    #: GGUF path or a known name (smollm2, qwen2.5-coder-0.5b) for llama_cpp
    model: str | None = None
    #: for backend=openai: the upstream's /v1 base URL and model name
    base_url: str | None = None
    upstream_model: str | None = None
    #: name of the environment variable holding the upstream API key
    api_key_env: str | None = None
    #: force native-reasoning handling on/off (default: detect)
    native_reasoning: bool | None = None
    #: the upstream accepts ``n`` (several samples per call)
    supports_n: bool = False
    #: extra body fields sent when thinking is off, e.g. for Qwen3 on vLLM:
    #: ``{"chat_template_kwargs": {"enable_thinking": false}}``
    no_think_body: dict = Field(default_factory=dict)
    n_ctx: int = Field(4096, ge=256)
    n_threads: int | None = Field(None, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_connections: int = Field(64, ge=1)
    effort: str = "medium"
    strategy: str = "single"
    answer_tokens: int = Field(512, ge=1)
    prices: Prices = Prices()

    @model_validator(mode="after")
    def _upstream_needs_url(self) -> "LaneConfig":
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url")
        return self


class ThinkingConfig(_Strict):
    efforts: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_EFFORTS))
    max_budget: int = Field(DEFAULT_MAX_BUDGET, ge=1)
    loop_guard: LoopGuardSettings = LoopGuardSettings()

    @field_validator("efforts")
    @classmethod
    def _efforts_valid(cls, v: dict[str, int]) -> dict[str, int]:
        for name, cap in v.items():
            if cap < 0:
                raise ValueError(f"effort {name!r} must be >= 0")
        if "none" not in v:
            v = {"none": 0, **v}
        return v

    def effort_table(self) -> EffortTable:
        return EffortTable(caps=dict(self.efforts), max_budget=self.max_budget)


class SheddingConfig(_Strict):
    """Load shedding by budget: under pressure new requests think less; nobody is cut.

    The pressure level is the number of marks reached by the queue depth
    (requests waiting for any engine) or by the thinking tokens in flight (the
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
    #: requests waiting for a serialized engine beyond this get HTTP 429
    queue_size: int = Field(32, ge=0)
    #: hidden-mode progress chunks are sent at least this often
    progress_interval_s: float = Field(1.0, gt=0, le=2.0)
    #: ceiling on ``n`` and on strategy sample counts per request
    max_samples: int = Field(16, ge=1)
    #: ``thinking.visibility`` when the request does not say
    default_visibility: Literal["hidden", "visible", "summary"] = "visible"
    #: summary mode: summarize every K thinking tokens
    summary_every_tokens: int = Field(128, ge=8)
    #: the lane whose model writes thinking summaries (default: a separate
    #: instance of the first lane's model, so it never blocks the generation)
    summary_lane: str | None = None
    #: append one JSON line per request (usage, cost, timings) to this file
    ledger_path: str | None = None
    shedding: SheddingConfig = SheddingConfig()


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
        for lane in self.lanes:
            if lane.effort not in self.thinking.efforts:
                raise ValueError(f"lane {lane.name!r}: effort {lane.effort!r} is not in thinking.efforts")
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
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping")
    return config_from_dict(data, source=str(p))


def config_from_dict(data: dict, *, source: str = "config") -> PonderConfig:
    try:
        return PonderConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"{source}: {key}: {msg}", param=key) from None
