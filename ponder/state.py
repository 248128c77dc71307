"""Shared state helpers: the Redis connection of the ``state`` store (quotas, the answer cache) and the
bounded in-process cache (tool results, the answer cache on ``memory://``).

A ``redis.asyncio`` connection belongs to the event loop that opened it, so a
client is kept per loop (weakly: a closed loop's client goes with it), each
with a bounded pool that waits for a free connection instead of failing a
burst of requests with "Too many connections".
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any


class TtlLru:
    """key -> value for a TTL given at lookup; bounded, least recently used out first; thread-safe."""

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str, ttl_s: float) -> Any | None:
        with self._lock:
            got = self._data.get(key)
            if got is None or time.monotonic() - got[0] > ttl_s:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return got[1]

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = (time.monotonic(), value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


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
