"""Prometheus metrics of one gateway (own registry: no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

TOKEN_BUCKETS = (0, 16, 64, 256, 1024, 4096, 16384, 65536)
TIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ponder_requests", "Chat requests by lane and HTTP status", ["lane", "status"], registry=r)
        self.thinking_tokens = Histogram("ponder_thinking_tokens", "Thinking tokens per request", ["lane"], buckets=TOKEN_BUCKETS, registry=r)
        self.answer_tokens = Histogram("ponder_answer_tokens", "Answer tokens per request", ["lane"], buckets=TOKEN_BUCKETS, registry=r)
        self.prompt_tokens = Counter("ponder_prompt_tokens", "Prompt tokens", ["lane"], registry=r)
        self.ttft = Histogram("ponder_time_to_first_token_seconds", "Time to first token (thinking or answer)", ["lane"], buckets=TIME_BUCKETS, registry=r)
        self.tta = Histogram("ponder_time_to_answer_seconds", "Time to the first answer token", ["lane"], buckets=TIME_BUCKETS, registry=r)
        self.queue_time = Histogram("ponder_queue_seconds", "Time spent waiting for an engine", ["lane"], buckets=TIME_BUCKETS, registry=r)
        self.cost = Counter("ponder_cost_usd", "Dollars spent (configured prices)", ["lane"], registry=r)
        self.in_flight = Gauge("ponder_in_flight_requests", "Requests being generated", ["lane"], registry=r)
        self.queue_depth = Gauge("ponder_queue_depth", "Requests waiting for an engine", ["lane"], registry=r)
        self.cancelled = Counter("ponder_cancelled", "Generations stopped because the client left", ["lane"], registry=r)
        self.degraded = Counter("ponder_degraded", "Requests admitted with a lowered effort (load shedding)", ["lane"], registry=r)
        self.thinking_in_flight = Gauge("ponder_thinking_tokens_in_flight", "Thinking-token caps of admitted, unfinished requests", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
