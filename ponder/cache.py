"""The answer cache: an exact repeat of a deterministic request is answered from the state store.

The key is a hash of everything that decides the answer: the lane and its
model, the messages (tool turns included), the thinking budget, the strategy
and its parameters, the sampling settings (temperature, top-p/k, seed, answer
tokens, stops), N, structured-output and tool settings, and the visibility.
Only deterministic requests are cached by default (temperature 0 or a fixed
seed); ``cache.nondeterministic: true`` lifts that.  Requests that ask for
log-probabilities, and outcomes that were cut (deadline, cancel, error), are
never stored.

A hit returns the stored answer at once: the run goes through the usual path
(response, stream, ledger, metrics) with 0 new tokens and cost 0;
``ponder.cache`` says ``{"hit": true, "age_s": …, "saved": {usage, cost}}``.
Entries live in the ``state`` store (memory, or Redis shared by replicas),
bounded by ``cache.max_entries`` (oldest out first) and ``cache.ttl_s``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ponder.backends.registry import kind_of
from ponder.config import CacheConfig
from ponder.state import RedisClients, TtlLru
from ponder.strategies.base import StrategyResult
from ponder.types import Generation, ThinkingReport, Timings, Usage

if TYPE_CHECKING:
    from ponder.planning import Plan

SCHEMA = 1


@dataclass
class Hit:
    results: list[StrategyResult]
    age_s: float
    saved_usage: dict
    saved_cost_usd: float


def _jsonable(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {k: _jsonable(x) for k, x in dataclasses.asdict(v).items()}
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)


def cache_key(plan: "Plan") -> str:
    s = plan.sampling
    parts = {
        "schema": SCHEMA,
        "lane": plan.lane.name,
        "model": kind_of(plan.lane).model_id(plan.lane),
        "messages": [[m.role, m.content, _jsonable(m.tool_calls), m.tool_call_id] for m in plan.messages],
        "budget": [plan.budget.max_tokens, plan.budget.min_tokens],
        "strategy": plan.strategy,
        "params": _jsonable(plan.strategy_params),
        "sampling": [s.temperature, s.top_p, s.top_k, s.seed, s.max_answer_tokens, list(s.stop), s.grammar],
        "n": plan.n,
        "response_format": _jsonable(plan.response_format),
        "tools": list(plan.tools),
        "client_tools": _jsonable(plan.client_tools),
        "tool_choice": _jsonable(plan.tool_choice),
        "visibility": plan.visibility,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _result_to_dict(r: StrategyResult) -> dict:
    g = r.chosen
    return {"answer": r.answer, "decision": r.decision, "confidence": r.confidence,
            "summary": r.extra.get("summary"), "flags": r.extra.get("flags") or [],
            "chosen": {"thinking": g.thinking, "answer": g.answer, "report": dataclasses.asdict(g.thinking_report),
                       "finish_reason": g.finish_reason, "answer_source": g.answer_source, "tools": g.tools}}


def _result_from_dict(d: dict) -> StrategyResult:
    c = d["chosen"]
    g = Generation(thinking=c["thinking"], answer=c["answer"], usage=Usage(),
                   thinking_report=ThinkingReport(**c["report"]), timings=Timings(),
                   finish_reason=c["finish_reason"], answer_source=c["answer_source"], tools=c.get("tools") or [])
    extra = {"summary": d["summary"]} if d.get("summary") else {}
    extra["flags"] = d.get("flags") or []
    return StrategyResult(answer=d["answer"], chosen=g, samples=[], usage=Usage(), decision=d["decision"],
                          confidence=d.get("confidence"), extra=extra)


class AnswerCache:
    """Stored answers keyed by :func:`cache_key`; memory or Redis, per the ``state`` url."""

    def __init__(self, config: CacheConfig, state_url: str = "memory://") -> None:
        self.config = config
        self.url = state_url
        self.hits = 0
        self.misses = 0
        self._mem = TtlLru(config.max_entries)
        self._clients = None  # ponder.state.RedisClients, made on first use

    # -- policy ---------------------------------------------------------------------------
    def key_for(self, plan: "Plan") -> str | None:
        """The plan's key, or None when this request is not cacheable."""
        if plan.cache == "off" or plan.logprobs:
            return None
        s = plan.sampling
        if not (s.temperature == 0 or s.seed is not None or self.config.nondeterministic):
            return None
        return cache_key(plan)

    # -- reading and writing --------------------------------------------------------------
    async def get(self, key: str) -> Hit | None:
        raw = await self._read(key)
        if raw is None:
            self.misses += 1
            return None
        d = json.loads(raw)
        age = time.time() - d["stored_at"]
        if age > self.config.ttl_s:
            self.misses += 1
            return None
        self.hits += 1
        return Hit([_result_from_dict(r) for r in d["results"]], age, d["usage"], d["cost_usd"])

    async def put(self, key: str, results: list[StrategyResult], usage: Usage, cost_usd: float) -> None:
        body = json.dumps({"stored_at": time.time(), "results": [_result_to_dict(r) for r in results],
                           "usage": usage.to_openai(), "cost_usd": cost_usd})
        await self._write(key, body)

    # -- storage --------------------------------------------------------------------------
    def _redis(self):
        if self._clients is None:
            self._clients = RedisClients(self.url, max_connections=32)
        return self._clients.get()

    async def _read(self, key: str) -> str | None:
        if self.url.startswith("memory://"):
            return self._mem.get(key, self.config.ttl_s)
        try:
            return await self._redis().get(f"ponder:cache:{key}")
        except Exception:  # the cache is an optimisation: a store outage is a miss, never a failed request
            return None

    async def _write(self, key: str, body: str) -> None:
        if self.url.startswith("memory://"):
            self._mem.put(key, body)
            return
        try:
            r = self._redis()
            async with r.pipeline(transaction=True) as p:
                p.set(f"ponder:cache:{key}", body, ex=max(1, int(self.config.ttl_s)))
                p.zadd("ponder:cache:index", {key: time.time()})
                p.zcard("ponder:cache:index")
                out = await p.execute()
            over = int(out[-1]) - self.config.max_entries
            if over > 0:
                old = await r.zpopmin("ponder:cache:index", over)
                if old:
                    await r.delete(*(f"ponder:cache:{k}" for k, _ in old))
        except Exception:
            pass

    def entries(self) -> int:
        return len(self._mem)

    async def aclose(self) -> None:
        if self._clients is not None:
            await self._clients.aclose()
