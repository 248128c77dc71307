"""Reading a chat stream's deltas: thinking and answer apart, tool-call fragments gathered, tokens counted.

Engines return thinking in a ``reasoning_content`` (or ``reasoning``) field, or
inline in ``content`` in the lane's reasoning format; :class:`DeltaParser`
handles both and never lets a half-written marker leak into the wrong channel.
"""

from __future__ import annotations

from typing import Any

from ponder.backends.chat import ChatPiece
from ponder.thinking.formats import get_format
from ponder.types import TokenLogprob

REASONING_FIELDS = ("reasoning_content", "reasoning")


class DeltaParser:
    """Turns the ``delta`` objects of a stream into thinking/answer pieces."""

    def __init__(self, reasoning_format: str = "think") -> None:
        self._splitter = get_format(reasoning_format).splitter()
        self.saw_reasoning_field = False
        #: deltas held back whole (a tag may be forming): their tokens ride on the next piece
        self._owed = 0
        #: structured tool calls by index ({"name", "arguments"}), rendered at the end
        self.tool_calls: dict[int, dict[str, str]] = {}
        self._call_tokens = 0

    def feed(self, delta: dict[str, Any], logprob: TokenLogprob | None = None) -> list[ChatPiece]:
        out: list[ChatPiece] = []
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            # structured calls stream in fragments (name first, arguments in pieces): gathered by index
            for c in calls:
                if not isinstance(c, dict):
                    continue
                slot = self.tool_calls.setdefault(int(c.get("index") or 0), {"name": "", "arguments": ""})
                fn = c.get("function") or {}
                if isinstance(fn.get("name"), str):
                    slot["name"] += fn["name"]
                if isinstance(fn.get("arguments"), str):
                    slot["arguments"] += fn["arguments"]
                self._call_tokens += 1
        for name in REASONING_FIELDS:
            r = delta.get(name)
            if r and isinstance(r, str):
                self.saw_reasoning_field = True
                out.append(ChatPiece("thinking", r, 1))
                break
        content = delta.get("content")
        if content and isinstance(content, str):
            if self.saw_reasoning_field:
                # the engine separates thinking itself: content is all answer
                out.append(ChatPiece("answer", content, 1, logprob))
            else:
                pieces = self._splitter.feed(content)
                for i, (kind, text) in enumerate(pieces):
                    out.append(ChatPiece(kind, text, (1 + self._owed) if i == 0 else 0, logprob if i == 0 else None))
                if pieces:
                    self._owed = 0
                else:
                    self._owed += 1
        return out

    def flush(self) -> list[ChatPiece]:
        pieces = self._splitter.flush()
        out = [ChatPiece(k, t, self._owed if i == 0 else 0) for i, (k, t) in enumerate(pieces)]
        if not out and self._owed:
            out = [ChatPiece("thinking" if self._splitter.in_thinking else "answer", "", self._owed)]
        self._owed = 0
        if self.tool_calls:
            # the upstream's calls, as the same text the embedded model writes (see ponder.tools.client)
            from ponder.tools.client import render_call

            text = "\n".join(render_call(c["name"], c["arguments"]) for _, c in sorted(self.tool_calls.items()))
            out.append(ChatPiece("answer", "\n" + text, self._call_tokens))
            self.tool_calls, self._call_tokens = {}, 0
        return out


def parse_message(message: dict[str, Any], reasoning_format: str = "think") -> tuple[str, str]:
    """``(thinking, answer)`` of a non-streamed ``choices[i].message``."""
    for name in REASONING_FIELDS:
        if message.get(name):
            return message[name], (message.get("content") or "").strip()
    return get_format(reasoning_format).split(message.get("content") or "")


def logprob_of(lp: Any) -> TokenLogprob | None:
    """The first token of an OpenAI ``choices[i].logprobs`` object."""
    if not isinstance(lp, dict):
        return None
    content = lp.get("content")
    if not content or not isinstance(content, list) or not isinstance(content[0], dict):
        return None
    t = content[0]
    try:
        top = tuple((str(x.get("token", "")), float(x.get("logprob"))) for x in t.get("top_logprobs") or [])
        return TokenLogprob(str(t.get("token", "")), float(t.get("logprob")), top)
    except (TypeError, ValueError):
        return None
