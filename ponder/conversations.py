"""Stored conversations for ``previous_response_id`` (the Responses API), shared by replicas.

A response that is stored (``store`` not false) keeps the whole conversation
it ended — its input, the earlier turns it continued, and its own answer and
calls — under its id, owned by the key that made it.  A later request names
it to continue: a missing, expired or foreign id is the same 404, so a key
never learns whether another key's conversation exists.  Memory (one
process) or Redis (``state.url``), with a TTL either way.
"""

from __future__ import annotations

import json
import logging

from ponder.errors import NotFound, PonderError
from ponder.state import RedisClients, TtlLru
from ponder.types import Message

log = logging.getLogger("ponder.conversations")


class ConversationUnavailable(PonderError):
    status = 503
    type = "server_error"
    code = "state_unavailable"


def _owner(key: str | None) -> str:
    return key or "<anonymous>"


class ConversationStore:
    def __init__(self, config, state_url: str = "memory://") -> None:
        self.config = config
        self.url = state_url
        self._mem = TtlLru(config.max_entries)
        self._clients: RedisClients | None = None

    async def get(self, response_id: str, key: str | None) -> list[Message]:
        """The conversation ``response_id`` ended, if ``key`` made it; else 404."""
        raw = await self._read(response_id)
        got = json.loads(raw) if raw else None
        if got is None or got.get("owner") != _owner(key):
            raise NotFound(f"no stored response {response_id!r} (unknown, expired, stored with store: false, or "
                           "made by another key)", param="previous_response_id", code="previous_response_not_found")
        return [Message(m["role"], m["content"], tuple(m.get("tool_calls") or ()), m.get("tool_call_id"))
                for m in got["messages"]]

    async def put(self, response_id: str, key: str | None, messages: list[Message]) -> None:
        """Store a finished conversation (a store outage is logged: the answer itself has been given)."""
        keep = messages[-self.config.max_messages:]
        body = json.dumps({"owner": _owner(key), "messages": [
            {"role": m.role, "content": m.content, "tool_calls": list(m.tool_calls), "tool_call_id": m.tool_call_id}
            for m in keep]})
        try:
            await self._write(response_id, body)
        except Exception as exc:
            log.warning("response %s: could not store its conversation: %s", response_id, exc)

    async def _read(self, response_id: str) -> str | None:
        if self.url.startswith("memory://"):
            return self._mem.get(response_id, self.config.ttl_s)
        try:
            return await self._redis().get(f"ponder:conv:{response_id}")
        except Exception as exc:
            raise ConversationUnavailable(f"the conversation store is unreachable ({type(exc).__name__})") from None

    async def _write(self, response_id: str, body: str) -> None:
        if self.url.startswith("memory://"):
            self._mem.put(response_id, body)
            return
        await self._redis().set(f"ponder:conv:{response_id}", body, ex=max(1, int(self.config.ttl_s)))

    def _redis(self):
        if self._clients is None:
            self._clients = RedisClients(self.url, max_connections=16)
        return self._clients.get()

    async def aclose(self) -> None:
        if self._clients is not None:
            await self._clients.aclose()
