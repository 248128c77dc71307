"""Config sections for operating ponder for others: keys and their limits, the state store, the ledger, the cache.

Re-exported by :mod:`ponder.config`, which holds the one top-level
:class:`~ponder.config.PonderConfig`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from ponder.config_base import _Strict, _word


#: scheduling classes, most urgent first
CLASSES = ("interactive", "standard", "batch")


class KeyLimits(_Strict):
    """What one API key may do.  Absent: no limit of that kind."""

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    thinking_tokens_per_day: int | None = Field(None, ge=1)
    spend_usd_per_month: float | None = Field(None, gt=0)
    max_concurrent: int | None = Field(None, ge=1)
    max_thinking_tokens: int | None = Field(None, ge=0)
    max_samples: int | None = Field(None, ge=1)
    max_effort: str | None = None
    lanes: list[str] | None = None
    #: requests beyond the per-request limits are clamped (and told so) instead of refused
    clamp: bool = False
    #: the most urgent scheduling class this key's requests may have (interactive, standard, batch)
    priority: str | None = None
    #: this key's share of engine slots against other keys waiting in the same class
    weight: float = Field(1.0, gt=0, le=1000)

    @field_validator("priority")
    @classmethod
    def _class(cls, v: str | None) -> str | None:
        if v is not None and v not in CLASSES:
            raise ValueError(f"priority must be one of {', '.join(CLASSES)}")
        return v

    @field_validator("max_effort", mode="before")
    @classmethod
    def _effort_word(cls, v: Any) -> Any:
        return "none" if v is False else _word(v)


class KeyConfig(_Strict):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    key_sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$")
    limits: KeyLimits = KeyLimits()


class AuthConfig(_Strict):
    required: bool = False
    keys: list[KeyConfig] = Field(default_factory=list)
    #: limits of requests without a key when ``required`` is false
    anonymous: KeyLimits = KeyLimits()

    @model_validator(mode="after")
    def _unique(self) -> "AuthConfig":
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ValueError("key names must be unique")
        hashes = [k.key_sha256 for k in self.keys]
        if len(set(hashes)) != len(hashes):
            raise ValueError("two keys share one key_sha256")
        if self.required and not self.keys:
            raise ValueError("auth.required is true but no keys are configured")
        return self


class StateConfig(_Strict):
    """Where quotas and reservations live: ``memory://`` (one process) or ``redis://host:port/db`` (shared)."""

    url: str = "memory://"
    #: a reservation left by a dead replica expires after this
    lease_s: float = Field(120.0, gt=0)
    #: when the state store is unreachable: refuse (false, the default) or admit without quotas
    fail_open: bool = False

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not (v.startswith("memory://") or v.startswith("redis://") or v.startswith("rediss://")):
            raise ValueError("state.url must be memory:// or redis://host:port/db")
        return v


class LedgerConfig(_Strict):
    """One durable row per request: ``sqlite:///path`` (WAL), ``jsonl:///path``, or ``off``."""

    url: str = "sqlite:///runs/ledger.db"
    #: rows of running requests are updated at least this often (write-ahead accounting)
    flush_interval_s: float = Field(1.0, gt=0, le=60)

    @field_validator("url", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        v = _word(v)
        if not isinstance(v, str) or not (v == "off" or v.startswith("sqlite:///") or v.startswith("jsonl:///")):
            raise ValueError("ledger.url must be sqlite:///PATH, jsonl:///PATH or off")
        return v


class CacheConfig(_Strict):
    """The answer cache: exact repeats of deterministic requests are answered from the state store."""

    enabled: bool = False
    ttl_s: float = Field(3600.0, gt=0)
    max_entries: int = Field(10_000, ge=1)
    #: also cache requests with temperature > 0 and no seed
    nondeterministic: bool = False


class ConversationsConfig(_Strict):
    """Stored responses for the Responses API's ``previous_response_id`` (in the state store, per key)."""

    #: a stored conversation is forgotten after this (OpenAI keeps responses 30 days)
    ttl_s: float = Field(30 * 86400.0, gt=0)
    #: most conversations kept in memory (``state.url: memory://``); Redis expires them by TTL alone
    max_entries: int = Field(10_000, ge=1)
    #: most messages one stored conversation may hold (older turns are dropped first)
    max_messages: int = Field(256, ge=2)


GUARD_ACTIONS = ("escalate", "vote", "none")


class GuardsConfig(_Strict):
    """What a lane does when an answer is flagged (see :mod:`ponder.flags`).

    ``actions`` maps a flag to ``escalate`` (one retry at the next effort tier,
    or on ``escalate_to``), ``vote`` (``vote_samples`` more samples and a
    majority vote with the flagged answer) or ``none`` (report only).  Flags
    are always detected and reported; actions are off unless configured.
    """

    actions: dict[str, str] = Field(default_factory=dict)
    vote_samples: int = Field(2, ge=1, le=16)
    #: the lane an ``escalate`` retries on (default: this lane, at the next effort tier)
    escalate_to: str | None = None

    @field_validator("actions", mode="before")
    @classmethod
    def _words(cls, v: Any) -> Any:
        # YAML reads a bare ``no``/``off`` as false: that means no action
        return {k: ("none" if a is False else _word(a)) for k, a in v.items()} if isinstance(v, dict) else v

    @field_validator("actions")
    @classmethod
    def _known(cls, v: dict[str, str]) -> dict[str, str]:
        from ponder.flags import DETECTORS

        for flag, action in v.items():
            if flag not in DETECTORS:
                raise ValueError(f"unknown flag {flag!r}; known: {', '.join(DETECTORS)}")
            if action not in GUARD_ACTIONS:
                raise ValueError(f"guards.actions.{flag}: unknown action {action!r}; choose {', '.join(GUARD_ACTIONS)}")
        return v

    def acting(self) -> dict[str, str]:
        return {f: a for f, a in self.actions.items() if a != "none"}


class AnomalyConfig(_Strict):
    """Spike detection (``server.anomaly``): a request or key far above its own rolling baseline is marked.

    A lane's and a key's baseline is the moving average of thinking tokens per
    request (the last ~``1/alpha`` requests).  A request is a spike when it
    thinks more than ``factor`` times its baseline and at least
    ``min_excess_tokens`` more, once the baseline holds ``min_requests``
    requests.  A key's minute is a spike when it spends more than ``factor``
    times its average minute.  Burn rate: a key's spend and thinking over the
    last ``window_s`` seconds project when it reaches its caps.
    """

    enabled: bool = True
    factor: float = Field(4.0, gt=1)
    min_requests: int = Field(20, ge=1)
    min_excess_tokens: int = Field(256, ge=0)
    alpha: float = Field(0.05, gt=0, le=1)
    window_s: float = Field(900.0, gt=0)


class TelemetryConfig(_Strict):
    """OpenTelemetry traces: exported over OTLP/HTTP when ``otlp_endpoint`` is set; nothing otherwise."""

    #: e.g. ``http://127.0.0.1:4318/v1/traces`` (an OpenTelemetry collector, Jaeger, Tempo)
    otlp_endpoint: str | None = None
    service_name: str = "ponder"


class SchedulingConfig(_Strict):
    """``server.scheduling``: which class a request is in, so short requests do not wait behind long reasoning.

    A request's class comes from its lane (``lanes``) or else its effort tier
    (``efforts``); the request's ``ponder.priority`` may lower it, a key's
    ``priority`` caps it.  Embedded engines admit waiting sequences by class,
    then earliest deadline, then by weighted fair share between keys (a key's
    samples count as its share, so n=16 from one key does not take every slot).
    """

    efforts: dict[str, str] = Field(default_factory=lambda: {
        "none": "interactive", "minimal": "interactive", "low": "standard", "medium": "standard",
        "high": "batch", "xhigh": "batch", "max": "batch"})
    lanes: dict[str, str] = Field(default_factory=dict)
    #: a request without an effort tier (an explicit token cap) or a tier not listed
    default: str = "standard"

    @field_validator("efforts", "lanes", mode="before")
    @classmethod
    def _words(cls, v: Any) -> Any:
        return {(_word(k)): _word(c) for k, c in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _known(self) -> "SchedulingConfig":
        for where, c in [*(("efforts." + k, c) for k, c in self.efforts.items()),
                         *(("lanes." + k, c) for k, c in self.lanes.items()), ("default", self.default)]:
            if c not in CLASSES:
                raise ValueError(f"server.scheduling.{where}: {c!r} is not a class ({', '.join(CLASSES)})")
        return self
