"""The vocabulary between a sequence's controller and the engine driving it: events out, decisions back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Union

from ponder.thinking.loop_guard import LoopGuard
from ponder.types import TokenLogprob


@dataclass(frozen=True)
class LoopGuardSettings:
    enabled: bool = True
    max_period: int = 64
    repeats: int = 3
    min_span: int = 24

    def make(self) -> LoopGuard:
        return LoopGuard(self.max_period, self.repeats, self.min_span, self.enabled)


@dataclass(frozen=True)
class ThinkingDelta:
    text: str
    #: thinking tokens used so far (including this delta)
    used: int


@dataclass(frozen=True)
class AnswerDelta:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


Event = Union[ThinkingDelta, AnswerDelta]


@dataclass(frozen=True)
class Decision:
    """What the driver must do after a token.

    ``continue``: sample the next token.  ``rewrite``: the sequence's text
    becomes ``text[:keep] + append`` (roll back, prefill ``append``), then
    continue.  ``cut``: (chat drivers) stop reading the stream now; thinking is
    over.  ``tool``: run the tool call in ``payload``, then hand its result
    to :meth:`ThinkingMachine.tool_result`.  ``stop``: the sample is done.
    """

    kind: Literal["continue", "rewrite", "cut", "tool", "stop"]
    keep: int = 0
    append: str = ""
    payload: str = ""


CONTINUE = Decision("continue")
STOP = Decision("stop")
Monitor = Callable[[TokenLogprob], bool]


def earliest(text: str, markers) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for m in markers:
        if not m:
            continue
        i = text.find(m)
        if i >= 0 and (best is None or i < best[0] or (i == best[0] and len(m) > len(best[1]))):
            best = (i, m)
    return best
