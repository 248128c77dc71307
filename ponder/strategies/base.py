"""One signature for every test-time strategy, and the registry they join.

A strategy gets a :class:`StrategyRequest` (the conversation, the thinking
budget per sample, sampling settings, how to extract answers, the deadline,
where to send token events and spend), a backend and its own typed
parameters, and returns a :class:`StrategyResult`: the chosen answer, every
sample it drew, the total usage of all of them, and a short decision trace
saying why this answer won.

Strategies register with :func:`register`, which records what the rest of
ponder needs to know about them (their "how many" parameter, whether their
samples are independent seeded draws the lab can pool, whether they need a
text-continuation engine) and powers ``ponder strategies``.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol, Sequence

from ponder.backends.base import Backend
from ponder.errors import InvalidRequest
from ponder.thinking.machine import Event, LoopGuardSettings
from ponder.types import CancelToken, Deadline, Generation, Message, Sampling, ThinkingBudget, Usage


class Sink(Protocol):
    """Receives token events of a strategy's samples while they run (the gateway streams them)."""

    def sample_event(self, index: int, event: Event) -> None: ...

    def sample_done(self, index: int, generation: Generation) -> None: ...


class Meter:
    """Spend so far of one attempt: finished samples exactly, running ones by their last event.

    Every sample a strategy draws goes through :mod:`ponder.strategies.sampling`,
    which reports here; the run object reads it for write-ahead accounting and
    for what a failed or cancelled attempt had already spent.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done = Usage()
        self._live: dict[int, tuple[int, int, int]] = {}
        self.samples = 0

    def live(self, index: int, thinking: int, answer: int, prompt: int = 0) -> None:
        """A running sample's spend so far: its prompt was read (billed from its first token on), its tokens."""
        with self._lock:
            self._live[index] = (thinking, answer, prompt)

    def finish(self, index: int, usage: Usage) -> None:
        with self._lock:
            self._live.pop(index, None)
            self.done = self.done + usage
            self.samples += 1

    def add(self, usage: Usage) -> None:
        """Spend that is not a sample (a judge call, a critique, the llm router)."""
        with self._lock:
            self.done = self.done + usage

    def total(self) -> Usage:
        with self._lock:
            d = self.done
            u = Usage(d.prompt_tokens, d.cached_prompt_tokens, d.thinking_tokens, d.answer_tokens, d.tool_tokens)
            for t, a, p in self._live.values():
                u.thinking_tokens += t
                u.answer_tokens += a
                u.prompt_tokens += p
            return u


@dataclass(frozen=True)
class StrategyRequest:
    messages: tuple[Message, ...]
    budget: ThinkingBudget
    sampling: Sampling
    cancel: CancelToken = field(default_factory=CancelToken, compare=False)
    loop_guard: LoopGuardSettings = LoopGuardSettings()
    #: how answers are pulled out of samples: auto | number | choice | text
    answer_kind: str = "auto"
    #: most samples the strategy may draw (the gateway's ceiling)
    max_samples: int = 16
    #: a programmatic verifier supplied by the caller (the lab's task scorer);
    #: when absent, strategies build the one their params name
    verifier: Any = field(default=None, compare=False)
    #: a step scorer for search strategies (default: a model judge on the same backend)
    prm: Any = field(default=None, compare=False)
    #: the lab's sample pool: independent seeded samples are drawn once per
    #: item and shared by every strategy and N (see :mod:`ponder.lab.pool`)
    pool: Any = field(default=None, compare=False)
    #: the request must be answered by then: strategies stop drawing and answer with what they have
    deadline: Deadline | None = None
    #: once the deadline cuts the thinking, the answer still gets this long (``server.answer_grace_s``)
    answer_grace_s: float = 2.0
    #: token events of running samples go here (None: nobody streams)
    sink: Sink | None = field(default=None, compare=False)
    meter: Meter = field(default_factory=Meter, compare=False)
    #: built-in tools for tool-integrated reasoning
    tools: Any = field(default=None, compare=False)
    #: an OpenAI response_format for upstreams that take it as is
    response_format: dict | None = field(default=None, compare=False)
    #: the client's functions and tool_choice (the call is returned, not run)
    client_tools: tuple = field(default=(), compare=False)
    tool_choice: Any = field(default=None, compare=False)
    #: allocates globally unique sample indices for this request (shared by every round)
    counter: Any = field(default=None, compare=False)
    #: the prompt prepared with the request (:class:`ponder.backends.base.Prompt`), reused by its samples
    prompt: Any = field(default=None, compare=False)
    #: early exit by probing (:class:`ponder.strategies.probe.EarlyExit`; None: off)
    early_exit: Any = None
    #: (class rank, key, weight) for engines that admit by class and fair share
    sched: Any = None

    @property
    def question(self) -> str:
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else ""


@dataclass
class Sample:
    generation: Generation
    #: the extracted final answer (None when none could be extracted)
    answer: str | None
    score: float | None = None
    #: index of the equivalence group the answer fell into
    group: int | None = None
    #: trace confidence (DeepConf measures), when log-probabilities were recorded
    confidence: dict[str, float] | None = None


@dataclass
class StrategyResult:
    answer: str
    #: the sample whose thinking and text are shown to the client
    chosen: Generation
    samples: list[Sample]
    usage: Usage
    decision: str
    confidence: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: why the strategy stopped early, if it did ("deadline", "cancelled")
    stopped: str | None = None

    @property
    def n_samples(self) -> int:
        return len(self.samples)


@dataclass(frozen=True)
class StrategyInfo:
    """What ponder knows about a strategy without running it."""

    name: str
    description: str
    params: type
    #: the parameter that sets "how many" (None: one sample)
    count_param: str | None = None
    #: samples are independent seeded draws (the lab pools them; load shedding counts them)
    pooled: bool = False
    #: needs a text-continuation engine (step-level search)
    needs_text: bool = False
    #: token events of its answer can stream live (one sample); others stream the chosen sample at the end
    streams_live: bool = False
    #: only its first draws can come from the lab's pool; later ones are drawn fresh (they may be cut short)
    fresh_after_warmup: bool = False

    def worst_case_samples(self, params: Any) -> int:
        """Most samples one choice may draw with these parameters (quotas, shedding and the lab reserve this).

        A strategy whose draws are not just its "how many" parameter (refine's
        first answer, a search's branches) says so with a ``worst_case_samples()``
        method on its parameters; nobody else special-cases it by name.
        """
        own = getattr(params, "worst_case_samples", None)
        if own is not None:
            return max(1, int(own()))
        v = getattr(params, self.count_param, 1) if self.count_param else 1
        return max(1, v) if isinstance(v, int) and not isinstance(v, bool) else 1

    def worst_case_tokens(self, params: Any, thinking_tokens: int, answer_tokens: int) -> int:
        """Tokens one choice may generate: every sample thinking to its cap and answering in full."""
        return self.worst_case_samples(params) * (thinking_tokens + answer_tokens)

    def parameters(self) -> list[dict]:
        """Name, default, type, range and help of every parameter (for ``ponder strategies``)."""
        out = []
        for f in dataclasses.fields(self.params):
            default = f.default if f.default is not dataclasses.MISSING else None
            out.append({"name": f.name, "default": default, "type": getattr(f.type, "__name__", str(f.type)),
                        "range": f.metadata.get("range", ""), "help": f.metadata.get("help", "")})
        return out


class Strategy(Protocol):
    info: ClassVar[StrategyInfo]
    Params: ClassVar[type]

    async def run(self, request: StrategyRequest, backend: Backend, params: Any) -> StrategyResult: ...


REGISTRY: dict[str, Any] = {}


def register(name: str, description: str, *, count_param: str | None = None, pooled: bool = False,
             needs_text: bool = False, streams_live: bool = False,
             fresh_after_warmup: bool = False) -> Callable[[type], type]:
    """Class decorator: add a strategy (and its metadata) to :data:`REGISTRY`."""

    def deco(cls: type) -> type:
        if name in REGISTRY:
            raise ValueError(f"strategy {name!r} registered twice")
        cls.info = StrategyInfo(name, description, cls.Params, count_param, pooled, needs_text, streams_live,
                                fresh_after_warmup)
        cls.name = name
        REGISTRY[name] = cls()
        return cls

    return deco


def get_strategy(name: str, *, param: str = "ponder.strategy") -> Any:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InvalidRequest(
            f"unknown strategy {name!r}; available: {', '.join(sorted(REGISTRY))}", param=param
        ) from None


def build_params(strategy: Any, raw: dict[str, Any], max_samples: int | None = None, *,
                 param_prefix: str = "ponder.params") -> Any:
    """Typed parameters from a plain dict; unknown keys and wrong types are errors naming the parameter."""
    fields = {f.name: f for f in dataclasses.fields(strategy.Params)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        allowed = ", ".join(sorted(fields)) or "none"
        raise InvalidRequest(
            f"unknown parameter(s) for strategy {strategy.info.name!r}: {', '.join(unknown)} (allowed: {allowed})",
            param=param_prefix,
        )
    for k, v in raw.items():
        _check_type(strategy.info.name, k, v, fields[k], param_prefix)
    params = strategy.Params(**raw)
    params.validate(max_samples)
    return params


def _check_type(strategy: str, name: str, value: Any, f: dataclasses.Field, prefix: str) -> None:
    want = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    ok = True
    if want == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif want == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif want == "str":
        ok = isinstance(value, str)
    elif want == "bool":
        ok = isinstance(value, bool)
    elif want in ("str | None",):
        ok = value is None or isinstance(value, str)
    elif want in ("float | None",):
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    if not ok:
        raise InvalidRequest(f"{name} of strategy {strategy!r} must be {want}, got {value!r}",
                             param=f"{prefix}.{name}")


def total_usage(generations: Sequence[Generation]) -> Usage:
    usage = Usage()
    for g in generations:
        usage = usage + g.usage
    return usage


def param(default: Any, help: str, range: str = "") -> Any:
    """A strategy parameter with its help text and range (shown by ``ponder strategies``)."""
    return field(default=default, metadata={"help": help, "range": range})
