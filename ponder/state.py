"""The ``state`` store's Redis connection, shared by quotas and the answer cache.

A ``redis.asyncio`` connection belongs to the event loop that opened it, so a
client is kept per loop (weakly: a closed loop's client goes with it), each
with a bounded pool that waits for a free connection instead of failing a
burst of requests with "Too many connections".
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any


class RedisClients:
    def __init__(self, url: str, *, max_connections: int = 64, timeout_s: float = 2.0) -> None:
        self.url = url
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self) -> Any:
        """The running loop's client."""
        loop = asyncio.get_running_loop()
        c = self._clients.get(loop)
        if c is None:
            import redis.asyncio as aioredis

            c = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=self.max_connections, timeout=self.timeout_s, decode_responses=True,
                socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s, health_check_interval=10))
            self._clients[loop] = c
        return c

    async def aclose(self) -> None:
        """Close the running loop's client (others close with their loops)."""
        try:
            c = self._clients.pop(asyncio.get_running_loop(), None)
        except RuntimeError:
            return
        if c is not None:
            try:
                await c.aclose()
            except Exception:  # closing must go on
                pass
