"""Anthropic Messages output: the ``message`` object and the streamed events the anthropic SDK reads.

Content blocks, in order: ``thinking`` (the trace, or its summary in
summary mode, with a ``signature``), ``text`` (the answer) and one
``tool_use`` per call of the client's functions.  ``stop_reason`` is
``tool_use``, ``max_tokens`` (the answer hit its room), or ``end_turn``.
The signature is a digest of the thinking: ponder drops thinking blocks that
come back in later turns, so nothing is verified against it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Iterator

from ponder.api.response import ponder_block
from ponder.outcome import ChoiceEnd, Delta, Outcome, answer_and_calls


def signature(thinking: str) -> str:
    return base64.b64encode(hashlib.sha256(thinking.encode("utf-8")).digest()).decode()


def tool_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def usage_of(outcome: Outcome, *, output_only: bool = False) -> dict:
    u = outcome.usage
    if output_only:
        return {"output_tokens": u.completion_tokens}
    return {"input_tokens": u.input_tokens - u.cached_prompt_tokens, "output_tokens": u.completion_tokens,
            "cache_read_input_tokens": u.cached_prompt_tokens, "cache_creation_input_tokens": 0}


def stop_reason(outcome: Outcome, calls: list) -> str:
    if calls:
        return "tool_use"
    if outcome.results and outcome.results[0].chosen.finish_reason in ("length", "deadline"):
        return "max_tokens"
    return "end_turn"


def blocks_of(outcome: Outcome) -> tuple[list[dict], list[dict]]:
    """(content blocks, the calls among them) of an outcome."""
    if not outcome.results:
        return [], []
    r = outcome.results[0]
    content, calls = answer_and_calls(r, outcome.plan, outcome.id)
    thinking = r.extra.get("summary") if outcome.plan.visibility == "summary" else \
        (r.chosen.thinking if outcome.plan.visibility == "visible" else "")
    blocks: list[dict] = []
    if thinking:
        blocks.append({"type": "thinking", "thinking": thinking, "signature": signature(thinking)})
    if content:
        blocks.append({"type": "text", "text": content})
    for c in calls:
        blocks.append({"type": "tool_use", "id": tool_id(c["id"]), "name": c["function"]["name"],
                       "input": _arguments(c["function"]["arguments"])})
    return blocks, calls


def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return {"_raw": text}


def message_body(outcome: Outcome) -> dict:
    blocks, calls = blocks_of(outcome)
    return {"id": outcome.id, "type": "message", "role": "assistant", "model": outcome.model, "content": blocks,
            "stop_reason": stop_reason(outcome, calls), "stop_sequence": None, "usage": usage_of(outcome),
            "ponder": ponder_block(outcome)}


def sse(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: ".encode() + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


class MessagesStream:
    """A run's events as Anthropic stream events: one content block open at a time, in order."""

    def __init__(self, rid: str, model: str, plan: Any) -> None:
        self.rid, self.model, self.plan = rid, model, plan
        self.index = -1
        self.open: str | None = None
        self.thinking = ""

    def start(self) -> list[bytes]:
        msg = {"id": self.rid, "type": "message", "role": "assistant", "model": self.model, "content": [],
               "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": self.plan.prompt_tokens or 0, "output_tokens": 0}}
        return [sse({"type": "message_start", "message": msg})]

    def on(self, ev: Any) -> Iterator[bytes]:
        if isinstance(ev, Delta) and ev.kind == "thinking":
            if self.plan.visibility != "visible":
                return
            yield from self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            self.thinking += ev.text
            yield self._delta({"type": "thinking_delta", "thinking": ev.text})
        elif isinstance(ev, Delta):
            yield from self._open("text", {"type": "text", "text": ""})
            yield self._delta({"type": "text_delta", "text": ev.text})
        elif isinstance(ev, ChoiceEnd):
            yield from self._close()
            for c in answer_and_calls(ev.result, self.plan, self.rid)[1]:
                yield from self._open("tool_use", {"type": "tool_use", "id": tool_id(c["id"]),
                                                   "name": c["function"]["name"], "input": {}})
                yield self._delta({"type": "input_json_delta", "partial_json": c["function"]["arguments"]})
                yield from self._close()

    def end(self, outcome: Outcome) -> Iterator[bytes]:
        yield from self._close()
        if outcome.error is not None:
            yield sse(outcome.error.to_anthropic())
            return
        _, calls = blocks_of(outcome)
        yield sse({"type": "message_delta", "delta": {"stop_reason": stop_reason(outcome, calls),
                                                      "stop_sequence": None},
                   "usage": usage_of(outcome, output_only=True)})
        yield sse({"type": "message_stop"})

    def _open(self, kind: str, block: dict) -> Iterator[bytes]:
        if self.open == kind and kind != "tool_use":
            return
        yield from self._close()
        self.index += 1
        self.open = kind
        yield sse({"type": "content_block_start", "index": self.index, "content_block": block})

    def _delta(self, delta: dict) -> bytes:
        return sse({"type": "content_block_delta", "index": self.index, "delta": delta})

    def _close(self) -> Iterator[bytes]:
        if self.open is None:
            return
        if self.open == "thinking":
            yield self._delta({"type": "signature_delta", "signature": signature(self.thinking.strip())})
        yield sse({"type": "content_block_stop", "index": self.index})
        self.open = None
