"""A scripted engine for unit tests of control logic.

It never runs a model: each call pops the next scripted continuation (or asks
a callable) and streams it word by word, honouring ``max_tokens``, stop
strings and cancellation exactly like a real engine would.  It is not a
serving backend and the CLI and gateway refuse to run on it.
"""

from __future__ import annotations

import re
import threading
from typing import Callable, Iterator, Sequence

from ponder.backends.base import Backend, BackendInfo, ChatPiece
from ponder.thinking.split import ThinkSplitter
from ponder.types import CompletionStats, Message, Piece

_UNIT = re.compile(r"\s*\S+|\s+")

Responder = Callable[[str], str]


def units(text: str) -> list[str]:
    """The scripted engine's 'tokens': a word with its leading white space."""
    return _UNIT.findall(text)


class ScriptedBackend(Backend):
    """Replays ``responses`` in order (the last one repeats), or calls ``responder``."""

    def __init__(
        self,
        responses: Sequence[str] | Responder,
        *,
        native_reasoning: bool = False,
        text_completion: bool = True,
        reasoning_field: bool = False,
        logprobs: dict[str, float] | None = None,
    ) -> None:
        self.info = BackendInfo(
            name="scripted", model="scripted", text_completion=text_completion,
            native_reasoning=native_reasoning, logprobs=logprobs is not None, context_length=1 << 20,
            prefix_reuse=True, concurrent=True,
        )
        self._responder = responses if callable(responses) else None
        self._responses = list(responses) if not callable(responses) else []
        self._lock = threading.Lock()
        self._reasoning_field = reasoning_field
        self._logprobs = logprobs
        #: every prompt the engine saw, for assertions in tests
        self.prompts: list[str] = []

    def _next(self, prompt: str) -> str:
        with self._lock:
            self.prompts.append(prompt)
            if self._responder is not None:
                return self._responder(prompt)
            if len(self._responses) > 1:
                return self._responses.pop(0)
            return self._responses[0] if self._responses else ""

    def render_chat(self, messages: Sequence[Message]) -> str:
        return "".join(f"<|{m.role}|>{m.content}\n" for m in messages) + "<|assistant|>"

    def count_tokens(self, text: str) -> int:
        return len(units(text))

    def stream_text(self, prompt, *, max_tokens, sampling, stop=(), cancel=None, stats=None) -> Iterator[Piece]:
        stats = stats if stats is not None else CompletionStats()
        stats.prompt_tokens = self.count_tokens(prompt)
        text = self._next(prompt)
        out = ""
        n = 0
        stats.finish_reason = "stop"
        try:
            for unit in units(text):
                if cancel is not None and cancel.cancelled:
                    stats.finish_reason = "cancelled"
                    return
                if n >= max_tokens:
                    stats.finish_reason = "length"
                    return
                n += 1
                stats.completion_tokens = n
                candidate = out + unit
                hit = next((s for s in stop if s and s in candidate), None)
                if hit is not None:
                    head = candidate[: candidate.index(hit)]
                    if len(head) > len(out):
                        yield Piece(head[len(out):], 1)
                    stats.stopped_by = hit
                    return
                out = candidate
                yield Piece(unit, 1)
        finally:
            stats.completion_tokens = n

    def stream_chat(self, messages, *, max_tokens, sampling, thinking, cancel=None, stats=None) -> Iterator[ChatPiece]:
        stats = stats if stats is not None else CompletionStats()
        prompt = self.render_chat(messages)
        stats.prompt_tokens = self.count_tokens(prompt)
        text = self._next(prompt)
        splitter = ThinkSplitter()
        n = 0
        n_thinking = 0
        stats.finish_reason = "stop"
        try:
            for unit in units(text):
                if cancel is not None and cancel.cancelled:
                    return
                if n >= max_tokens:
                    stats.finish_reason = "length"
                    return
                n += 1
                stats.completion_tokens = n
                for kind, piece in splitter.feed(unit):
                    if kind == "thinking":
                        n_thinking += 1
                    yield ChatPiece(kind, piece, 1)
            for kind, piece in splitter.flush():
                yield ChatPiece(kind, piece, 1)
        finally:
            stats.completion_tokens = n
            if self._reasoning_field:
                stats.extra["reasoning_tokens"] = n_thinking

    def token_logprobs(self, prompt, candidates):
        if self._logprobs is None:
            return None
        self.prompts.append(prompt)
        return {c: self._logprobs.get(c, -30.0) for c in candidates}
