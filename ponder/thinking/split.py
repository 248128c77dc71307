"""Separate thinking from answer in model output.

Reasoning models write ``<think> ... </think>`` before the answer; engines
such as vLLM and SGLang may instead return thinking in a ``reasoning_content``
(or ``reasoning``) field.  :func:`split_thinking` handles whole texts and
:class:`ThinkSplitter` handles a stream of deltas, holding back just enough
characters to never leak a partial tag into the wrong channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OPEN = "<think>"
CLOSE = "</think>"


def split_thinking(text: str) -> tuple[str, str]:
    """Return ``(thinking, answer)`` from text that may contain think tags.

    Handles the R1-distill case where the template already opened ``<think>``
    so the output holds only ``... </think> answer``.
    """
    if CLOSE in text:
        head, _, tail = text.partition(CLOSE)
        thinking = head.split(OPEN, 1)[1] if OPEN in head else head
        return thinking.strip(), tail.strip()
    if OPEN in text:
        before, _, after = text.partition(OPEN)
        # unclosed: everything after the tag is (truncated) thinking
        return after.strip(), before.strip()
    return "", text.strip()


@dataclass
class ThinkSplitter:
    """Incremental version of :func:`split_thinking` for streamed content.

    ``feed(delta)`` returns a list of ``("thinking"|"answer", text)`` pieces.
    ``started_in_thinking`` is for templates that open the tag in the prompt.
    """

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
                if stripped.startswith(OPEN):
                    self._buf = stripped[len(OPEN) :]
                    self._state = "thinking"
                    continue
                if OPEN.startswith(stripped):
                    return out  # could still become <think>
                self._state = "answer"
                continue
            if self._state == "thinking":
                idx = self._buf.find(CLOSE)
                if idx >= 0:
                    if idx:
                        out.append(("thinking", self._buf[:idx]))
                    self._buf = self._buf[idx + len(CLOSE) :]
                    self._state = "answer_start"
                    continue
                keep = partial_suffix(self._buf, CLOSE)
                emit = self._buf[: len(self._buf) - keep]
                if emit:
                    out.append(("thinking", emit))
                self._buf = self._buf[len(emit) :]
                return out
            if self._state == "answer_start":
                stripped = self._buf.lstrip()
                if not stripped:
                    self._buf = ""
                    return out
                self._buf = stripped
                self._state = "answer"
                continue
            # answer
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


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0
