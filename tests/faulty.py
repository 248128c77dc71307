"""A real local upstream that misbehaves on purpose, at the socket level.

The request's ``model`` picks the behaviour, so one server serves every
fault (a lane per fault names it as ``upstream_model``):

* ``ok``         a proper SSE stream: content, finish reason, usage, [DONE]
* ``slow-ok``    the same after ``delay`` seconds
* ``think``      reasoning deltas then an answer (a thinking upstream)
* ``hang``       reads the request and never answers
* ``500``        HTTP 500 with an error body that names an internal path
* ``429``        HTTP 429 with ``Retry-After: 7``
* ``malformed``  200 SSE whose chunk is not JSON
* ``cut``        200 SSE (close-delimited), two content chunks, then the connection closes: no finish, no [DONE]
* ``drip``       200 SSE, one byte per second, forever
* ``reset``      reads the request, then resets the connection (RST)
* ``json``       a non-streamed JSON completion to a streamed request
* ``garbage``    200 text/event-stream with random bytes
* ``usage``      a proper stream whose usage claims 10**12 tokens
* ``stall``      one content chunk, then silence (for client-disconnect tests)
* ``tools``      with ``tools`` in the request: a structured ``tool_calls`` stream (name, then the
                 arguments in two fragments), finish ``tool_calls``; after a ``tool`` message: an answer using it
* ``exact``      a proper stream whose usage is exactly ponder's own count of the request's worst case
                 (prompt by ponder's estimate, completion = max_tokens): quotas can then be checked to the unit

Every connection's open and close times are recorded, so tests can see how
fast ponder gave up on an upstream nobody waits for any more.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import threading
import time

from conftest import free_port


def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _chunk(content=None, finish=None, reasoning=None, usage=None):
    delta = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    obj = {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta,
                                                                      "finish_reason": finish}]}
    if usage is not None:
        obj = {"id": "x", "object": "chat.completion.chunk", "choices": [], "usage": usage}
    return obj


class Faulty:
    def __init__(self, delay: float = 0.5) -> None:
        self.port = free_port()
        self.delay = delay
        #: (model, opened, closed) per connection
        self.connections: list[dict] = []
        self.bodies: list[dict] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._server = server
        self._ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def closed_within(self, model: str) -> list[float | None]:
        """Seconds each connection of ``model`` stayed open (None: still open)."""
        return [(c["closed"] - c["opened"]) if c["closed"] else None for c in self.connections if c["model"] == model]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rec = {"model": None, "opened": time.monotonic(), "closed": None}
        self.connections.append(rec)
        try:
            while True:  # keep-alive: one request after another on this connection
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = json.loads(await reader.readexactly(length)) if length else {}
                self.bodies.append(body)
                model = str(body.get("model", "ok"))
                rec["model"] = model
                keep = await self._respond(model, body, reader, writer)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            rec["closed"] = time.monotonic()
            try:
                writer.close()
            except (OSError, RuntimeError):  # the peer reset the socket, or the loop is closing
                pass

    async def _wait_closed(self, reader: asyncio.StreamReader, seconds: float) -> None:
        """Idle until the client closes the connection (or ``seconds`` pass)."""
        try:
            await asyncio.wait_for(reader.read(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _respond(self, model: str, body: dict, reader, writer) -> bool:
        sse_head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                    b"Connection: keep-alive\r\n\r\n")

        async def send_chunked(data: bytes) -> None:
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        async def end_chunked() -> None:
            writer.write(b"0\r\n\r\n")
            await writer.drain()

        def json_reply(status: str, obj: dict, extra: bytes = b"") -> None:
            data = json.dumps(obj).encode()
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                         .encode() + extra + b"Connection: keep-alive\r\n\r\n" + data)

        if model == "tools":
            writer.write(sse_head)
            msgs = body.get("messages", [])
            if msgs and msgs[-1].get("role") == "tool":
                await send_chunked(_sse(_chunk(content=f"It is {msgs[-1]['content']} in Paris.")))
                await send_chunked(_sse(_chunk(finish="stop")))
            elif body.get("tools"):
                name = body["tools"][0]["function"]["name"]
                for piece in ({"id": "call_up1", "type": "function", "function": {"name": name, "arguments": ""}},
                              {"function": {"arguments": '{"city": '}}, {"function": {"arguments": '"Paris"}'}}):
                    obj = _chunk()
                    obj["choices"][0]["delta"] = {"tool_calls": [{"index": 0, **piece}]}
                    await send_chunked(_sse(obj))
                await send_chunked(_sse(_chunk(finish="tool_calls")))
            else:
                await send_chunked(_sse(_chunk(content="no tools were offered")))
                await send_chunked(_sse(_chunk(finish="stop")))
            await send_chunked(_sse(_chunk(usage={"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39})))
            await send_chunked(b"data: [DONE]\n\n")
            await end_chunked()
            return True
        if model == "exact":
            from ponder.backends.openai_compat import approx_tokens

            prompt = sum(approx_tokens(m.get("content") or "") + 4 for m in body.get("messages", []))
            await asyncio.sleep(self.delay)
            writer.write(sse_head)
            await send_chunked(_sse(_chunk(content="19")))
            await send_chunked(_sse(_chunk(finish="length")))
            n = int(body.get("max_tokens", 1))
            await send_chunked(_sse(_chunk(usage={"prompt_tokens": prompt, "completion_tokens": n,
                                                  "total_tokens": prompt + n})))
            await send_chunked(b"data: [DONE]\n\n")
            await end_chunked()
            return True
        if model in ("ok", "slow-ok", "usage", "think"):
            if model == "slow-ok":
                await asyncio.sleep(self.delay)
            writer.write(sse_head)
            if model == "think":
                for w in ("Add", " the", " units."):
                    await send_chunked(_sse(_chunk(reasoning=w)))
            await send_chunked(_sse(_chunk(content="19")))
            await send_chunked(_sse(_chunk(finish="stop")))
            usage = {"prompt_tokens": 12, "completion_tokens": 4 if model == "think" else 1, "total_tokens": 13}
            if model == "usage":
                usage = {"prompt_tokens": 10 ** 12, "completion_tokens": 10 ** 12, "total_tokens": 2 * 10 ** 12}
            await send_chunked(_sse(_chunk(usage=usage)))
            await send_chunked(b"data: [DONE]\n\n")
            await end_chunked()
            return True
        if model == "hang":
            await self._wait_closed(reader, 3600)
            return False
        if model == "500":
            json_reply("500 Internal Server Error", {"error": {"message": "segfault in /opt/engine/secret.py"}})
            await writer.drain()
            return True
        if model == "429":
            json_reply("429 Too Many Requests", {"error": {"message": "slow down"}}, b"Retry-After: 7\r\n")
            await writer.drain()
            return True
        if model == "malformed":
            writer.write(sse_head)
            await send_chunked(b"data: {not json at all\n\n")
            await end_chunked()
            return True
        if model == "cut":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            writer.write(_sse(_chunk(content="The answer")))
            writer.write(_sse(_chunk(content=" is")))
            await writer.drain()
            await asyncio.sleep(0.2)
            return False
        if model == "drip":
            writer.write(sse_head)
            await writer.drain()
            payload = _sse(_chunk(content="x" * 40))
            for i in range(3600):
                await send_chunked(payload[i % len(payload): i % len(payload) + 1])
                await asyncio.sleep(1.0)
            return False
        if model == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if model == "json":
            json_reply("200 OK", {"id": "x", "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "19"}, "finish_reason": "stop"}]})
            await writer.drain()
            return True
        if model == "garbage":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            writer.write(b"data: " + os.urandom(64).replace(b"\n", b"x") + b"\n\n")
            await writer.drain()
            return False
        if model == "stall":
            writer.write(sse_head)
            await send_chunked(_sse(_chunk(content="thinking it over")))
            await self._wait_closed(reader, 3600)
            return False
        json_reply("404 Not Found", {"error": {"message": f"no mode {model}"}})
        await writer.drain()
        return True
