"""Prometheus metrics of one gateway (own registry: no global state).

:meth:`Metrics.record` is called once per request by the run object, under
the request's real status — a stream that failed after its headers counts
as its error status, not 200.  Per-key series use only configured key names
(and ``anonymous``), so label cardinality stays bounded whatever clients send.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ponder.outcome import guard_records

TOKEN_BUCKETS = (0, 16, 64, 256, 1024, 4096, 16384, 65536)
TIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, key_names: list[str] | None = None) -> None:
        self.registry = CollectorRegistry()
        self._keys = set(key_names or [])
        r = self.registry
        self.requests = Counter("ponder_requests", "Chat requests by lane and HTTP status", ["lane", "status"], registry=r)
        self.thinking_tokens = Histogram("ponder_thinking_tokens", "Thinking tokens per request", ["lane"], buckets=TOKEN_BUCKETS, registry=r)
        self.answer_tokens = Histogram("ponder_answer_tokens", "Answer tokens per request", ["lane"], buckets=TOKEN_BUCKETS, registry=r)
        self.prompt_tokens = Counter("ponder_prompt_tokens", "Prompt tokens", ["lane"], registry=r)
        self.ttft = Histogram("ponder_time_to_first_token_seconds", "Time to first token (thinking or answer)", ["lane"], buckets=TIME_BUCKETS, registry=r)
        self.tta = Histogram("ponder_time_to_answer_seconds", "Time to the first answer token", ["lane"], buckets=TIME_BUCKETS, registry=r)
        self.duration = Histogram("ponder_request_seconds", "Whole request time", ["lane"], buckets=TIME_BUCKETS, registry=r)
        self.queue_time = Histogram("ponder_queue_seconds", "Time spent waiting for an engine slot", ["lane"], buckets=TIME_BUCKETS, registry=r)
        self.class_wait = Histogram("ponder_queue_wait_seconds", "Time waiting for an engine slot by scheduling "
                                    "class and key", ["class", "key"], buckets=TIME_BUCKETS, registry=r)
        self.cost = Counter("ponder_cost_usd", "Dollars spent (configured prices)", ["lane"], registry=r)
        self.in_flight = Gauge("ponder_in_flight_requests", "Requests being served", ["lane"], registry=r)
        self.queue_depth = Gauge("ponder_queue_depth", "Sequences waiting for an engine slot", ["engine"], registry=r)
        self.engine_active = Gauge("ponder_engine_active_sequences", "Sequences decoding in an engine", ["engine"], registry=r)
        self.engine_threads = Gauge("ponder_engine_threads", "llama.cpp threads an embedded engine decodes with "
                                    "(backed off when decoding collapses on a shared CPU)", ["engine"], registry=r)
        self.decode_rate = Gauge("ponder_engine_decode_tokens_per_second", "Tokens an embedded engine decoded per "
                                 "second over its last window of decode steps", ["engine"], registry=r)
        self.preemptions = Gauge("ponder_engine_preemptions", "Sequences an embedded engine paused for a more "
                                 "urgent class (since start)", ["engine"], registry=r)
        self.resumed = Gauge("ponder_engine_resumed", "Paused sequences an embedded engine resumed (since start)",
                             ["engine"], registry=r)
        self.kv_saved = Gauge("ponder_engine_kv_saved", "Paused sequences an embedded engine saved out of its KV "
                              "cache to make room for a more urgent class (since start)", ["engine"], registry=r)
        self.kv_restored = Gauge("ponder_engine_kv_restored", "Saved sequences an embedded engine restored into its "
                                 "KV cache (since start)", ["engine"], registry=r)
        self.cancelled = Counter("ponder_cancelled", "Generations stopped because the client left", ["lane"], registry=r)
        self.degraded = Counter("ponder_degraded", "Requests admitted with a lowered effort (load shedding)", ["lane"], registry=r)
        self.fallbacks = Counter("ponder_fallbacks", "Requests answered by a fallback lane", ["lane"], registry=r)
        self.errors = Counter("ponder_errors", "Failed requests by error code", ["lane", "code"], registry=r)
        self.thinking_in_flight = Gauge("ponder_thinking_tokens_in_flight", "Thinking-token caps of admitted, unfinished requests", registry=r)
        self.key_requests = Counter("ponder_key_requests", "Requests per API key", ["key", "status"], registry=r)
        self.key_tokens = Counter("ponder_key_tokens", "Tokens per API key", ["key", "kind"], registry=r)
        self.key_cost = Counter("ponder_key_cost_usd", "Dollars per API key", ["key"], registry=r)
        self.cache = Counter("ponder_cache", "Answer cache lookups", ["result"], registry=r)
        self.flags = Counter("ponder_flags", "Answers flagged (give_up, disagreement, ...: see ponder.flags)",
                             ["lane", "flag"], registry=r)
        self.anomalies = Counter("ponder_thinking_anomaly", "Requests (or a key's minute of spend) far above their "
                                 "rolling baseline", ["scope", "subject"], registry=r)
        self.cap_eta = Gauge("ponder_key_cap_eta_seconds", "When a key reaches a cap at its recent burn rate",
                             ["key", "cap"], registry=r)
        self.guard_actions = Counter("ponder_guard_actions", "Guard actions taken on flagged answers",
                                     ["lane", "action"], registry=r)
        # a lane's fleet of engine replicas (read from the engine at scrape time)
        self.replica_in_flight = Gauge("ponder_upstream_replica_in_flight", "Calls in flight on an engine replica",
                                       ["lane", "replica"], registry=r)
        self.replica_calls = Gauge("ponder_upstream_replica_calls", "Calls sent to an engine replica",
                                   ["lane", "replica"], registry=r)
        self.replica_errors = Gauge("ponder_upstream_replica_errors", "Failed calls of an engine replica",
                                    ["lane", "replica"], registry=r)
        self.replica_ejections = Gauge("ponder_upstream_replica_ejections", "Times an engine replica was ejected",
                                       ["lane", "replica"], registry=r)
        self.replica_ejected = Gauge("ponder_upstream_replica_ejected", "1 while an engine replica is ejected",
                                     ["lane", "replica"], registry=r)
        self._lanes: dict[str, tuple] = {}
        self._keys_c: dict[str, tuple] = {}

    def _lane(self, lane: str) -> tuple:
        """The per-lane series (label lookups cost microseconds each; a request touches a dozen)."""
        c = self._lanes.get(lane)
        if c is None:
            c = (self.thinking_tokens.labels(lane), self.answer_tokens.labels(lane), self.prompt_tokens.labels(lane),
                 self.cost.labels(lane), self.ttft.labels(lane), self.tta.labels(lane), self.duration.labels(lane),
                 self.queue_time.labels(lane))
            self._lanes[lane] = c
        return c

    def _key(self, key: str) -> tuple:
        c = self._keys_c.get(key)
        if c is None:
            c = (self.key_tokens.labels(key, "input"), self.key_tokens.labels(key, "thinking"),
                 self.key_tokens.labels(key, "answer"), self.key_cost.labels(key))
            self._keys_c[key] = c
        return c

    def key_label(self, key: str | None) -> str:
        return key if key in self._keys else "anonymous"

    def refused(self, lane: str, status: int, code: str | None, key: str | None = None) -> None:
        """A request refused before it ran (bad input, auth, quota, overload)."""
        self.requests.labels(lane, str(status)).inc()
        self.errors.labels(lane, code or "error").inc()
        self.key_requests.labels(self.key_label(key), str(status)).inc()

    def record(self, outcome) -> None:
        lane = outcome.lane
        status = str(outcome.status)
        u = outcome.usage
        thinking, answer, prompt, cost, ttft, tta, duration, queue = self._lane(lane)
        self.requests.labels(lane, status).inc()
        thinking.observe(u.thinking_tokens)
        answer.observe(u.answer_tokens)
        prompt.inc(u.input_tokens)
        cost.inc(max(0.0, outcome.cost_usd))
        t = outcome.timings
        if t.ttft_s is not None:
            ttft.observe(t.ttft_s)
        if t.time_to_answer_s is not None:
            tta.observe(t.time_to_answer_s)
        duration.observe(t.total_s)
        queue.observe(t.queue_s)
        from ponder.config_ops import CLASSES

        self.class_wait.labels(CLASSES[min(outcome.plan.priority, 2)], self.key_label(outcome.key)).observe(t.queue_s)
        if outcome.status == 499:
            self.cancelled.labels(lane).inc()
        elif outcome.error is not None:
            self.errors.labels(lane, outcome.error.code or outcome.error.type).inc()
        if outcome.plan.degraded:
            self.degraded.labels(lane).inc()
        c = outcome.extra.get("cache")
        if c is not None:
            self.cache.labels("hit" if c.get("hit") else "miss").inc()
        if lane != outcome.plan.lane.name:
            self.fallbacks.labels(lane).inc()
        self._flags(lane, outcome.extra)
        k = self.key_label(outcome.key)
        self.key_requests.labels(k, status).inc()
        k_in, k_think, k_answer, k_cost = self._key(k)
        k_in.inc(u.input_tokens)
        k_think.inc(u.thinking_tokens)
        k_answer.inc(u.answer_tokens)
        k_cost.inc(max(0.0, outcome.cost_usd))

    def _flags(self, lane: str, extra: dict) -> None:
        """Every checked answer's flags: the returned ones, and those of answers a guard action replaced."""
        for f in extra.get("flags") or []:
            self.flags.labels(lane, f["flag"]).inc()
        for g in guard_records(extra):
            if "skipped" not in g:
                self.guard_actions.labels(lane, g["action"]).inc()
                for f in g.get("flags_before") or []:
                    self.flags.labels(lane, f["flag"]).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
