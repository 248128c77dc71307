"""Quota state: reserve a request's worst case atomically, settle it to what it really cost.

Every limit that can be crossed (requests and tokens per minute, thinking
tokens per day, dollars per month, concurrent requests) is checked and
reserved in **one atomic step**: either the whole worst case fits every
limit and is reserved, or nothing is.  The finish **settles** the
reservation: the reserved amounts are released and the real usage is added
to the window the reservation was made in.  So concurrent requests can never
push a key past a cap (a check-then-add would overshoot by a multiple of the
concurrency), and nothing reserved can leak:

* a reservation is a **lease** with an owner (a gateway replica) and an
  expiry; replicas renew the leases of their running requests, so a replica
  that dies (``kill -9``) leaves nothing reserved past ``state.lease_s``;
* settling is **idempotent**: a retried settle counts once; a settle that
  arrives after its lease ran out still counts the real usage, once.

``memory://`` keeps this in the process (one gateway); ``redis://`` keeps it
in Redis with Lua scripts (every replica shares it).
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Ask:
    """One limit a reservation is checked against."""

    #: requests | tokens | thinking | spend | concurrent
    kind: str
    #: the window it counts in ("tokens:29530512" for a minute; "concurrent" has none)
    window: str
    amount: float
    cap: float
    #: when the window ends (epoch seconds; 0 for concurrency)
    reset_at: float = 0.0


@dataclass
class Grant:
    ok: bool
    res_id: str = ""
    #: kind -> what is left after this reservation (ok) ...
    remaining: dict[str, float] = field(default_factory=dict)
    #: ... or, refused: the limit that did not fit
    refused: Ask | None = None
    in_use: float = 0.0


class StoreUnavailable(Exception):
    """The shared state cannot be reached (Redis down)."""


class QuotaStore:
    async def reserve(self, key: str, asks: list[Ask], owner: str, lease_s: float) -> Grant:
        raise NotImplementedError

    async def settle(self, key: str, res_id: str, asks: list[Ask], actual: dict[str, float]) -> bool:
        """Release the reservation and add ``actual`` (kind -> amount) to its windows; False if already settled."""
        raise NotImplementedError

    async def renew(self, owner: str, lease_s: float) -> None:
        raise NotImplementedError

    async def usage(self, key: str, asks: list[Ask]) -> dict[str, float]:
        """Settled + reserved amount in each ask's window (for headers and tests)."""
        raise NotImplementedError

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` when the store cannot be reached (readiness)."""
        return None

    async def aclose(self) -> None:
        pass


# ---------------------------------------------------------------------------
# memory://
# ---------------------------------------------------------------------------


class MemoryStore(QuotaStore):
    """One process: dictionaries under a lock, same semantics as Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: dict[tuple[str, str], float] = {}
        self._reserved: dict[tuple[str, str], float] = {}
        #: res_id -> (key, owner, expires, [(window, amount)])
        self._res: dict[str, tuple[str, str, float, list[tuple[str, float]]]] = {}
        self._settled: dict[str, float] = {}

    def _purge(self, now: float) -> None:
        for rid, (key, _, exp, parts) in list(self._res.items()):
            if exp <= now:
                for w, amount in parts:
                    self._reserved[(key, w)] = self._reserved.get((key, w), 0.0) - amount
                del self._res[rid]
        if len(self._settled) > 100_000:
            cut = now - 3600
            self._settled = {r: t for r, t in self._settled.items() if t > cut}

    async def reserve(self, key: str, asks: list[Ask], owner: str, lease_s: float) -> Grant:
        now = time.time()
        with self._lock:
            self._purge(now)
            remaining = {}
            for a in asks:
                in_use = self._used.get((key, a.window), 0.0) + self._reserved.get((key, a.window), 0.0)
                if in_use + a.amount > a.cap + 1e-9:
                    return Grant(False, refused=a, in_use=in_use)
                remaining[a.kind] = a.cap - in_use - a.amount
            rid = uuid.uuid4().hex
            for a in asks:
                self._reserved[(key, a.window)] = self._reserved.get((key, a.window), 0.0) + a.amount
            self._res[rid] = (key, owner, now + lease_s, [(a.window, a.amount) for a in asks])
            return Grant(True, rid, remaining)

    async def settle(self, key: str, res_id: str, asks: list[Ask], actual: dict[str, float]) -> bool:
        with self._lock:
            if res_id in self._settled:
                return False
            rec = self._res.pop(res_id, None)
            if rec is not None:
                for w, amount in rec[3]:
                    self._reserved[(key, w)] = self._reserved.get((key, w), 0.0) - amount
            for a in asks:
                if a.kind != "concurrent":
                    self._used[(key, a.window)] = self._used.get((key, a.window), 0.0) + actual.get(a.kind, 0.0)
            self._settled[res_id] = time.time()
            return True

    async def renew(self, owner: str, lease_s: float) -> None:
        until = time.time() + lease_s
        with self._lock:
            for rid, (key, o, exp, parts) in list(self._res.items()):
                if o == owner:
                    self._res[rid] = (key, o, until, parts)

    async def usage(self, key: str, asks: list[Ask]) -> dict[str, float]:
        with self._lock:
            self._purge(time.time())
            return {a.kind: self._used.get((key, a.window), 0.0) + self._reserved.get((key, a.window), 0.0)
                    for a in asks}


# ---------------------------------------------------------------------------
# redis://
# ---------------------------------------------------------------------------

# KEYS[1] reservations hash, KEYS[2] expiry zset, KEYS[3] owner set
# ARGV: now, res_id, owner, expires, window_ttl, n, then per limit: used_key, reserved_key, amount, cap
_RESERVE = """
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, rid in ipairs(expired) do
  local rec = redis.call('HGET', KEYS[1], rid)
  if rec then
    local body = string.match(rec, '^([^|]*)')
    for rkey, amount in string.gmatch(body, '([^;=]+)=([^;]+)') do
      redis.call('INCRBYFLOAT', rkey, -tonumber(amount))
    end
    redis.call('HDEL', KEYS[1], rid)
  end
  redis.call('ZREM', KEYS[2], rid)
end
local n = tonumber(ARGV[6])
local left = {}
for i = 0, n - 1 do
  local used = tonumber(redis.call('GET', ARGV[7 + i * 4]) or '0')
  local resv = tonumber(redis.call('GET', ARGV[8 + i * 4]) or '0')
  local amount = tonumber(ARGV[9 + i * 4])
  local cap = tonumber(ARGV[10 + i * 4])
  if used + resv + amount > cap + 1e-9 then
    return {0, tostring(i), tostring(used + resv)}
  end
  left[#left + 1] = tostring(cap - used - resv - amount)
end
local rec = {}
local ttl = tonumber(ARGV[5])
for i = 0, n - 1 do
  local rkey = ARGV[8 + i * 4]
  redis.call('INCRBYFLOAT', rkey, ARGV[9 + i * 4])
  redis.call('EXPIRE', rkey, ttl)
  rec[#rec + 1] = rkey .. '=' .. ARGV[9 + i * 4]
end
redis.call('HSET', KEYS[1], ARGV[2], table.concat(rec, ';') .. '|' .. ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[3], ttl)
return {1, unpack(left)}
"""

# KEYS[1] reservations hash, KEYS[2] expiry zset, KEYS[3] settled marker, KEYS[4] owner set (may be absent)
# ARGV: res_id, marker_ttl, window_ttl, n, then per limit: used_key, actual
_SETTLE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if rec then
  local body = string.match(rec, '^([^|]*)')
  for rkey, amount in string.gmatch(body, '([^;=]+)=([^;]+)') do
    redis.call('INCRBYFLOAT', rkey, -tonumber(amount))
  end
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local n = tonumber(ARGV[4])
local ttl = tonumber(ARGV[3])
for i = 0, n - 1 do
  local ukey = ARGV[5 + i * 2]
  local actual = tonumber(ARGV[6 + i * 2])
  if actual ~= 0 then
    redis.call('INCRBYFLOAT', ukey, actual)
  end
  redis.call('EXPIRE', ukey, ttl)
end
redis.call('SET', KEYS[3], '1', 'EX', tonumber(ARGV[2]))
return 1
"""


class RedisStore(QuotaStore):
    """Every replica shares one Redis; each reserve and settle is one Lua script (atomic)."""

    PREFIX = "ponder"

    def __init__(self, url: str) -> None:
        from ponder.state import RedisClients

        self.url = url
        self._redis = RedisClients(url)
        #: the two scripts, registered once per client
        self._scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _client(self):
        c = self._redis.get()
        scripts = self._scripts.get(c)
        if scripts is None:
            scripts = self._scripts[c] = (c.register_script(_RESERVE), c.register_script(_SETTLE))
        return c, scripts

    def _k(self, key: str, *parts: str) -> str:
        return ":".join((self.PREFIX, "{" + key + "}", *parts))

    async def _call(self, fn):
        import redis.exceptions as rex

        try:
            return await fn()
        except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from None

    async def ping(self) -> None:
        client, _ = self._client()
        await self._call(client.ping)

    async def reserve(self, key: str, asks: list[Ask], owner: str, lease_s: float) -> Grant:
        client, (reserve, _) = self._client()
        rid = uuid.uuid4().hex
        now = time.time()
        args: list = [now, rid, owner, now + lease_s, _ttl(asks), len(asks)]
        for a in asks:
            args += [self._k(key, "used", a.window), self._k(key, "resv", a.window), a.amount, a.cap]
        keys = [self._k(key, "res"), self._k(key, "exp"), self._k(key, "owner", owner)]
        out = await self._call(lambda: reserve(keys=keys, args=args))
        if int(out[0]) == 1:
            return Grant(True, rid, {a.kind: float(v) for a, v in zip(asks, out[1:])})
        return Grant(False, refused=asks[int(out[1])], in_use=float(out[2]))

    async def settle(self, key: str, res_id: str, asks: list[Ask], actual: dict[str, float]) -> bool:
        client, (_, settle) = self._client()
        args: list = [res_id, 86400, _ttl(asks), 0]
        pairs = []
        for a in asks:
            if a.kind != "concurrent":
                pairs += [self._k(key, "used", a.window), actual.get(a.kind, 0.0)]
        args[3] = len(pairs) // 2
        keys = [self._k(key, "res"), self._k(key, "exp"), self._k(key, "done", res_id)]
        out = await self._call(lambda: settle(keys=keys, args=args + pairs))
        return int(out) == 1

    async def renew(self, owner: str, lease_s: float) -> None:
        client, _ = self._client()
        until = time.time() + lease_s

        async def go() -> None:
            async for k in client.scan_iter(match=f"{self.PREFIX}:*:owner:{owner}", count=500):
                key = k.split(":")[1]
                members = await client.smembers(k)
                if not members:
                    continue
                exp = k.replace(f":owner:{owner}", ":exp")
                live = [m for m in members if await client.zscore(exp, m) is not None]
                if live:
                    await client.zadd(exp, {m: until for m in live}, xx=True)
                stale = set(members) - set(live)
                if stale:
                    await client.srem(k, *stale)
                _ = key

        await self._call(go)

    async def usage(self, key: str, asks: list[Ask]) -> dict[str, float]:
        client, _ = self._client()

        async def go() -> dict[str, float]:
            out = {}
            for a in asks:
                used = float(await client.get(self._k(key, "used", a.window)) or 0)
                resv = float(await client.get(self._k(key, "resv", a.window)) or 0)
                out[a.kind] = used + resv
            return out

        return await self._call(go)

    async def aclose(self) -> None:
        await self._redis.aclose()


def _ttl(asks: list[Ask]) -> int:
    """Counters live a little longer than their longest window (a month at most)."""
    now = time.time()
    longest = max((a.reset_at - now for a in asks if a.reset_at), default=120.0)
    return int(max(120.0, longest + 3600))


def open_store(url: str) -> QuotaStore:
    if url.startswith("memory://"):
        return MemoryStore()
    return RedisStore(url)
