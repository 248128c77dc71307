"""``POST /v1/messages``: Anthropic's Messages API (what the anthropic SDK and coding agents speak).

``thinking.budget_tokens`` is ponder's thinking cap; the request runs the way
every request runs (:mod:`ponder.server.flow`), with the same keys
(``x-api-key`` or a bearer token) and limits.  Every error, from a bad field
to a quota refusal, is an Anthropic error body (``{"type": "error", ...}``).
"""

from __future__ import annotations

import logging
import uuid

from fastapi.responses import JSONResponse, Response
from starlette.requests import Request

from ponder.api.messages import parse_messages_body, to_ponder
from ponder.api.messages_out import MessagesStream, message_body, sse
from ponder.errors import PonderError
from ponder.request import PonderRequest
from ponder.server.flow import event_stream, reply, start
from ponder.server.gateway import Gateway

log = logging.getLogger("ponder.server")


def messages_route(gw: Gateway):
    async def messages(request: Request) -> Response:
        try:
            return await handle(gw, request)
        except PonderError as exc:
            return error_response(exc)
    return messages


def error_response(exc: PonderError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(exc.to_anthropic(), status_code=exc.status, headers={**(headers or {}), **exc.headers()})


async def handle(gw: Gateway, request: Request) -> Response:
    async def parse(raw: bytes, principal, headers) -> PonderRequest:
        req = parse_messages_body(raw, max_bytes=gw.server.max_body_bytes, max_depth=gw.server.max_json_depth)
        return to_ponder(req)

    started = await start(gw, request, "msg_" + uuid.uuid4().hex[:24], parse)
    run = started.run

    def stream(first):
        backend = gw.service.cached_backend(run.plan.lane)
        writer = MessagesStream(run.id, backend.info.model if backend else run.plan.lane.name, run.plan)
        return event_stream(run, writer, first, gw.server.progress_interval_s, sse({"type": "ping"}))

    return await reply(gw, request, started, body=message_body, error=lambda e: e.to_anthropic(), stream=stream)
