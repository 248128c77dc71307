"""The plain data that flows through ponder.

Everything here is a small dataclass with no behaviour beyond arithmetic on
usage.  Requests are immutable (frozen) so per-request settings can never leak
into another request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

#: Why thinking ended: the model ended it, the budget cut it, the loop guard
#: stopped a repetition, thinking was off, the client left, the request's
#: deadline came, the sequence filled the model's context, a confidence monitor gave up on the trace,
#: a tool limit was reached (the model was told to answer), or probes found its answer settled (early exit).
StopReason = Literal["end", "budget", "repetition", "none", "cancelled", "deadline", "context", "confidence",
                     "tools", "settled"]
#: How a generation ended.  ``length``: the answer hit its token limit (or the
#: context); ``deadline``: the request's deadline cut it.
FinishReason = Literal["stop", "length", "cancelled", "deadline"]
#: Where the answer a client sees came from: the answer phase, or (when that
#: was empty or only tags) the last stated result of the thinking.
AnswerSource = Literal["answer", "thinking", "none"]


@dataclass(frozen=True)
class Message:
    """One chat turn.  Multi-turn conversations stay a list of these."""

    role: str
    content: str
    #: an assistant turn's calls of client tools: ({"id", "name", "arguments" (JSON text)}, ...)
    tool_calls: tuple = ()
    #: a tool turn: the call it answers
    tool_call_id: str | None = None


@dataclass(frozen=True)
class Sampling:
    """Decoding settings for one request.  ``seed=None`` means random."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    seed: int | None = None
    stop: tuple[str, ...] = ()
    #: Tokens reserved for the answer after thinking ends (or is cut).
    max_answer_tokens: int = 512
    #: alternatives recorded per generated token (0: only the sampled token's
    #: log-probability, which is always recorded where the engine has it)
    top_logprobs: int = 0
    #: a GBNF grammar the *answer* must follow (structured output); thinking
    #: stays free-form
    grammar: str | None = None

    def with_seed(self, seed: int | None) -> "Sampling":
        return replace(self, seed=seed)


@dataclass(frozen=True)
class ThinkingBudget:
    """How much the model may think.

    ``max_tokens`` is a hard cap: reported thinking never exceeds it.
    ``min_tokens`` makes ponder suppress an early end of thinking.
    ``effort`` is the tier the budget came from (for reporting only).
    """

    max_tokens: int
    min_tokens: int = 0
    effort: str | None = None

    @property
    def enabled(self) -> bool:
        return self.max_tokens > 0


@dataclass
class Usage:
    """Token accounting.  ``completion = thinking + answer``.

    ``tool_tokens`` are tool results fed back into a sequence: the model
    reads them, so they are billed as input, never as thinking.
    """

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    thinking_tokens: int = 0
    answer_tokens: int = 0
    tool_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return self.thinking_tokens + self.answer_tokens

    @property
    def input_tokens(self) -> int:
        return self.prompt_tokens + self.tool_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.completion_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.cached_prompt_tokens + other.cached_prompt_tokens,
            self.thinking_tokens + other.thinking_tokens,
            self.answer_tokens + other.answer_tokens,
            self.tool_tokens + other.tool_tokens,
        )

    def to_openai(self) -> dict:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_prompt_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.thinking_tokens},
        }

    def to_dict(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "cached_prompt_tokens": self.cached_prompt_tokens,
                "thinking_tokens": self.thinking_tokens, "answer_tokens": self.answer_tokens,
                "tool_tokens": self.tool_tokens}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Usage":
        d = d or {}
        return cls(**{k: int(d.get(k) or 0) for k in ("prompt_tokens", "cached_prompt_tokens", "thinking_tokens",
                                                      "answer_tokens", "tool_tokens")})


@dataclass
class ThinkingReport:
    """What happened to the thinking of one generation."""

    budget: int
    min: int = 0
    used: int = 0
    truncated: bool = False
    stopped: StopReason = "none"
    #: how many continuation cues ("Wait") were injected to reach ``min``.
    continuations: int = 0
    effort: str | None = None
    #: early exit by probing: answer tokens the probes generated (billed as thinking), and probes made
    probe_tokens: int = 0
    probes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Timings:
    queue_s: float = 0.0
    ttft_s: float | None = None
    time_to_answer_s: float | None = None
    total_s: float = 0.0
    #: seconds paused by the engine for a more urgent class (ponder.backends.preemption)
    preempted_s: float = 0.0

    def to_dict(self) -> dict:
        r = lambda v: round(v, 6) if isinstance(v, float) else v  # noqa: E731
        return {"queue_s": r(self.queue_s), "ttft_s": r(self.ttft_s), "time_to_answer_s": r(self.time_to_answer_s),
                "total_s": r(self.total_s), "preempted_s": r(self.preempted_s)}


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, log-probability and (on request) the top alternatives."""

    token: str
    logprob: float
    #: ``[(text, logprob), ...]`` best first, when top-k was asked for
    top: tuple[tuple[str, float], ...] = ()
    #: "thinking" or "answer"
    phase: str = "answer"

    def to_openai(self) -> dict:
        return {
            "token": self.token,
            "logprob": self.logprob,
            "bytes": list(self.token.encode("utf-8")),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))} for t, lp in self.top],
        }


@dataclass
class Generation:
    """One sample: thinking, answer, accounting."""

    thinking: str
    answer: str
    usage: Usage
    thinking_report: ThinkingReport
    timings: Timings
    finish_reason: FinishReason = "stop"
    answer_source: AnswerSource = "answer"
    #: per-token log-probabilities of generated tokens (thinking and answer), where the engine gives them
    logprobs: list[TokenLogprob] | None = None
    #: tool calls made inside the thinking (name, arguments, seconds, cached, error)
    tools: list[dict] = field(default_factory=list)
    #: the sequence was stopped early by a strategy (low confidence) rather than finishing
    early_stopped: bool = False
    #: the thinking exactly as generated (white space kept), where the engine continued raw text: a probed
    #: trace resumes from it (:mod:`ponder.strategies.probe`)
    raw_thinking: str | None = field(default=None, repr=False)

    def answer_logprobs(self) -> list[TokenLogprob]:
        return [t for t in self.logprobs or [] if t.phase == "answer"]


class CancelToken:
    """Set by whoever wants a generation to stop (a disconnected client, a strategy, shutdown).

    Thread-safe.  Children fire with their parent (one sample of many can be
    stopped alone); callbacks run once, on the thread that cancels, so an
    async waiter should hop to its loop with ``call_soon_threadsafe``.
    """

    def __init__(self, parent: "CancelToken | None" = None) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list = []
        self._children: list["CancelToken"] = []
        self._parent = parent
        self.reason: str = "cancelled"
        if parent is not None:
            with parent._lock:
                parent._children.append(self)
            if parent.cancelled:
                self.cancel(parent.why())

    def cancel(self, reason: str = "cancelled") -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
            children = list(self._children)
        for cb in callbacks:
            try:
                cb()
            except Exception:  # a waiter's problem must not stop the others
                pass
        for c in children:
            c.cancel(reason)

    def on_cancel(self, callback) -> None:
        """Run ``callback()`` when this token fires (at once if it already has)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def remove_callback(self, callback) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def why(self) -> str:
        return self.reason

    def child(self) -> "CancelToken":
        """A token that fires with this one but can also be fired on its own (one sample of many)."""
        return CancelToken(self)


@dataclass(frozen=True)
class Deadline:
    """A point on the monotonic clock by which a request must be answered."""

    at: float

    @classmethod
    def after(cls, seconds: float | None) -> "Deadline | None":
        return None if seconds is None else cls(time.monotonic() + seconds)

    def left(self) -> float:
        return self.at - time.monotonic()

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at


def earliest(*deadlines: "Deadline | None") -> "Deadline | None":
    ds = [d for d in deadlines if d is not None]
    return min(ds, key=lambda d: d.at) if ds else None
