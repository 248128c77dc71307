"""The plain data that flows through ponder.

Everything here is a small dataclass with no behaviour beyond arithmetic on
usage.  Requests are immutable (frozen) so per-request settings can never leak
into another request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, asdict
from typing import Literal

Role = Literal["system", "user", "assistant", "tool", "developer"]
StopReason = Literal["end", "budget", "repetition", "none", "cancelled", "length"]


@dataclass(frozen=True)
class Message:
    """One chat turn.  Multi-turn conversations stay a list of these."""

    role: str
    content: str


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
    logprobs: bool = False

    def with_seed(self, seed: int | None) -> "Sampling":
        return Sampling(**{**asdict(self), "seed": seed, "stop": self.stop})


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
    """Token accounting.  ``completion = thinking + answer``."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    thinking_tokens: int = 0
    answer_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return self.thinking_tokens + self.answer_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.cached_prompt_tokens + other.cached_prompt_tokens,
            self.thinking_tokens + other.thinking_tokens,
            self.answer_tokens + other.answer_tokens,
        )

    def to_openai(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_prompt_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.thinking_tokens},
        }


@dataclass
class ThinkingReport:
    """What happened to the thinking of one generation."""

    budget: int
    min: int = 0
    used: int = 0
    truncated: bool = False
    #: why thinking ended: the model ended it, the budget cut it, the loop
    #: guard stopped a repetition, thinking was off ("none"), or cancelled.
    stopped: StopReason = "none"
    #: how many continuation cues ("Wait") were injected to reach ``min``.
    continuations: int = 0
    effort: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Timings:
    queue_s: float = 0.0
    ttft_s: float | None = None
    time_to_answer_s: float | None = None
    total_s: float = 0.0

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class Generation:
    """One sample: thinking, answer, accounting."""

    thinking: str
    answer: str
    usage: Usage
    thinking_report: ThinkingReport
    timings: Timings
    finish_reason: Literal["stop", "length", "cancelled"] = "stop"
    #: mean log-probability of answer tokens, when the backend gives them
    answer_logprob: float | None = None


class CancelToken:
    """Set by whoever wants a generation to stop (a disconnected client)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class Piece:
    """A piece of generated text as a backend streams it.

    ``tokens`` is how many model tokens the piece stands for (usually 1).
    """

    text: str
    tokens: int = 1
    logprob: float | None = None


@dataclass
class CompletionStats:
    """What a backend reports after one raw completion call."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    #: the stop string that ended the call, if any
    stopped_by: str | None = None
    extra: dict = field(default_factory=dict)
