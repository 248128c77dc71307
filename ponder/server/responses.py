"""``POST /v1/responses``: the Responses API's edge (what the openai SDK's ``responses`` and agent SDKs speak).

The request is translated into ponder's own (:mod:`ponder.api.responses`)
and runs the way every request runs (:mod:`ponder.server.flow`): quotas,
ledger, metrics, cache, deadlines, strategies.  A stored response keeps the
conversation it ended for ``previous_response_id`` (in the state store, so
replicas share it); errors are OpenAI error bodies.
"""

from __future__ import annotations

import uuid

from fastapi.responses import JSONResponse, Response
from starlette.requests import Request

from ponder.api.responses import echo_of, parse_responses_body, to_ponder
from ponder.api.responses_out import ResponsesStream, response_body
from ponder.conversations import ConversationStore
from ponder.outcome import Ended, Outcome, answer_and_calls
from ponder.request import PonderRequest
from ponder.server.flow import failed_before_content, first_event, next_event, outcome_of, start
from ponder.server.gateway import Gateway
from ponder.server.http import SSEResponse
from ponder.types import Message


def responses_route(gw: Gateway):
    store = ConversationStore(gw.config.conversations, gw.config.state.url)
    gw.closers.append(store.aclose)

    async def responses(request: Request) -> Response:
        return await handle(gw, store, request)
    return responses


async def handle(gw: Gateway, store: ConversationStore, request: Request) -> Response:
    rid = "resp_" + uuid.uuid4().hex[:24]
    holder: dict = {}

    async def parse(raw: bytes, principal, headers) -> PonderRequest:
        req = parse_responses_body(raw, max_bytes=gw.server.max_body_bytes, max_depth=gw.server.max_json_depth)
        key = principal.name if principal is not None else None
        history = await store.get(req.previous_response_id, key) if req.previous_response_id else []
        holder.update(req=req, key=key)
        return to_ponder(req, history)

    async def after(outcome: Outcome) -> None:
        if holder["req"].store:
            messages = conversation_after(outcome)
            # instructions belong to this turn only: a continuation gives its own (as OpenAI has it)
            await store.put(outcome.id, holder["key"], messages[1:] if holder["req"].instructions else messages)

    started = await start(gw, request, rid, parse, after=after)
    run, headers, echo = started.run, started.headers, echo_of(holder["req"])
    if not started.request.stream:
        outcome = await outcome_of(request, started)
        if outcome.status == 499:
            return Response(status_code=499)
        if outcome.error is not None:
            return JSONResponse(outcome.error.to_openai(), status_code=outcome.status,
                                headers={**headers, **outcome.error.headers()})
        return JSONResponse(response_body(outcome, echo), headers=headers or None)
    first = await first_event(gw, run, request)
    failed = failed_before_content(run, first)
    if failed is not None:
        return JSONResponse(failed.error.to_openai(), status_code=failed.status,
                            headers={**headers, **failed.error.headers()})
    model = gw.service.cached_backend(run.plan.lane)
    stream = ResponsesStream(rid, run.created, model.info.model if model else run.plan.lane.name, echo, run.plan)
    return SSEResponse(_events(run, stream, first, gw.server.progress_interval_s), run.cancel,
                       {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})


async def _events(run, stream: ResponsesStream, first, interval: float):
    ended = False
    try:
        for line in stream.start():
            yield line
        pending = [first] if first is not None else []
        while True:
            ev = await next_event(run, pending, interval)
            if ev is None:
                yield b": keep-alive\n\n"
                continue
            if isinstance(ev, Ended):
                ended = True
                for line in stream.end(ev.outcome):
                    yield line
                return
            for line in stream.on(ev):
                yield line
    finally:
        if not ended:
            run.cancel.cancel()  # the client went away: stop the work now, it is still accounted


def conversation_after(outcome: Outcome) -> list[Message]:
    """The conversation a response ended: its input, then its answer and calls as the assistant's turn."""
    messages = list(outcome.plan.messages)
    if outcome.results:
        content, calls = answer_and_calls(outcome.results[0], outcome.plan, outcome.id)
        tool_calls = tuple({"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                           for c in calls)
        messages.append(Message("assistant", content or "", tool_calls))
    return messages
