"""``POST /v1/chat/completions``: the chat API's edge.

Per request: read the body (bounded while reading) -> parse (strict, with
limits) -> authenticate -> translate into ponder's own request -> prepare
(plan, engine, context fit) -> key limits -> admit (capacity, shedding,
quotas) -> a :class:`~ponder.run.Run` owns the rest; this module only turns
its events into SSE chunks or one JSON body.

* A streamed response holds its headers until the first event (at most
  ``server.first_byte_wait_s``), so a request that fails at once gets a real
  status code; a failure after that ends the stream with an OpenAI error
  event and no ``[DONE]``.
* A client that disconnects cancels its run at once (the embedded engine
  frees the slot at the next step; an upstream connection is closed); what
  it had spent is still accounted.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import AsyncIterator

from fastapi.responses import Response
from starlette.requests import Request

from ponder.api.request import parse_body
from ponder.request import PonderRequest
from ponder.api.response import chunk, completion_body, finish_of, ponder_block
from ponder.outcome import ChoiceEnd, Delta, Ended, Outcome, SummaryEvent, answer_and_calls
from ponder.run import Run
from ponder.server.gateway import Gateway
from ponder.server.flow import next_event, reply, start
from ponder.server.http import header_seconds


def chat_route(gw: Gateway):
    async def chat_completions(request: Request) -> Response:
        return await handle(gw, request)
    return chat_completions


async def handle(gw: Gateway, request: Request) -> Response:
    server = gw.server
    holder: dict = {}

    async def parse(raw: bytes, principal, headers) -> PonderRequest:
        chat = parse_body(raw, max_bytes=server.max_body_bytes, max_depth=server.max_json_depth,
                          max_messages=server.max_messages, max_message_chars=server.max_message_chars)
        holder["include_usage"] = chat.include_usage
        cap = header_seconds(headers.get("x-ponder-deadline-s"), "x-ponder-deadline-s")
        return chat.to_ponder(deadline_cap_s=cap)

    started = await start(gw, request, "chatcmpl-" + uuid.uuid4().hex[:24], parse)
    run = started.run

    def stream(first):
        return ChatStream(run, gw.service.cached_backend(run.plan.lane), server.progress_interval_s,
                          holder["include_usage"]).chunks(first)

    return await reply(gw, request, started, body=completion_body, error=lambda e: e.to_openai(), stream=stream)


class ChatStream:
    """A run's events as ``chat.completion.chunk`` SSE lines (progress chunks while thinking is hidden)."""

    def __init__(self, run: Run, backend, interval: float, include_usage: bool) -> None:
        self.run, self.interval, self.include_usage = run, interval, include_usage
        self.model = backend.info.model if backend else run.plan.lane.name
        self.show = run.plan.visibility == "visible"
        self.started: set[int] = set()
        self.last_progress = time.perf_counter()

    def emit(self, index: int | None = None, finish_reason: str | None = None, logprobs=None, ponder=None,
             **fields) -> bytes:
        if index is None:  # the usage chunk: no choices
            body = chunk(self.run.id, self.run.created, self.model, usage=fields["usage"], ponder=ponder,
                         choices=False)
        else:
            if index not in self.started:
                self.started.add(index)
                fields = {"role": "assistant", **fields}
            body = chunk(self.run.id, self.run.created, self.model, index=index, delta=fields,
                         finish_reason=finish_reason, logprobs=logprobs, ponder=ponder)
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    def progress(self, index: int = 0) -> bytes:
        self.last_progress = time.perf_counter()
        return self.emit(index, ponder={"progress": {"thinking_tokens": self.run.thinking_tokens_now,
                                                     "elapsed_s": round(self.run.elapsed(), 3)}})

    async def chunks(self, first) -> AsyncIterator[bytes]:
        run, ended = self.run, False
        try:
            yield self.emit(0, content="")
            pending = [first] if first is not None else []
            while True:
                ev = await next_event(run, pending, self.interval)
                if ev is None:
                    if not self.show:
                        yield self.progress()
                    continue
                if isinstance(ev, Ended):
                    ended = True
                    for line in self.end(ev.outcome):
                        yield line
                    return
                line = self.event(ev)
                if line:
                    yield line
        finally:
            if not ended:
                # the client went away (or the server is stopping): stop the work now, it is still accounted
                run.cancel.cancel()

    def event(self, ev) -> bytes:
        if isinstance(ev, Delta) and ev.kind == "thinking":
            if self.show:
                return self.emit(ev.index, reasoning_content=ev.text)
            if time.perf_counter() - self.last_progress >= self.interval:
                return self.progress(ev.index)
            return b""
        if isinstance(ev, Delta):
            lp = {"content": [t.to_openai() for t in ev.logprobs], "refusal": None} \
                if self.run.plan.logprobs and ev.logprobs else None
            return self.emit(ev.index, content=ev.text, logprobs=lp)
        if isinstance(ev, SummaryEvent):
            return self.emit(ev.index, reasoning_content=ev.text + "\n",
                             ponder={"summary": {"text": ev.text, "thinking_tokens": ev.thinking_tokens}})
        if isinstance(ev, ChoiceEnd):
            calls = answer_and_calls(ev.result, self.run.plan, f"{self.run.id}/{ev.index}")[1]
            out = self.emit(ev.index, tool_calls=[{"index": k, **c} for k, c in enumerate(calls)]) if calls else b""
            return out + self.emit(ev.index, finish_reason="tool_calls" if calls
                                   else finish_of(ev.result.chosen.finish_reason))
        return b""

    def end(self, outcome: Outcome) -> list[bytes]:
        if outcome.error is not None:
            # a failure after the stream started: an error event, never a fake success
            return [b"data: " + json.dumps(outcome.error.to_openai(), separators=(",", ":")).encode() + b"\n\n"]
        out = [self.emit(usage=outcome.usage, ponder=ponder_block(outcome))] if self.include_usage else []
        return out + [b"data: [DONE]\n\n"]
