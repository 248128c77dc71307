"""Reasoning formats: how a model marks its thinking, as named, registered parsers and writers.

Like vLLM's reasoning parsers, each format is registered by name and knows
how to split a whole text into ``(thinking, answer)``, how to split a stream
of deltas without leaking a half-written marker into the wrong channel, and
how to write thinking back (a replayed turn, a prompt that opens the
thinking, the text that closes a cut one).  Nothing else in ponder spells a
format's markers: it asks :func:`get_format`.

* ``think`` — ``<think> … </think>`` then the answer: DeepSeek-R1 and its
  distills, Qwen3, QwQ, and the tiny models ponder asks to think in tags.
* ``harmony`` — OpenAI's gpt-oss channels: ``<|channel|>analysis<|message|>
  … <|end|>`` for thinking (``commentary`` too), then ``<|start|>assistant
  <|channel|>final<|message|> … <|return|>`` for the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Protocol


class Splitter(Protocol):
    """Incremental split of streamed text: ``feed`` returns ``[("thinking"|"answer", text), ...]``."""

    @property
    def in_thinking(self) -> bool: ...

    def feed(self, delta: str) -> list[tuple[str, str]]: ...

    def flush(self) -> list[tuple[str, str]]: ...


class ReasoningFormat:
    """A registered format (subclasses set the class attributes and implement the parsers)."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: opens the thinking / closes it (what a model writes)
    open: ClassVar[str]
    close: ClassVar[str]

    def detect(self, chat_template: str) -> bool:
        """Does a model whose chat template is this text think natively in this format?"""
        return self.open in chat_template

    def split(self, text: str) -> tuple[str, str]:
        """``(thinking, answer)`` of a whole output."""
        s = self.splitter()
        pieces = s.feed(text) + s.flush()
        thinking = "".join(t for k, t in pieces if k == "thinking")
        answer = "".join(t for k, t in pieces if k == "answer")
        return thinking.strip(), answer.strip()

    def splitter(self, started_in_thinking: bool = False) -> Splitter:
        raise NotImplementedError

    def block(self, thinking: str) -> str:
        """A complete thinking block (a replayed assistant turn, thinking handed to the model)."""
        return f"{self.open}\n{thinking.strip()}{self.close_text}"

    @property
    def close_text(self) -> str:
        """Written to close a thinking the budget cut (the answer follows)."""
        return f"\n{self.close}\n\n"

    @property
    def open_text(self) -> str:
        """Written after the assistant turn's start to open the thinking."""
        return f"{self.open}\n"

    @property
    def empty_block(self) -> str:
        """An empty thinking: what a native reasoner is given when thinking is off."""
        return f"{self.open}\n\n{self.close}\n\n"

    def opened(self, prompt: str) -> bool:
        """Does this rendered prompt already open the thinking (templates that start it for the model)?"""
        return prompt.rstrip().endswith(self.open)


FORMATS: dict[str, ReasoningFormat] = {}


def register_format(cls: type[ReasoningFormat]) -> type[ReasoningFormat]:
    if cls.name in FORMATS:
        raise ValueError(f"reasoning format {cls.name!r} registered twice")
    FORMATS[cls.name] = cls()
    return cls


def get_format(name: str = "think") -> ReasoningFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown reasoning format {name!r}; known: {', '.join(sorted(FORMATS))}") from None


def detect_format(chat_template: str) -> ReasoningFormat | None:
    """The format a chat template thinks in natively, if any."""
    return next((f for f in FORMATS.values() if f.detect(chat_template)), None)


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


# -- think tags --------------------------------------------------------------------------------


@register_format
class ThinkTags(ReasoningFormat):
    name = "think"
    description = "<think> … </think> then the answer (DeepSeek-R1 and distills, Qwen3, QwQ, prompted models)"
    open = "<think>"
    close = "</think>"

    def splitter(self, started_in_thinking: bool = False) -> "TagSplitter":
        return TagSplitter(self.open, self.close, started_in_thinking=started_in_thinking)

    def split(self, text: str) -> tuple[str, str]:
        # the R1-distill case: the template opened <think>, so the output holds only "... </think> answer"
        if self.close in text:
            head, _, tail = text.partition(self.close)
            thinking = head.split(self.open, 1)[1] if self.open in head else head
            return thinking.strip(), tail.strip()
        if self.open in text:
            before, _, after = text.partition(self.open)
            # unclosed: everything after the tag is (truncated) thinking
            return after.strip(), before.strip()
        return "", text.strip()


@dataclass
class TagSplitter:
    """Streamed ``OPEN thinking CLOSE answer``, holding back just enough to never leak a partial tag."""

    open: str
    close: str
    started_in_thinking: bool = False
    _state: str = field(default="start")
    _buf: str = ""

    def __post_init__(self) -> None:
        if self.started_in_thinking:
            self._state = "thinking"

    @property
    def in_thinking(self) -> bool:
        return self._state == "thinking"

    def feed(self, delta: str) -> list[tuple[str, str]]:
        self._buf += delta
        out: list[tuple[str, str]] = []
        while self._buf:
            if self._state == "start":
                stripped = self._buf.lstrip()
                if not stripped:
                    return out
                if stripped.startswith(self.open):
                    self._buf, self._state = stripped[len(self.open):], "thinking"
                    continue
                if self.open.startswith(stripped):
                    return out  # could still become the open tag
                self._state = "answer"
                continue
            if self._state == "thinking":
                idx = self._buf.find(self.close)
                if idx >= 0:
                    if idx:
                        out.append(("thinking", self._buf[:idx]))
                    self._buf, self._state = self._buf[idx + len(self.close):], "answer_start"
                    continue
                emit = self._buf[: len(self._buf) - partial_suffix(self._buf, self.close)]
                if emit:
                    out.append(("thinking", emit))
                self._buf = self._buf[len(emit):]
                return out
            if self._state == "answer_start":
                stripped = self._buf.lstrip()
                if not stripped:
                    self._buf = ""
                    return out
                self._buf, self._state = stripped, "answer"
                continue
            out.append(("answer", self._buf))
            self._buf = ""
        return out

    def flush(self) -> list[tuple[str, str]]:
        """End of stream: whatever is held back goes to the current channel."""
        if not self._buf:
            return []
        kind = "thinking" if self._state == "thinking" else "answer"
        text, self._buf = self._buf, ""
        return [(kind, text)] if text.strip() or kind == "answer" else []


# -- gpt-oss harmony channels --------------------------------------------------------------------

_HEADER = re.compile(r"(?:<\|start\|>[^<]*)?<\|channel\|>(?P<channel>[A-Za-z_]+)[^<]*(?:<\|constrain\|>[^<]*)?"
                     r"<\|message\|>")
_ENDS = ("<|end|>", "<|return|>", "<|call|>")
#: the longest header worth waiting for before deciding text is not one
_MAX_HEADER = 160


@register_format
class Harmony(ReasoningFormat):
    name = "harmony"
    description = "gpt-oss channels: analysis (and commentary) is thinking, final is the answer"
    open = "<|channel|>analysis<|message|>"
    close = "<|end|>"
    #: what starts the answer after a closed thinking
    final = "<|start|>assistant<|channel|>final<|message|>"

    def detect(self, chat_template: str) -> bool:
        return "<|channel|>" in chat_template

    def splitter(self, started_in_thinking: bool = False) -> "ChannelSplitter":
        return ChannelSplitter(started_in_thinking)

    def block(self, thinking: str) -> str:
        return f"{self.open}{thinking.strip()}{self.close}{self.final}"

    @property
    def close_text(self) -> str:
        return f"{self.close}{self.final}"

    @property
    def open_text(self) -> str:
        return self.open

    @property
    def empty_block(self) -> str:
        return f"{self.open}{self.close}{self.final}"

    def opened(self, prompt: str) -> bool:
        return prompt.rstrip().endswith(self.open)


class ChannelSplitter:
    """Streamed harmony messages: each ``header … end`` goes to its channel; text outside any header is answer."""

    def __init__(self, started_in_thinking: bool = False) -> None:
        self._channel: str | None = "analysis" if started_in_thinking else None
        self._buf = ""

    @property
    def in_thinking(self) -> bool:
        return self._channel is not None and self._channel != "final"

    def _kind(self) -> str:
        return "answer" if self._channel in (None, "final") else "thinking"

    def feed(self, delta: str) -> list[tuple[str, str]]:
        self._buf += delta
        out: list[tuple[str, str]] = []
        while self._buf:
            if self._channel is None and self._between():
                return out
            if self._channel is None:
                continue
            hit = min(((i, e) for e in _ENDS if (i := self._buf.find(e)) >= 0), default=None)
            if hit is not None:
                i, end = hit
                if i:
                    out.append((self._kind(), self._buf[:i]))
                self._buf, self._channel = self._buf[i + len(end):], None
                continue
            keep = max(partial_suffix(self._buf, e) for e in _ENDS)
            emit = self._buf[: len(self._buf) - keep]
            if emit:
                out.append((self._kind(), emit))
            self._buf = self._buf[len(emit):]
            return out
        return out

    def _between(self) -> bool:
        """Between messages: read a header (True: wait for more text); text without one is answer."""
        stripped = self._buf.lstrip()
        m = _HEADER.match(stripped)
        if m:
            self._channel, self._buf = m.group("channel"), stripped[m.end():]
            return False
        if (stripped.startswith("<|") or "<|".startswith(stripped)) and len(stripped) < _MAX_HEADER \
                and "<|message|>" not in stripped:
            return True  # a header may be forming
        if not stripped:
            self._buf = ""
            return True
        self._channel, self._buf = "final", stripped
        return False

    def flush(self) -> list[tuple[str, str]]:
        if not self._buf:
            return []
        text, self._buf = self._buf, ""
        if self._channel is None:
            text = text.strip()
            return [("answer", text)] if text and not text.startswith("<|") else []
        return [(self._kind(), text)]
