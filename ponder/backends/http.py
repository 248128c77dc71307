"""A small async HTTP/1.1 client for upstream calls: pooled keep-alive connections on the event loop.

The gateway's added latency budget is about a millisecond, and a general
client spends most of it on layers an OpenAI-compatible upstream call does
not need (redirects, auth flows, anyio task groups).  This client does one
thing: POST JSON, read the response (streamed), keep the connection for the
next call.  The response is parsed by ``httptools`` (the parser uvicorn
uses).  It distinguishes exactly what the callers must treat differently:

* :class:`ConnectFailed` — no connection could be made (retryable);
* :class:`ConnectionCut` — the connection closed or reset before the
  response was complete (a stream cut short is never a success);
* a response whose body is framed by neither a length nor chunked encoding
  ends at EOF, as HTTP says.

A pooled connection the server closed while it sat idle is detected on first
use (no byte of the reply came back) and the request is sent once more on a
fresh connection.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import AsyncIterator
from urllib.parse import urlsplit

import httptools


class ConnectFailed(ConnectionError):
    pass


class ConnectionCut(ConnectionError):
    pass


class _Conn:
    __slots__ = ("reader", "writer", "used")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.used = reader, writer, False

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:
            pass


class Response:
    """A response whose body is read incrementally; use as an async context manager."""

    def __init__(self, pool: "HttpPool", conn: _Conn) -> None:
        self._pool, self._conn = pool, conn
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunks: deque[bytes] = deque()
        self._headers_done = False
        self._complete = False
        self._framed = False
        self._keep_alive = True
        self._got_bytes = False
        self._header_name = b""
        self._parser = httptools.HttpResponseParser(self)

    # -- httptools callbacks ------------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        self.status = self._parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self.status = self._parser.get_status_code()
        te = self.headers.get("transfer-encoding", "").lower()
        self._framed = "content-length" in self.headers or "chunked" in te
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(bytes(body))

    def on_message_complete(self) -> None:
        self._complete = True

    # -- reading ---------------------------------------------------------------------------
    async def _feed(self) -> bool:
        """Read more from the socket; False at EOF."""
        try:
            data = await self._conn.reader.read(65536)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise ConnectionCut(f"connection reset: {exc}") from None
        if not data:
            return False
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise ConnectionCut(f"malformed HTTP from the upstream: {exc}") from None
        return True

    async def start(self) -> None:
        while not self._headers_done:
            if not await self._feed():
                raise ConnectionCut("the connection closed before a response")

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        while True:
            while self._chunks:
                yield self._chunks.popleft()
            if self._complete:
                return
            if not await self._feed():
                if self._framed:
                    raise ConnectionCut("the connection closed before the response was complete")
                self._complete = True  # close-delimited body: EOF is its end
                self._keep_alive = False

    async def iter_lines(self) -> AsyncIterator[str]:
        buf = b""
        async for chunk in self.iter_bytes():
            buf += chunk
            while True:
                i = buf.find(b"\n")
                if i < 0:
                    break
                line, buf = buf[:i], buf[i + 1:]
                yield line.rstrip(b"\r").decode("utf-8", errors="replace")
        if buf:
            yield buf.rstrip(b"\r").decode("utf-8", errors="replace")

    async def read(self, limit: int = 1 << 20) -> bytes:
        out = b""
        async for chunk in self.iter_bytes():
            out += chunk
            if len(out) >= limit:
                break
        return out[:limit]

    async def __aenter__(self) -> "Response":
        return self

    async def __aexit__(self, *exc) -> None:
        # a fully read keep-alive response gives its connection back; anything else closes it
        if self._complete and self._keep_alive and exc[0] is None:
            self._pool._release(self._conn)
        else:
            self._conn.close()


class HttpPool:
    """Keep-alive connections to one upstream (one pool per event loop)."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, *, max_idle: int = 64) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme in {base_url!r}")
        self.host = u.hostname or "127.0.0.1"
        self.tls = u.scheme == "https"
        self.port = u.port or (443 if self.tls else 80)
        self.prefix = u.path.rstrip("/")
        host_header = self.host if u.port is None else f"{self.host}:{self.port}"
        base = {"Host": host_header, "User-Agent": "ponder", "Accept": "*/*", **(headers or {})}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in base.items())
        self._idle: deque[_Conn] = deque()
        self._max_idle = max_idle
        self.closed = False

    async def _connect(self) -> _Conn:
        try:
            if self.tls:
                import ssl

                reader, writer = await asyncio.open_connection(self.host, self.port, ssl=ssl.create_default_context())
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, asyncio.TimeoutError) as exc:
            raise ConnectFailed(f"cannot connect: {exc}") from None
        return _Conn(reader, writer)

    def _release(self, conn: _Conn) -> None:
        if self.closed or len(self._idle) >= self._max_idle or conn.writer.is_closing():
            conn.close()
            return
        conn.used = True
        self._idle.append(conn)

    async def post_json(self, path: str, body: dict, *, accept: str = "text/event-stream") -> Response:
        """Send the request; return the response once its headers arrived (read the body from it)."""
        payload = json.dumps(body, separators=(",", ":")).encode()
        head = (f"POST {self.prefix}{path} HTTP/1.1\r\n{self._head}Content-Type: application/json\r\n"
                f"Accept: {accept}\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
        for attempt in range(2):
            # a retry goes to a fresh connection: the other idle ones are likely as stale as the first
            conn = self._idle.popleft() if self._idle and attempt == 0 else await self._connect()
            reused = conn.used
            resp = Response(self, conn)
            try:
                conn.writer.write(head + payload)
                await conn.writer.drain()
                await resp.start()
                return resp
            except (ConnectionCut, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                if reused and not resp._got_bytes and attempt == 0:
                    while self._idle:  # the server closed this idle connection; drop the others of its age
                        self._idle.popleft().close()
                    continue  # once more on a fresh one
                raise ConnectionCut(str(exc)) from None
            except BaseException:
                conn.close()
                raise
        raise ConnectionCut("no connection")  # pragma: no cover

    async def aclose(self) -> None:
        self.closed = True
        while self._idle:
            self._idle.popleft().close()
