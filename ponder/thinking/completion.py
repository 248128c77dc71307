"""A raw continuation with stop strings and a token limit: the controller of step-level search."""

from __future__ import annotations

from typing import Callable

from ponder.thinking.decisions import CONTINUE, STOP, AnswerDelta, Decision, Event, earliest
from ponder.thinking.formats import partial_suffix
from ponder.types import TokenLogprob


class CompletionMachine:
    """A raw continuation with stop strings and a token limit (step-level search, no thinking rules)."""

    phase = "answer"

    def __init__(self, max_tokens: int, stop=(), on_event: Callable[[Event], None] | None = None) -> None:
        self.max_tokens = max_tokens
        self.stops = tuple(s for s in stop if s)
        self.on_event = on_event or (lambda e: None)
        self.text = ""
        self.out = ""
        self.generated = 0
        self.stopped_by: str | None = None
        self.finish: str | None = None
        self.logprobs: list[TokenLogprob] = []
        self._pending = ""

    def feed(self, text: str, tokens: int = 1, logprob: TokenLogprob | None = None) -> Decision:
        if self.finish is not None:
            return STOP
        self.generated += tokens
        self.text += text
        if logprob is not None:
            self.logprobs.append(logprob)
        self._pending += text
        hit = earliest(self._pending, self.stops)
        if hit is not None:
            i, marker = hit
            self._out(self._pending[:i])
            self._pending = ""
            self.stopped_by = marker
            self.finish = "stop"
            return STOP
        hold = max((partial_suffix(self._pending, s) for s in self.stops), default=0)
        self._out(self._pending[: len(self._pending) - hold])
        self._pending = self._pending[len(self._pending) - hold:]
        if self.generated >= self.max_tokens:
            return self._end("length")
        return CONTINUE

    def _out(self, text: str) -> None:
        if text:
            self.out += text
            self.on_event(AnswerDelta(text))

    def _end(self, reason: str) -> Decision:
        self._out(self._pending)
        self._pending = ""
        self.finish = reason
        return STOP

    def end_of_turn(self) -> Decision:
        return self._end("stop")

    def interrupt(self, reason: str) -> Decision:
        return self._end("cancelled" if reason == "cancelled" else "length")
