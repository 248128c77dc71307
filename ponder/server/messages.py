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
from ponder.outcome import Ended
from ponder.request import PonderRequest
from ponder.server.flow import failed_before_content, first_event, next_event, outcome_of, start
from ponder.server.gateway import Gateway
from ponder.server.http import SSEResponse

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
    run, headers = started.run, started.headers
    if not started.request.stream:
        outcome = await outcome_of(request, started)
        if outcome.status == 499:
            return Response(status_code=499)
        if outcome.error is not None:
            return error_response(outcome.error, headers)
        return JSONResponse(message_body(outcome), headers=headers or None)
    first = await first_event(gw, run, request)
    failed = failed_before_content(run, first)
    if failed is not None:
        return error_response(failed.error, headers)
    backend = gw.service.cached_backend(run.plan.lane)
    stream = MessagesStream(run.id, backend.info.model if backend else run.plan.lane.name, run.plan)
    return SSEResponse(_events(run, stream, first, gw.server.progress_interval_s), run.cancel,
                       {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})


async def _events(run, stream: MessagesStream, first, interval: float):
    ended = False
    try:
        for line in stream.start():
            yield line
        pending = [first] if first is not None else []
        while True:
            ev = await next_event(run, pending, interval)
            if ev is None:
                yield sse({"type": "ping"})
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
