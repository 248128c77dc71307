"""The gateway: OpenAI-compatible HTTP in front of :class:`ponder.service.Ponder`.

``create_app`` only composes: a :class:`~ponder.server.gateway.Gateway`
(what the routes share), the error handlers (always an OpenAI error body),
the route groups (:mod:`ponder.server.chat` for chat completions,
:mod:`ponder.server.info` for health, models and metrics) and the lifespan
hook, which drains in-flight runs on shutdown (``server.drain_s``), cancels
what is left (still accounted) and closes engines and clients.
"""

from __future__ import annotations

import contextlib
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from ponder import __version__
from ponder.api.messages import MessagesRequest
from ponder.api.request import ChatCompletionRequest
from ponder.api.responses import ResponsesRequest
from ponder.errors import NotFound, PonderError, internal_error
from ponder.server import info
from ponder.server.chat import chat_route
from ponder.server.gateway import Gateway
from ponder.server.messages import messages_route
from ponder.server.responses import responses_route
from ponder.service import Ponder

log = logging.getLogger("ponder.server")


def create_app(service: Ponder, *, tenancy=None) -> FastAPI:
    gw = Gateway(service, tenancy)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await gw.close()

    app = FastAPI(title="ponder", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.gateway = gw
    app.state.service = service
    app.state.begin_drain = gw.begin_drain
    _error_handlers(app)
    info.register(app, gw)
    # a plain Starlette route: FastAPI's parameter machinery has nothing to do here (ponder parses the body
    # itself, with its limits) and costs time on the hot path; /openapi.json documents it all the same
    app.router.routes.insert(0, Route("/v1/chat/completions", chat_route(gw), methods=["POST"]))
    app.router.routes.insert(1, Route("/v1/responses", responses_route(gw), methods=["POST"]))
    app.router.routes.insert(2, Route("/v1/messages", messages_route(gw), methods=["POST"]))
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _error_handlers(app: FastAPI) -> None:
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
        # a 405 says which methods the path takes (RFC 9110); Starlette puts them on the exception
        return JSONResponse(err.to_openai(), status_code=err.status, headers=_allow(request, exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("internal error")
        return JSONResponse(internal_error(), status_code=500)


def _allow(request: Request, exc: StarletteHTTPException) -> dict | None:
    """The ``Allow`` header Starlette's router computed for a 405 (it puts it on the exception)."""
    allow = (exc.headers or {}).get("Allow") if exc.status_code == 405 else None
    return {"Allow": allow} if allow else None


def _openapi(app: FastAPI) -> dict:
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for path, (model, op, summary, what, errors) in _BODIES.items():
            body = _openapi_body(model)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(body.pop("x-components"))
            schema.setdefault("paths", {})[path] = {"post": {
                "summary": summary, "operationId": op, **body,
                "responses": {"200": {"description": f"{what}, or an SSE stream of events",
                                      "content": {"application/json": {"schema": {"type": "object"}},
                                                  "text/event-stream": {"schema": {"type": "string"}}}},
                              "4XX": {"description": errors}, "5XX": {"description": errors}}}}
        paths = schema.setdefault("paths", {})
        card = paths.get("/v1/models/{model_id}", {}).get("get")
        if card is not None:
            card.setdefault("responses", {})["404"] = {"description": "no such model: an OpenAI error body"}
        metrics = paths.get("/metrics", {}).get("get")
        if metrics is not None:
            metrics["responses"]["200"]["content"] = {"text/plain; version=0.0.4": {"schema": {"type": "string"}}}
        app.openapi_schema = schema
    return app.openapi_schema


#: the bodies ponder parses itself (with its limits), documented in /openapi.json all the same
_BODIES = {
    "/v1/chat/completions": (ChatCompletionRequest, "chat_completions",
                             "Create a chat completion (OpenAI-compatible, with ponder's extensions)",
                             "a chat.completion", "an OpenAI error body"),
    "/v1/responses": (ResponsesRequest, "responses", "Create a response (OpenAI's Responses API)",
                      "a response object", "an OpenAI error body"),
    "/v1/messages": (MessagesRequest, "messages", "Create a message (Anthropic's Messages API)",
                     "a message object", "an Anthropic error body"),
}


def _openapi_body(model) -> dict:
    """A request body for /openapi.json (ponder parses the body itself)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "x-components": defs}
