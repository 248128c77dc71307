"""The tenancy object: authenticate, apply a key's per-request limits, reserve and settle its quotas.

See :mod:`ponder.tenancy` for the rules.
"""

from __future__ import annotations

import asyncio
import calendar
import collections
import hashlib
import logging
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ponder.config import KeyLimits, PonderConfig
from ponder.errors import AuthError, Forbidden, Overloaded, PonderError
from ponder.tenancy.store import Ask, QuotaStore, StoreUnavailable, open_store
from ponder.thinking.budget import EFFORT_ORDER

if TYPE_CHECKING:
    from ponder.planning import Plan

log = logging.getLogger("ponder.tenancy")


@dataclass(frozen=True)
class Principal:
    """Who is asking: a configured key, or an anonymous caller."""

    name: str
    limits: KeyLimits
    anonymous: bool = False


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class StateUnavailable(PonderError):
    status = 503
    type = "server_error"
    code = "quota_store_unavailable"


def build_tenancy(config: PonderConfig, *, replica: str | None = None) -> "Tenancy | None":
    """The gateway's key and quota keeper; None when nothing is limited (no keys, no anonymous limits)."""
    auth = config.auth
    anonymous_limited = any(v is not None for k, v in auth.anonymous.model_dump().items() if k not in ("clamp", "weight"))
    if not auth.keys and not auth.required and not anonymous_limited:
        return None
    return Tenancy(config, open_store(config.state.url), replica=replica)


class Tenancy:
    def __init__(self, config: PonderConfig, store: QuotaStore, *, replica: str | None = None) -> None:
        self.config = config
        self.store = store
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._keys = {k.key_sha256: Principal(k.name, k.limits) for k in config.auth.keys}
        self._anonymous = Principal("anonymous", config.auth.anonymous, anonymous=True)
        self._heartbeat: asyncio.Task | None = None
        #: res_id -> (key, asks, actual): settles the store could not take yet, oldest first
        self._unsettled: collections.OrderedDict[str, tuple[str, list[Ask], dict[str, float]]] = \
            collections.OrderedDict()
        self._wake = asyncio.Event()

    #: deferred settles kept at most (each a few hundred bytes); past that the oldest is given up, loudly
    MAX_UNSETTLED = 100_000

    # -- who ---------------------------------------------------------------------------
    async def authenticate(self, headers) -> Principal:
        secret = None
        auth = headers.get("authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                secret = value.strip()
        if secret is None and headers.get("x-api-key"):
            secret = headers.get("x-api-key").strip()
        if secret is None:
            if self.config.auth.required:
                raise AuthError("this gateway needs an API key: send Authorization: Bearer <key> or x-api-key")
            return self._anonymous
        p = self._keys.get(hash_secret(secret))
        if p is None:
            raise AuthError("the API key is not valid")
        return p

    # -- per-request limits --------------------------------------------------------------
    def apply_limits(self, principal: Principal, plan: "Plan") -> "Plan":
        lim = principal.limits
        clamp = lim.clamp
        clamped = dict(plan.clamped)

        def over(limit: str, message: str, field: str, old: Any, new: Any) -> None:
            if not clamp:
                raise Forbidden(f"{message} (the {'anonymous' if principal.anonymous else 'key'}'s {limit})",
                                param=limit)
            clamped[field] = {"from": old, "to": new, "why": f"key limit {limit}"}

        if lim.lanes is not None and plan.lane.name not in lim.lanes:
            raise Forbidden(f"lane {plan.lane.name!r} is not allowed for this key (lanes: {', '.join(lim.lanes)})",
                            param="lanes")
        budget = plan.budget
        caps = []
        if lim.max_thinking_tokens is not None:
            caps.append(("max_thinking_tokens", lim.max_thinking_tokens))
        if lim.max_effort is not None:
            caps.append(("max_effort", self.config.thinking.efforts[lim.max_effort]))
        for limit, cap in caps:
            if budget.max_tokens > cap:
                over(limit, f"the thinking budget {budget.max_tokens} is above {cap}", "max_thinking_tokens",
                     budget.max_tokens, cap)
                budget = replace(budget, max_tokens=cap, min_tokens=min(budget.min_tokens, cap))
        if lim.max_samples is not None and plan.n * plan.samples_per_choice() > lim.max_samples:
            samples = plan.n * plan.samples_per_choice()
            if not clamp:
                raise Forbidden(f"this request draws {samples} samples; the key's limit is {lim.max_samples} "
                                "(max_samples)", param="max_samples")
            name = _count_param(plan)
            if plan.samples_per_choice() == 1 or name is None:
                clamped["n"] = {"from": plan.n, "to": max(1, lim.max_samples), "why": "key limit max_samples"}
                plan = replace(plan, n=max(1, lim.max_samples))
            else:
                old = getattr(plan.strategy_params, name)
                new = max(1, lim.max_samples // plan.n)
                clamped[f"ponder.params.{name}"] = {"from": old, "to": new, "why": "key limit max_samples"}
                plan = replace(plan, strategy_params=_with_count(plan, name, new))
        if budget is not plan.budget or clamped != plan.clamped:
            plan = replace(plan, budget=budget, clamped=clamped)
        plan = _schedule(principal, plan)
        retry = plan.guard.retry if plan.guard is not None else None
        if retry is not None:  # the guard's escalation is held to the key's caps too (ponder's choice: no error)
            cap = min([c for _, c in caps] or [retry.budget.max_tokens])
            if retry.budget.max_tokens > cap:
                retry = replace(retry, budget=replace(retry.budget, max_tokens=cap,
                                                      min_tokens=min(retry.budget.min_tokens, cap)))
                plan = replace(plan, guard=replace(plan.guard, retry=retry if cap > plan.budget.max_tokens
                                                   or retry.lane is not plan.lane else None))
        return plan

    # -- quotas ----------------------------------------------------------------------------
    def asks(self, principal: Principal, plan: "Plan", prompt_tokens: int, now: float | None = None) -> list[Ask]:
        from ponder.pricing import price
        from ponder.types import Usage

        lim = principal.limits
        now = time.time() if now is None else now
        minute = int(now // 60)
        day = int(now // 86400)
        dt = datetime.fromtimestamp(now, tz=timezone.utc)
        month = dt.year * 100 + dt.month
        month_end = calendar.timegm((dt.year + dt.month // 12, dt.month % 12 + 1, 1, 0, 0, 0))
        per = plan.n * plan.samples_per_choice()
        think = per * plan.budget.max_tokens
        answer = per * plan.sampling.max_answer_tokens
        worst = Usage(prompt_tokens=prompt_tokens, thinking_tokens=think, answer_tokens=answer)
        cost = price(worst, plan.lane.prices)
        if plan.escalation is not None:
            e = plan.escalation
            e_per = plan.n * e.samples_per_choice()
            think += e_per * e.budget.max_tokens
            ew = Usage(prompt_tokens=prompt_tokens, thinking_tokens=e_per * e.budget.max_tokens,
                       answer_tokens=e_per * e.sampling.max_answer_tokens)
            cost += price(ew, e.lane.prices)
            worst = worst + ew
        if plan.guard is not None:  # a guard action spends only what was reserved for it
            g_think, g_usage, g_cost = plan.guard.worst_case_usage(plan, 0)
            think, worst, cost = think + g_think, worst + g_usage, cost + g_cost
        out = []
        if lim.requests_per_minute is not None:
            out.append(Ask("requests", f"requests:m{minute}", 1, lim.requests_per_minute, (minute + 1) * 60))
        if lim.tokens_per_minute is not None:
            out.append(Ask("tokens", f"tokens:m{minute}", worst.total_tokens, lim.tokens_per_minute,
                           (minute + 1) * 60))
        if lim.thinking_tokens_per_day is not None:
            out.append(Ask("thinking", f"thinking:d{day}", think, lim.thinking_tokens_per_day, (day + 1) * 86400))
        if lim.spend_usd_per_month is not None:
            out.append(Ask("spend", f"spend:{month}", cost, lim.spend_usd_per_month, month_end))
        if lim.max_concurrent is not None:
            out.append(Ask("concurrent", "concurrent", 1, lim.max_concurrent, 0))
        return out

    async def reserve(self, principal: Principal, plan: "Plan", prompt_tokens: int | None = None) -> "Reservation":
        if prompt_tokens is None:
            prompt_tokens = plan.prompt_tokens or sum(len(m.content) for m in plan.messages) // 3
        asks = self.asks(principal, plan, prompt_tokens)
        if not asks:
            return Reservation(self, principal, "", [], {})
        try:
            grant = await self.store.reserve(principal.name, asks, self.replica, self.config.state.lease_s)
        except StoreUnavailable as exc:
            if self.config.state.fail_open:
                log.warning("quota store unavailable (%s): admitting without quotas (state.fail_open)", exc)
                return Reservation(self, principal, "", [], {})
            log.error("quota store unavailable: %s", exc)
            raise StateUnavailable("the quota store is unavailable; retry shortly") from None
        if not grant.ok:
            raise refusal(grant.refused, grant.in_use, asks)
        self._ensure_heartbeat()
        return Reservation(self, principal, grant.res_id, asks, grant.remaining)

    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._heartbeat_loop())

    async def _heartbeat_loop(self) -> None:
        """Keep this replica's leases alive while it runs (a dead replica's simply run out), and land the
        settles the store could not take, once a second while there are any."""
        every = max(0.2, self.config.state.lease_s / 3)
        next_renew = time.monotonic() + every
        while True:
            wait = next_renew - time.monotonic()
            if self._unsettled:
                wait = min(wait, 1.0)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.05, wait))
                continue  # the first settle was just deferred: wait a second, not until the next renewal
            except asyncio.TimeoutError:
                pass
            if self._unsettled:
                await self.flush_settles()
            if time.monotonic() >= next_renew:
                next_renew = time.monotonic() + every
                try:
                    await self.store.renew(self.replica, self.config.state.lease_s)
                except StoreUnavailable as exc:
                    log.warning("lease renewal failed: %s", exc)

    # -- settling ------------------------------------------------------------------------
    async def settle(self, key: str, res_id: str, asks: list[Ask], actual: dict[str, float]) -> None:
        """Settle now, or keep the settle for the heartbeat when the store is unreachable."""
        try:
            await self.store.settle(key, res_id, asks, actual)
            return
        except StoreUnavailable as exc:
            log.warning("settle of %s (%s) deferred: the quota store is unavailable (%s)", res_id, key, exc)
        first = not self._unsettled
        self._unsettled[res_id] = (key, asks, actual)
        while len(self._unsettled) > self.MAX_UNSETTLED:
            lost, (lost_key, _, _) = self._unsettled.popitem(last=False)
            log.error("gave up the settle of %s (%s): over %d deferred; its usage is only in the ledger",
                      lost, lost_key, self.MAX_UNSETTLED)
        self._ensure_heartbeat()
        if first:  # only the first shortens the heartbeat's sleep; later ones must not keep postponing it
            self._wake.set()

    async def flush_settles(self) -> None:
        """Retry the deferred settles, oldest first, until the store fails again."""
        landed = 0
        for res_id, (key, asks, actual) in list(self._unsettled.items()):
            try:
                await self.store.settle(key, res_id, asks, actual)
            except StoreUnavailable:
                break
            self._unsettled.pop(res_id, None)
            landed += 1
        if landed:
            log.info("settled %d deferred reservations; %d still waiting", landed, len(self._unsettled))

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._unsettled:
            try:
                await asyncio.wait_for(self.flush_settles(), timeout=3.0)
            except asyncio.TimeoutError:
                pass
            if self._unsettled:
                log.error("shutting down with %d settles the quota store never took (keys: %s); their usage is "
                          "in the ledger and their reservations run out with their leases", len(self._unsettled),
                          ", ".join(sorted({k for k, _, _ in self._unsettled.values()})))
        await self.store.aclose()


_LIMIT_NAMES = {"requests": "requests_per_minute", "tokens": "tokens_per_minute",
                "thinking": "thinking_tokens_per_day", "spend": "spend_usd_per_month", "concurrent": "max_concurrent"}


def refusal(ask: Ask, in_use: float, asks: list[Ask]) -> Overloaded:
    name = _LIMIT_NAMES[ask.kind]
    left = max(0.0, ask.cap - in_use)
    retry = 1.0 if ask.kind == "concurrent" else max(1.0, ask.reset_at - time.time())
    if ask.kind == "spend":
        msg = f"{name}: this request could cost up to ${ask.amount:.6f}; ${left:.6f} of ${ask.cap:g} remain this month"
    elif ask.kind == "concurrent":
        msg = f"{name}: {int(in_use)} of {int(ask.cap)} requests of this key are already running"
    else:
        unit = "request" if ask.kind == "requests" else "tokens"
        msg = f"{name}: this request could use up to {ask.amount:g} {unit}; {left:g} of {ask.cap:g} remain " \
              f"in this window"
    err = Overloaded(msg, retry_after_s=retry, param=name,
                     code="insufficient_quota" if ask.kind in ("spend", "thinking") else "rate_limit_exceeded",
                     limit_headers=rate_headers(asks, {ask.kind: left}))
    return err


def _fmt_reset(seconds: float) -> str:
    seconds = max(0.0, seconds)
    m, s = divmod(int(math.ceil(seconds)), 60)
    return f"{m}m{s}s" if m else f"{s}s"


def rate_headers(asks: list[Ask], remaining: dict[str, float]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the request and token limits."""
    out = {}
    now = time.time()
    for a in asks:
        if a.kind not in ("requests", "tokens"):
            continue
        out[f"x-ratelimit-limit-{a.kind}"] = str(int(a.cap))
        out[f"x-ratelimit-remaining-{a.kind}"] = str(max(0, int(remaining.get(a.kind, 0))))
        out[f"x-ratelimit-reset-{a.kind}"] = _fmt_reset(a.reset_at - now)
    return out


class Reservation:
    """What one admitted request holds; settled exactly once, to what it really cost."""

    def __init__(self, tenancy: Tenancy, principal: Principal, res_id: str, asks: list[Ask],
                 remaining: dict[str, float]) -> None:
        self.tenancy, self.principal, self.res_id, self.asks = tenancy, principal, res_id, asks
        self.remaining = remaining
        self._settled = False

    def headers(self) -> dict[str, str]:
        return rate_headers(self.asks, self.remaining)

    async def settle(self, outcome=None) -> None:
        if self._settled or not self.res_id:
            return
        self._settled = True
        actual = {"requests": 1.0}
        if outcome is not None:
            u = outcome.usage
            actual.update(tokens=float(u.total_tokens), thinking=float(u.thinking_tokens),
                          spend=float(outcome.cost_usd))
        await self.tenancy.settle(self.principal.name, self.res_id, self.asks, actual)


def _schedule(principal: Principal, plan: "Plan") -> "Plan":
    """The key caps the request's class (it cannot be more urgent than the key's ``priority``) and names its
    fair share (its name and ``weight``)."""
    from ponder.config_ops import CLASSES

    lim = principal.limits
    rank = plan.priority
    if lim.priority is not None and rank < CLASSES.index(lim.priority):
        rank = CLASSES.index(lim.priority)
    return replace(plan, priority=rank, sched_key=principal.name, sched_weight=lim.weight)


def _count_param(plan: "Plan") -> str | None:
    from ponder.strategies import count_param

    return count_param(plan.strategy)


def _with_count(plan: "Plan", name: str, value: int):
    import dataclasses

    return dataclasses.replace(plan.strategy_params, **{name: value})


def effort_rank(effort: str) -> int:
    return EFFORT_ORDER.index(effort) if effort in EFFORT_ORDER else len(EFFORT_ORDER)
