"""The gateway: OpenAI-compatible HTTP in front of :class:`ponder.service.Ponder`.

Per request: read the body (bounded while reading) -> parse (strict, with
limits) -> authenticate -> plan -> fit to the context -> admit (capacity,
shedding, quotas) -> a :class:`~ponder.run.Run` owns the rest; this module
only turns its events into SSE chunks or one JSON body.

* A streamed response holds its headers until the first event (at most
  ``server.first_byte_wait_s``), so a request that fails at once gets a real
  status code; a failure after that ends the stream with an OpenAI error
  event and no ``[DONE]``.
* A client that disconnects cancels its run at once (the embedded engine
  frees the slot at the next step; an upstream connection is closed); what
  it had spent is still accounted.
* The lifespan hook drains in-flight runs on shutdown (``server.drain_s``),
  cancels what is left (still accounted) and closes engines and clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ponder import __version__
from ponder.api.request import ChatCompletionRequest, parse_body
from ponder.api.response import answer_and_calls, chunk, completion_body, finish_of, logprobs_of, ponder_block
from ponder.errors import (
    Cancelled,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PonderError,
    ShuttingDown,
    internal_error,
)
from ponder.run import ChoiceEnd, Delta, Ended, Outcome, Run, SummaryEvent
from ponder.server.admission import Gate
from ponder.server.metrics import Metrics
from ponder.server.shedding import Shedder
from ponder.service import Ponder
from ponder.types import CancelToken

log = logging.getLogger("ponder.server")
access = logging.getLogger("ponder.access")


def create_app(service: Ponder, *, tenancy=None) -> FastAPI:
    config = service.config
    server = config.server
    metrics = service.metrics or Metrics([k.name for k in config.auth.keys])
    service.metrics = metrics
    shedder = Shedder(server.shedding, config.thinking.effort_table())
    gate = Gate(service, shedder, tenancy)
    runs: dict[str, tuple[Run, asyncio.Task]] = {}
    state = {"draining": False}

    async def drain() -> None:
        """Stop taking requests; give in-flight ones ``server.drain_s``; cancel the rest (still accounted)."""
        state["draining"] = True
        if runs:
            pending = [t for _, t in runs.values()]
            _, not_done = await asyncio.wait(pending, timeout=server.drain_s)
            for run, task in list(runs.values()):
                if not task.done():
                    run.cancel.cancel("shutdown")
            if not_done:
                await asyncio.wait(not_done, timeout=10)

    def begin_drain() -> None:
        """Called from the SIGTERM handler: start draining on the event loop."""
        if not state["draining"]:
            state["draining"] = True
            loop = asyncio.get_running_loop()
            state["drain_task"] = loop.create_task(drain())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        task = state.get("drain_task")
        if task is not None:
            await task
        else:
            await drain()
        if tenancy is not None:
            await tenancy.aclose()
        await service.aclose()

    app = FastAPI(title="ponder", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.service = service
    app.state.metrics = metrics
    app.state.shedder = shedder
    app.state.gate = gate
    app.state.runs = runs
    app.state.begin_drain = begin_drain

    # -- errors: always an OpenAI body ---------------------------------------------------
    @app.exception_handler(PonderError)
    async def _ponder_error(request: Request, exc: PonderError):
        return JSONResponse(exc.to_openai(), status_code=exc.status, headers=exc.headers() or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            err = NotFound(f"no route {request.method} {request.url.path}")
        else:
            err = PonderError(str(exc.detail))
            err.status, err.code = exc.status_code, "method_not_allowed" if exc.status_code == 405 else None
        return JSONResponse(err.to_openai(), status_code=err.status)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("internal error")
        return JSONResponse(internal_error(), status_code=500)

    # -- small endpoints ------------------------------------------------------------------
    @app.get("/health")
    async def health():
        return {"status": "draining" if state["draining"] else "ok", "version": __version__,
                "lanes": [lane.name for lane in config.lanes], "in_flight": len(runs)}

    def model_card(lane) -> dict:
        return {"id": lane.name, "object": "model", "created": 0, "owned_by": "ponder",
                "ponder": {"backend": lane.backend, "model": lane.model or lane.upstream_model, "effort": lane.effort,
                           "strategy": lane.strategy}}

    @app.get("/v1/models")
    async def models():
        data = [model_card(lane) for lane in config.lanes]
        data.append({"id": "auto", "object": "model", "created": 0, "owned_by": "ponder", "ponder": {"routed": True}})
        return {"object": "list", "data": data}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        for lane in config.lanes:
            if lane.name == model_id:
                return model_card(lane)
        if model_id == "auto":
            return {"id": "auto", "object": "model", "created": 0, "owned_by": "ponder", "ponder": {"routed": True}}
        raise NotFound(f"the model {model_id!r} does not exist", param="model", code="model_not_found")

    @app.get("/metrics")
    async def prometheus():
        for b in service.backends():
            load = b.load()
            if load:
                metrics.queue_depth.labels(b.info.name).set(load.get("waiting", 0))
                metrics.engine_active.labels(b.info.name).set(load.get("active", 0))
        in_flight: dict[str, int] = {}
        for run, _ in runs.values():
            in_flight[run.plan.lane.name] = in_flight.get(run.plan.lane.name, 0) + 1
        for lane in config.lanes:
            metrics.in_flight.labels(lane.name).set(in_flight.get(lane.name, 0))
        metrics.thinking_in_flight.set(shedder.thinking_in_flight)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # -- chat completions -------------------------------------------------------------------
    # a plain Starlette route: FastAPI's parameter machinery has nothing to do here (ponder parses the body
    # itself, with its limits) and costs time on the hot path; /openapi.json documents it all the same
    async def chat_completions(request: Request):
        t0 = time.perf_counter()
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        lane_label, key_name = "unknown", None
        try:
            if state["draining"]:
                raise ShuttingDown("the gateway is shutting down; retry on another replica")
            principal = await tenancy.authenticate(request.headers) if tenancy is not None else None
            key_name = principal.name if principal is not None else None
            raw = await _read_body(request, server.max_body_bytes)
            req = parse_body(raw, max_bytes=server.max_body_bytes, max_depth=server.max_json_depth,
                             max_messages=server.max_messages, max_message_chars=server.max_message_chars)
            header_deadline = request.headers.get("x-ponder-deadline-s")
            plan = await service.plan(req)
            lane_label = plan.lane.name
            if header_deadline is not None:
                plan = _with_header_deadline(plan, header_deadline)
            await service.backend_async(plan.lane)
            plan = service.preflight(plan)
            if tenancy is not None and principal is not None:
                plan = tenancy.apply_limits(principal, plan)
            ticket = await gate.admit(plan, principal)
        except PonderError as exc:
            metrics.refused(lane_label, exc.status, exc.code, key_name)
            _log_access(rid, key_name, lane_label, exc.status, None, time.perf_counter() - t0, exc.code)
            raise
        plan = ticket.plan
        cancel = CancelToken()

        async def on_end(outcome: Outcome) -> None:
            await ticket.release(outcome)
            runs.pop(rid, None)
            _log_access(rid, key_name, outcome.lane, outcome.status, outcome, outcome.timings.total_s,
                        outcome.error.code if outcome.error else None)

        run = service.run(plan, request_id=rid, key=key_name, cancel=cancel, on_end=on_end, stream=req.stream,
                          started=t0)
        task = asyncio.ensure_future(run.execute())
        runs[rid] = (run, task)
        headers = dict(ticket.headers)
        if req.stream:
            return await _stream(request, run, req, headers)
        return await _collect(request, run, task, headers)

    from starlette.routing import Route

    app.router.routes.insert(0, Route("/v1/chat/completions", chat_completions, methods=["POST"]))

    async def _collect(request: Request, run: Run, task: asyncio.Task, headers: dict) -> Response:
        watcher = asyncio.ensure_future(_watch_disconnect(request, run.cancel))
        try:
            outcome = await asyncio.shield(task)
        finally:
            watcher.cancel()
        if outcome.status == 499:
            return Response(status_code=499)
        if outcome.error is not None:
            return JSONResponse(outcome.error.to_openai(), status_code=outcome.status,
                                headers={**headers, **outcome.error.headers()})
        return JSONResponse(completion_body(outcome), headers=headers or None)

    async def _stream(request: Request, run: Run, req: ChatCompletionRequest, headers: dict) -> Response:
        # hold the headers until the first event, so a request that fails before its first token gets a real
        # status code (and may still fall back): briefly on the embedded engine, whose progress chunks matter,
        # up to the lane's own deadline on an upstream
        backend = service.cached_backend(run.plan.lane)
        wait = server.first_byte_wait_s if backend is None or backend.info.max_sequences else \
            run.plan.lane.timeout_s + 1.0
        if run.deadline is not None:
            wait = min(wait, max(0.0, run.deadline.left()) + server.answer_grace_s + 2.0)
        first = None
        try:
            first = await asyncio.wait_for(run.events.get(), timeout=wait)
        except asyncio.TimeoutError:
            pass
        if isinstance(first, Ended) and first.outcome.error is not None and not run.sent_content:
            o = first.outcome
            return JSONResponse(o.error.to_openai(), status_code=o.status, headers={**headers, **o.error.headers()})
        return SSEResponse(_sse(run, req, first), run.cancel,
                           {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})

    async def _sse(run: Run, req: ChatCompletionRequest, first) -> AsyncIterator[bytes]:
        plan = run.plan
        cid, created = run.id, run.created
        backend = service.cached_backend(plan.lane)
        model_name = backend.info.model if backend else plan.lane.name
        interval = server.progress_interval_s
        show = plan.visibility == "visible"
        started_roles: set[int] = set()
        finished: set[int] = set()
        last_progress = time.perf_counter()
        ended = False

        def emit(obj: dict) -> bytes:
            return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

        def delta(index: int, **fields) -> dict:
            if index not in started_roles:
                started_roles.add(index)
                return {"role": "assistant", **fields}
            return fields

        def progress(index: int = 0) -> bytes:
            return emit(chunk(cid, created, model_name, index=index, delta=delta(index),
                              ponder={"progress": {"thinking_tokens": run.thinking_tokens_now,
                                                   "elapsed_s": round(run.elapsed(), 3)}}))

        try:
            yield emit(chunk(cid, created, model_name, delta=delta(0, content="")))
            pending = [first] if first is not None else []
            while True:
                if pending:
                    ev = pending.pop(0)
                elif not run.events.empty():
                    ev = run.events.get_nowait()  # the common case: no timer, no task
                else:
                    try:
                        ev = await asyncio.wait_for(run.events.get(), interval)
                    except asyncio.TimeoutError:
                        if not show:
                            last_progress = time.perf_counter()
                            yield progress()
                        continue
                if isinstance(ev, Delta):
                    if ev.kind == "thinking":
                        if show:
                            yield emit(chunk(cid, created, model_name, index=ev.index,
                                             delta=delta(ev.index, reasoning_content=ev.text)))
                        elif time.perf_counter() - last_progress >= interval:
                            last_progress = time.perf_counter()
                            yield progress(ev.index)
                    else:
                        lp = {"content": [t.to_openai() for t in ev.logprobs], "refusal": None} \
                            if plan.logprobs and ev.logprobs else None
                        yield emit(chunk(cid, created, model_name, index=ev.index,
                                         delta=delta(ev.index, content=ev.text), logprobs=lp))
                elif isinstance(ev, SummaryEvent):
                    yield emit(chunk(cid, created, model_name, index=ev.index,
                                     delta=delta(ev.index, reasoning_content=ev.text + "\n"),
                                     ponder={"summary": {"text": ev.text, "thinking_tokens": ev.thinking_tokens}}))
                elif isinstance(ev, ChoiceEnd):
                    finished.add(ev.index)
                    calls = answer_and_calls(ev.result, plan)[1]
                    if calls:
                        yield emit(chunk(cid, created, model_name, index=ev.index, delta=delta(
                            ev.index, tool_calls=[{"index": k, **c} for k, c in enumerate(calls)])))
                    yield emit(chunk(cid, created, model_name, index=ev.index, delta=delta(ev.index),
                                     finish_reason="tool_calls" if calls
                                     else finish_of(ev.result.chosen.finish_reason)))
                elif isinstance(ev, Ended):
                    ended = True
                    o = ev.outcome
                    if o.error is not None:
                        # a failure after the stream started: an error event, never a fake success
                        yield emit(o.error.to_openai())
                        return
                    if req.include_usage:
                        yield emit(chunk(cid, created, model_name, usage=o.usage, ponder=ponder_block(o),
                                         choices=False))
                    yield b"data: [DONE]\n\n"
                    return
        finally:
            if not ended:
                # the client went away (or the server is stopping): stop the work now, it is still accounted
                run.cancel.cancel()

    def openapi() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            body = _openapi_body()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(body.pop("x-components"))
            schema.setdefault("paths", {})["/v1/chat/completions"] = {"post": {
                "summary": "Create a chat completion (OpenAI-compatible, with ponder's extensions)",
                "operationId": "chat_completions", **body,
                "responses": {"200": {"description": "a chat.completion, or an SSE stream of chunks",
                                      "content": {"application/json": {"schema": {"type": "object"}},
                                                  "text/event-stream": {"schema": {"type": "string"}}}},
                              "4XX": {"description": "an OpenAI error body"},
                              "5XX": {"description": "an OpenAI error body"}}}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    def _log_access(rid: str, key: str | None, lane: str, status: int, outcome: Outcome | None, seconds: float,
                    code: str | None) -> None:
        if not server.access_log:
            return
        rec = {"id": rid, "key": key, "lane": lane, "status": status, "seconds": round(seconds, 4)}
        if outcome is not None:
            u = outcome.usage
            rec.update(prompt_tokens=u.input_tokens, thinking_tokens=u.thinking_tokens,
                       answer_tokens=u.answer_tokens, cost_usd=round(outcome.cost_usd, 8))
        if code:
            rec["error"] = code
        if server.log_format == "json":
            access.info(json.dumps(rec, separators=(",", ":")))
        else:
            access.info(" ".join(f"{k}={v}" for k, v in rec.items() if v is not None))

    return app


class SSEResponse:
    """A server-sent-events response that stops its run when the client disconnects.

    Lighter than Starlette's streaming response (no task group per
    response): one task watches ``receive`` for the disconnect.
    """

    def __init__(self, chunks: AsyncIterator[bytes], cancel: CancelToken, headers: dict[str, str]) -> None:
        self.chunks, self.cancel = chunks, cancel
        self.headers = [(b"content-type", b"text/event-stream; charset=utf-8")] + \
            [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope, receive, send) -> None:
        async def watch() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    self.cancel.cancel()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            await self.chunks.aclose()


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (never read in full)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"the request body is {int(declared)} bytes; the limit is {limit}")
        except ValueError:
            raise InvalidRequest("bad Content-Length header") from None
    parts: list[bytes] = []
    size = 0
    try:
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
            parts.append(part)
    except ClientDisconnect:
        # nothing is planned or accounted yet: a refusal (499) in the metrics and the access log, no traceback
        raise Cancelled("the client closed the connection before its request body arrived") from None
    return b"".join(parts)


def _with_header_deadline(plan, value: str):
    from dataclasses import replace

    try:
        seconds = float(value)
    except ValueError:
        raise InvalidRequest("x-ponder-deadline-s must be a number of seconds", param="x-ponder-deadline-s") from None
    if not 0 < seconds <= 86400:
        raise InvalidRequest("x-ponder-deadline-s must be in (0, 86400]", param="x-ponder-deadline-s")
    current = plan.deadline_s
    return replace(plan, deadline_s=seconds if current is None else min(current, seconds))


async def _watch_disconnect(request: Request, cancel: CancelToken) -> None:
    while not cancel.cancelled:
        if await request.is_disconnected():
            cancel.cancel()
            return
        await asyncio.sleep(0.1)


def _openapi_body() -> dict:
    """The request body of /v1/chat/completions for /openapi.json (ponder parses the body itself)."""
    schema = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "x-components": defs}
