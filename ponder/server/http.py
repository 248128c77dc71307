"""HTTP pieces the routes share: a bounded body reader, an SSE response that notices a disconnect."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from starlette.requests import ClientDisconnect, Request

from ponder.errors import Cancelled, InvalidRequest, PayloadTooLarge
from ponder.types import CancelToken


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


async def read_body(request: Request, limit: int) -> bytes:
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


def header_seconds(value: str | None, name: str) -> float | None:
    """A header holding seconds in (0, 86400], or None when absent."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be a number of seconds", param=name) from None
    if not 0 < seconds <= 86400:
        raise InvalidRequest(f"{name} must be in (0, 86400]", param=name)
    return seconds


async def watch_disconnect(request: Request, cancel: CancelToken) -> None:
    while not cancel.cancelled:
        if await request.is_disconnected():
            cancel.cancel()
            return
        await asyncio.sleep(0.1)
