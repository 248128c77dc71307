"""``POST /v1/responses``: the Responses API's edge (what the openai SDK's ``responses`` and agent SDKs speak).

The request is translated into ponder's own (:mod:`ponder.api.responses`)
and runs the way every request runs (:mod:`ponder.server.flow`): quotas,
ledger, metrics, cache, deadlines, strategies.  A stored response keeps the
conversation it ended for ``previous_response_id`` (in the state store, so
replicas share it); errors are OpenAI error bodies.
"""

from __future__ import annotations

import uuid

from fastapi.responses import Response
from starlette.requests import Request

from ponder.api.responses import echo_of, parse_responses_body, to_ponder
from ponder.api.responses_out import ResponsesStream, response_body
from ponder.conversations import ConversationStore
from ponder.outcome import Outcome, answer_and_calls
from ponder.request import PonderRequest
from ponder.server.flow import event_stream, reply, start
from ponder.server.gateway import Gateway
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
    run, echo = started.run, echo_of(holder["req"])

    def stream(first):
        backend = gw.service.cached_backend(run.plan.lane)
        writer = ResponsesStream(rid, run.created, backend.info.model if backend else run.plan.lane.name, echo,
                                 run.plan)
        return event_stream(run, writer, first, gw.server.progress_interval_s, b": keep-alive\n\n")

    return await reply(gw, request, started, body=lambda o: response_body(o, echo), error=lambda e: e.to_openai(),
                       stream=stream)


def conversation_after(outcome: Outcome) -> list[Message]:
    """The conversation a response ended: its input, then its answer and calls as the assistant's turn."""
    messages = list(outcome.plan.messages)
    if outcome.results:
        content, calls = answer_and_calls(outcome.results[0], outcome.plan, outcome.id)
        tool_calls = tuple({"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                           for c in calls)
        messages.append(Message("assistant", content or "", tool_calls))
    return messages
