"""A lane's fleet of engine replicas: prefix affinity with bounded load, ejection of failing replicas.

* **Affinity.** Each call names a key (the start of its rendered prompt).
  Replicas are ranked for that key by rendezvous hashing, so every sample,
  branch and continuation of one request — and every request that starts
  with the same system prompt — goes to the same replica and finds its
  prefix in that replica's cache.  A replica already carrying more than
  ``1 + load_slack`` times the fleet's mean of calls in flight is passed
  over for the next one in the ranking (bounded load).
* **Ejection.** A replica that refuses connections or fails
  ``eject_after`` calls in a row is left out for ``eject_s`` seconds, then
  tried again (one call decides whether it is back).  A call that fails
  before its first byte is retried on the next replica in the ranking.
* **Health checks.** Every ``interval_s`` a watcher thread asks each
  replica's ``GET /health`` (llama-server, vLLM and SGLang all serve it;
  llama-server answers 503 while it loads its model).  A replica that fails
  is ejected before any request finds out, and stays out while it fails; one
  that answers 200 again is readmitted at once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field

from typing import Any, Awaitable, Callable

import httpx

from ponder.errors import UpstreamUnreachable

log = logging.getLogger("ponder.upstream")


#: the prompt characters that decide a call's replica (a shared system prompt keeps one replica warm)
AFFINITY_CHARS = 2048


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    calls: int = 0
    errors: int = 0
    failures_in_row: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    #: health checks failed (since start)
    health_failures: int = 0
    #: connection pools by event loop
    pools: dict = field(default_factory=dict)
    #: samples ponder has pinned to each of the engine's slots (llama-server: its prompt cache is per slot)
    slot_load: list = field(default_factory=list)

    @property
    def root(self) -> str:
        return self.url.rstrip("/").removesuffix("/v1")

    def healthy(self, now: float) -> bool:
        return self.ejected_until <= now

    def to_dict(self) -> dict:
        return {"url": self.url, "in_flight": self.in_flight, "calls": self.calls, "errors": self.errors,
                "ejections": self.ejections, "ejected": self.ejected_until > time.monotonic(),
                "health_failures": self.health_failures}


class Replicas:
    def __init__(self, urls: list[str], *, eject_after: int = 3, eject_s: float = 10.0,
                 load_slack: float = 0.5, affinity: bool = True) -> None:
        if not urls:
            raise ValueError("a fleet needs at least one URL")
        self.replicas = [Replica(u) for u in urls]
        self.eject_after, self.eject_s, self.load_slack = eject_after, eject_s, load_slack
        #: False: calls take turns (round robin), the baseline affinity is measured against (bench/engines.py)
        self.affinity = affinity
        self._turn = 0
        self._lock = threading.Lock()
        #: the health checks' thread and its stop signal (``watch``)
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()

    def __len__(self) -> int:
        return len(self.replicas)

    def ranked(self, key: str) -> list[Replica]:
        """Healthy replicas for ``key``, best first (ejected ones last, in case all are)."""
        now = time.monotonic()
        if not self.affinity:
            with self._lock:
                self._turn += 1
                k = self._turn % len(self.replicas)
            order = self.replicas[k:] + self.replicas[:k]
        else:
            order = sorted(self.replicas, key=lambda r: hashlib.sha256(f"{r.url}|{key}".encode()).digest(),
                           reverse=True)
        healthy = [r for r in order if r.healthy(now)]
        if not healthy:
            return order
        with self._lock:
            mean = sum(r.in_flight for r in self.replicas) / len(self.replicas)
        bound = max(1.0, (1 + self.load_slack) * (mean + 1))
        light = [r for r in healthy if r.in_flight < bound]
        return light + [r for r in healthy if r not in light] + [r for r in order if r not in healthy]

    def pin(self, r: Replica, n_slots: int) -> int | None:
        """A slot of ``r`` for one sample's calls (the least loaded), or None when the engine has no slots to pin:
        every continuation of the sample then finds its own text in that slot's cache."""
        if n_slots <= 0:
            return None
        with self._lock:
            if len(r.slot_load) != n_slots:
                r.slot_load = [0] * n_slots
            slot = min(range(n_slots), key=lambda i: r.slot_load[i])
            r.slot_load[slot] += 1
            return slot

    def unpin(self, r: Replica, slot: int | None) -> None:
        if slot is None:
            return
        with self._lock:
            if slot < len(r.slot_load):
                r.slot_load[slot] = max(0, r.slot_load[slot] - 1)

    def started(self, r: Replica) -> None:
        with self._lock:
            r.in_flight += 1
            r.calls += 1

    def finished(self, r: Replica, *, failed: bool = False, refused: bool = False) -> None:
        """A call ended; ``refused``: the replica could not be reached (ejected at once)."""
        with self._lock:
            r.in_flight = max(0, r.in_flight - 1)
            if not failed and not refused:
                r.failures_in_row = 0
                return
            r.errors += 1
            r.failures_in_row += 1
            if refused or r.failures_in_row >= self.eject_after:
                r.ejected_until = time.monotonic() + self.eject_s
                r.ejections += 1
                r.failures_in_row = 0

    async def call(self, ranked: list[Replica], fn: Callable[[Replica], Awaitable[Any]]) -> Any:
        """``fn(replica)`` on the first of ``ranked`` that can be reached: a replica that refuses the connection
        (nothing was sent back) is ejected and the next one tried; any other failure is the call's."""
        for i, replica in enumerate(ranked):
            self.started(replica)
            try:
                out = await fn(replica)
            except UpstreamUnreachable:
                self.finished(replica, refused=True)
                if i + 1 < len(ranked):
                    continue
                raise
            except BaseException:
                self.finished(replica, failed=True)
                raise
            self.finished(replica)
            return out
        raise UpstreamUnreachable("no replica is reachable")

    def state(self) -> list[dict]:
        return [r.to_dict() for r in self.replicas]

    # -- active health checks ----------------------------------------------------------------
    def watch(self, interval_s: float, headers: dict | None = None, path: str = "/health") -> None:
        """Check every replica's ``path`` every ``interval_s`` seconds on a daemon thread (``close`` stops it)."""
        if interval_s <= 0 or self._watcher is not None:
            return
        self._watcher = threading.Thread(target=self._watch, args=(interval_s, headers or {}, path),
                                         name="ponder-health", daemon=True)
        self._watcher.start()

    def _watch(self, interval_s: float, headers: dict, path: str) -> None:
        with httpx.Client(headers=headers, timeout=min(2.0, interval_s)) as client:
            while not self._stop.wait(interval_s):
                for r in self.replicas:
                    try:
                        ok = client.get(r.root + path).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    self.checked(r, ok)

    def checked(self, r: Replica, ok: bool) -> None:
        """A health check's verdict: eject (or keep out) a failing replica, readmit a healthy one at once."""
        now = time.monotonic()
        with self._lock:
            if ok:
                if r.ejected_until > now:
                    log.info("replica %s passes its health check: readmitted", r.url)
                r.ejected_until = 0.0
                r.failures_in_row = 0
                return
            r.health_failures += 1
            if r.ejected_until <= now:
                r.ejections += 1
                log.warning("replica %s fails its health check: ejected", r.url)
            r.ejected_until = max(r.ejected_until, now + self.eject_s)

    def close(self) -> None:
        self._stop.set()
