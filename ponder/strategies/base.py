"""One signature for every test-time strategy.

A strategy gets a :class:`StrategyRequest` (the conversation, the thinking
budget, sampling settings, how to extract answers), a backend and its own
typed parameters, and returns a :class:`StrategyResult`: the chosen answer,
every sample it drew, the total usage of all of them, and a short decision
trace saying why this answer won.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Protocol, Sequence

from ponder.backends.base import Backend
from ponder.thinking.control import Event, LoopGuardSettings
from ponder.types import CancelToken, Generation, Message, Sampling, ThinkingBudget, Usage


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

    @property
    def n_samples(self) -> int:
        return len(self.samples)


class Strategy(Protocol):
    """What every strategy module provides."""

    name: ClassVar[str]
    Params: ClassVar[type]

    def run(self, request: StrategyRequest, backend: Backend, params: Any) -> StrategyResult: ...

    def stream(self, request: StrategyRequest, backend: Backend, params: Any) -> Iterator[Event]:
        """Optional: token events of a single streamed sample."""
        ...


def total_usage(generations: Sequence[Generation]) -> Usage:
    usage = Usage()
    for g in generations:
        usage = usage + g.usage
    return usage
