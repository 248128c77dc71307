"""Responses API output: the ``response`` object and the streamed events the SDK's ``responses.stream()`` reads.

Output items, in order: a ``reasoning`` item when the model thought (its
``summary`` in summary mode, its ``content`` as ``reasoning_text`` when
thinking is visible, neither when hidden), a ``message`` with the answer as
``output_text``, and a ``function_call`` per call of the client's functions.
Item ids derive from the response id, so the streamed items and the final
``response.completed`` name them alike.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from ponder.api.response import ponder_block
from ponder.outcome import ChoiceEnd, Delta, Outcome, SummaryEvent, answer_and_calls


def usage_of(outcome: Outcome) -> dict:
    u = outcome.usage
    return {"input_tokens": u.input_tokens, "input_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
            "output_tokens": u.completion_tokens, "output_tokens_details": {"reasoning_tokens": u.thinking_tokens},
            "total_tokens": u.total_tokens}


def ids(response_id: str) -> tuple[str, str, str]:
    """(reasoning item id, message item id, function call id prefix) of a response."""
    base = response_id.removeprefix("resp_")
    return f"rs_{base}", f"msg_{base}", f"fc_{base}"


def skeleton(response_id: str, created: int, model: str, echo: dict, status: str = "in_progress") -> dict:
    return {"id": response_id, "object": "response", "created_at": created, "status": status, "error": None,
            "incomplete_details": None, "model": model, "output": [], "usage": None, **echo}


def reasoning_item(rid: str, thinking: str, summary: str | None, visible: bool) -> dict:
    item: dict[str, Any] = {"type": "reasoning", "id": ids(rid)[0], "status": "completed",
                            "summary": [{"type": "summary_text", "text": summary}] if summary else []}
    if visible and thinking:
        item["content"] = [{"type": "reasoning_text", "text": thinking}]
    return item


def message_item(rid: str, text: str) -> dict:
    return {"type": "message", "id": ids(rid)[1], "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def call_items(rid: str, calls: list[dict]) -> list[dict]:
    prefix = ids(rid)[2]
    return [{"type": "function_call", "id": f"{prefix}_{k}", "call_id": c["id"], "name": c["function"]["name"],
             "arguments": c["function"]["arguments"], "status": "completed"} for k, c in enumerate(calls)]


def output_of(outcome: Outcome) -> list[dict]:
    if not outcome.results:
        return []
    r = outcome.results[0]
    content, calls = answer_and_calls(r, outcome.plan, outcome.id)
    out = []
    summary = r.extra.get("summary")
    if r.chosen.thinking or summary:
        out.append(reasoning_item(outcome.id, r.chosen.thinking, summary, outcome.plan.visibility == "visible"))
    if content:
        out.append(message_item(outcome.id, content))
    return out + call_items(outcome.id, calls)


def response_body(outcome: Outcome, echo: dict) -> dict:
    """The finished ``response`` object (``echo``: the request's settings a response repeats)."""
    body = skeleton(outcome.id, outcome.created, outcome.model, echo, status="completed")
    body["output"] = output_of(outcome)
    if outcome.results and outcome.results[0].chosen.finish_reason in ("length", "deadline"):
        body["status"] = "incomplete"
        body["incomplete_details"] = {"reason": "max_output_tokens"}
    body["usage"] = usage_of(outcome)
    body["ponder"] = ponder_block(outcome)
    return body


def sse(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: ".encode() + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


class ResponsesStream:
    """A run's events as Responses stream events, numbered, items opened and closed in order."""

    def __init__(self, rid: str, created: int, model: str, echo: dict, plan: Any) -> None:
        self.rid, self.created, self.model, self.echo, self.plan = rid, created, model, echo, plan
        self.visible = plan.visibility == "visible"
        self.seq = 0
        self.index = -1
        #: the item open now: ("reasoning" | "message", its dict)
        self.open: tuple[str, dict] | None = None
        self.thinking = ""
        self.summaries: list[str] = []
        self.text = ""

    def event(self, type_: str, **fields) -> bytes:
        ev = {"type": type_, "sequence_number": self.seq, **fields}
        self.seq += 1
        return sse(ev)

    def start(self) -> list[bytes]:
        sk = skeleton(self.rid, self.created, self.model, self.echo)
        return [self.event("response.created", response=sk), self.event("response.in_progress", response=sk)]

    def on(self, ev: Any) -> Iterator[bytes]:
        if isinstance(ev, Delta) and ev.kind == "thinking":
            yield from self._reasoning()
            self.thinking += ev.text
            if self.visible:
                yield self.event("response.reasoning_text.delta", item_id=ids(self.rid)[0],
                                 output_index=self.index, content_index=0, delta=ev.text)
        elif isinstance(ev, SummaryEvent):
            yield from self._reasoning()
            yield from self._summary(ev.text)
        elif isinstance(ev, Delta):
            yield from self._message()
            self.text += ev.text
            yield self.event("response.output_text.delta", item_id=ids(self.rid)[1], output_index=self.index,
                             content_index=0, delta=ev.text, logprobs=[])
        elif isinstance(ev, ChoiceEnd):
            if ev.result.extra.get("summary") and not self.summaries:
                yield from self._reasoning()
                yield from self._summary(ev.result.extra["summary"])
            yield from self._close()
            yield from self._calls(ev)

    def end(self, outcome: Outcome) -> Iterator[bytes]:
        yield from self._close()
        if outcome.error is not None:
            failed = skeleton(self.rid, self.created, self.model, self.echo, status="failed")
            failed["error"] = {"code": outcome.error.code or outcome.error.type, "message": outcome.error.message}
            yield self.event("response.failed", response=failed)
            return
        yield self.event("response.completed", response=response_body(outcome, self.echo))

    # -- items ---------------------------------------------------------------------------------
    def _reasoning(self) -> Iterator[bytes]:
        if self.open is not None and self.open[0] == "reasoning":
            return
        yield from self._close()
        self.index += 1
        item = {"type": "reasoning", "id": ids(self.rid)[0], "summary": []}
        self.open = ("reasoning", item)
        yield self.event("response.output_item.added", output_index=self.index, item=item)

    def _summary(self, text: str) -> Iterator[bytes]:
        k = len(self.summaries)
        self.summaries.append(text)
        where = {"item_id": ids(self.rid)[0], "output_index": self.index, "summary_index": k}
        yield self.event("response.reasoning_summary_part.added", **where, part={"type": "summary_text", "text": ""})
        yield self.event("response.reasoning_summary_text.delta", **where, delta=text)
        yield self.event("response.reasoning_summary_text.done", **where, text=text)
        yield self.event("response.reasoning_summary_part.done", **where, part={"type": "summary_text", "text": text})

    def _message(self) -> Iterator[bytes]:
        if self.open is not None and self.open[0] == "message":
            return
        yield from self._close()
        self.index += 1
        item = {"type": "message", "id": ids(self.rid)[1], "status": "in_progress", "role": "assistant",
                "content": []}
        self.open = ("message", item)
        yield self.event("response.output_item.added", output_index=self.index, item=item)
        yield self.event("response.content_part.added", item_id=item["id"], output_index=self.index,
                         content_index=0, part={"type": "output_text", "text": "", "annotations": []})

    def _close(self) -> Iterator[bytes]:
        if self.open is None:
            return
        kind, _ = self.open
        self.open = None
        if kind == "reasoning":
            if self.visible and self.thinking:
                yield self.event("response.reasoning_text.done", item_id=ids(self.rid)[0], output_index=self.index,
                                 content_index=0, text=self.thinking)
            summary = " ".join(self.summaries) or None
            item = reasoning_item(self.rid, self.thinking.strip(), summary, self.visible)
            if len(self.summaries) > 1:
                item["summary"] = [{"type": "summary_text", "text": s} for s in self.summaries]
        else:
            part = {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}
            where = {"item_id": ids(self.rid)[1], "output_index": self.index, "content_index": 0}
            yield self.event("response.output_text.done", **where, text=self.text, logprobs=[])
            yield self.event("response.content_part.done", **where, part=part)
            item = message_item(self.rid, self.text)
        yield self.event("response.output_item.done", output_index=self.index, item=item)

    def _calls(self, ev: ChoiceEnd) -> Iterator[bytes]:
        for item in call_items(self.rid, answer_and_calls(ev.result, self.plan, self.rid)[1]):
            self.index += 1
            added = {**item, "arguments": "", "status": "in_progress"}
            yield self.event("response.output_item.added", output_index=self.index, item=added)
            where = {"item_id": item["id"], "output_index": self.index}
            yield self.event("response.function_call_arguments.delta", **where, delta=item["arguments"])
            yield self.event("response.function_call_arguments.done", **where, arguments=item["arguments"])
            yield self.event("response.output_item.done", output_index=self.index, item=item)
