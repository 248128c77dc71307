"""Spike detection and burn rate: what an operator must hear about before the bill does.

Per lane and per key, a rolling baseline of thinking tokens per request (an
exponential moving average over about ``1/alpha`` requests); a request far
above its baseline (``factor`` times and ``min_excess_tokens`` more, once
``min_requests`` are in it) is a spike.  Per key, the dollars of each minute
against the key's average minute.  Each spike counts in
``ponder_thinking_anomaly_total{scope,subject}`` and is logged with the key's
*name* (never its secret).

Burn rate: a key's spend and thinking tokens over the last ``window_s``
seconds, projected against what its quota reservation says is left of its
caps, gives ``ponder_key_cap_eta_seconds{key,cap}`` — the shipped alert fires
when a key will reach a cap within a day.  Spikes are judged against the
baseline before the request joins it, so one spike cannot hide itself.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from ponder.config_ops import AnomalyConfig

log = logging.getLogger("ponder.anomaly")

#: the quota asks a burn rate projects, and the cap each one is
_CAPS = {"spend": "spend_usd_per_month", "thinking": "thinking_tokens_per_day"}


@dataclass
class Baseline:
    mean: float = 0.0
    n: int = 0

    def update(self, value: float, alpha: float) -> None:
        # the first requests average plainly, then the moving average takes over
        weight = max(alpha, 1.0 / (self.n + 1))
        self.mean += weight * (value - self.mean)
        self.n += 1


@dataclass
class KeyFlow:
    """One key's recent spending: (time, dollars, thinking tokens) per request, and its minutes."""

    events: deque = field(default_factory=deque)
    minute: int = -1
    minute_cost: float = 0.0
    minutes: Baseline = field(default_factory=Baseline)
    minute_flagged: bool = False


class Watch:
    def __init__(self, cfg: AnomalyConfig, metrics=None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.baselines: dict[tuple[str, str], Baseline] = {}
        self.keys: dict[str, KeyFlow] = {}

    def start_series(self, lanes: list[str], keys: list[str]) -> None:
        """Export every spike series at 0 from the start: ``increase()`` cannot see a counter's first step
        when the series first appears at 1."""
        if self.metrics is None:
            return
        for lane in lanes:
            self.metrics.anomalies.labels("lane", lane)
        for key in keys:
            self.metrics.anomalies.labels("key", key)
            self.metrics.anomalies.labels("key_cost", key)

    def observe(self, lane: str, key: str | None, thinking: int, cost: float, remaining: dict | None = None,
                now: float | None = None) -> list[dict]:
        """Judge one finished request; returns the spikes it showed (also counted and logged)."""
        if not self.cfg.enabled:
            return []
        now = time.time() if now is None else now
        spikes = []
        for scope, name in (("lane", lane), ("key", key)):
            if name is None:
                continue
            b = self.baselines.setdefault((scope, name), Baseline())
            if b.n >= self.cfg.min_requests and thinking > self.cfg.factor * b.mean and \
                    thinking - b.mean >= self.cfg.min_excess_tokens:
                spikes.append({"scope": scope, "name": name, "thinking_tokens": thinking,
                               "baseline": round(b.mean, 1)})
            b.update(thinking, self.cfg.alpha)
        if key is not None:
            spikes += self._key_minute(key, cost, now)
            self._burn(key, cost, thinking, remaining, now)
        for s in spikes:
            if self.metrics is not None:
                self.metrics.anomalies.labels(s["scope"], s["name"]).inc()
            log.warning("thinking spike: %s %s at %s against a baseline of %s", s["scope"], s["name"],
                        s.get("thinking_tokens", s.get("cost_usd")), s["baseline"])
        return spikes

    def _key_minute(self, key: str, cost: float, now: float) -> list[dict]:
        flow = self.keys.setdefault(key, KeyFlow())
        minute = int(now // 60)
        if minute != flow.minute:
            if flow.minute >= 0:
                # the minutes between (no traffic) count as zero-spend minutes
                for _ in range(min(minute - flow.minute - 1, 60)):
                    flow.minutes.update(0.0, self.cfg.alpha)
                flow.minutes.update(flow.minute_cost, self.cfg.alpha)
            flow.minute, flow.minute_cost, flow.minute_flagged = minute, 0.0, False
        flow.minute_cost += cost
        base = flow.minutes
        if not flow.minute_flagged and base.n >= 5 and base.mean > 0 and \
                flow.minute_cost > self.cfg.factor * base.mean:
            flow.minute_flagged = True  # once per minute
            return [{"scope": "key_cost", "name": key, "cost_usd": round(flow.minute_cost, 6),
                     "baseline": round(base.mean, 6)}]
        return []

    def _burn(self, key: str, cost: float, thinking: int, remaining: dict | None, now: float) -> None:
        flow = self.keys.setdefault(key, KeyFlow())
        flow.events.append((now, cost, thinking))
        while flow.events and flow.events[0][0] < now - self.cfg.window_s:
            flow.events.popleft()
        if not remaining or self.metrics is None:
            return
        span = max(60.0, min(self.cfg.window_s, now - flow.events[0][0]))
        rates = {"spend": sum(e[1] for e in flow.events) / span, "thinking": sum(e[2] for e in flow.events) / span}
        for kind, cap in _CAPS.items():
            if kind in remaining and rates[kind] > 0:
                self.metrics.cap_eta.labels(key, cap).set(max(0.0, remaining[kind]) / rates[kind])


def remaining_after(reservation, outcome) -> dict | None:
    """What a key has left of its caps once this request is settled (the grant held its worst case)."""
    if reservation is None or not reservation.remaining:
        return None
    reserved = {a.kind: a.amount for a in reservation.asks}
    actual = {"spend": outcome.cost_usd, "thinking": float(outcome.usage.thinking_tokens),
              "tokens": float(outcome.usage.total_tokens), "requests": 1.0}
    return {k: v + reserved.get(k, 0.0) - actual.get(k, reserved.get(k, 0.0)) for k, v in reservation.remaining.items()}
