"""OpenTelemetry traces of requests (GenAI semantic conventions), and nothing at all when they are off.

One span per request (``chat {model}``, with the request's tokens, cost,
lane, strategy and thinking budget), and under it one span per sample
(``sample``: its thinking and answer tokens, how its thinking stopped), per
tool call (``execute_tool {name}``), per upstream call (``POST {path}`` on
an engine replica) and per answer-cache lookup.

While a request runs, what happens is only *collected* — a few tuples on a
:class:`Trace` reached through a context variable, from the run's own task
and the tasks it starts — and the spans are made at its end with their real
start and end times.  With ``telemetry.otlp_endpoint`` unset there is no
trace: every collection point is one context-variable read
(``bench/gateway.py`` measures it), and the OpenTelemetry SDK is not even
imported.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from typing import Any, Iterator

log = logging.getLogger("ponder.telemetry")

#: the running request's trace (None: telemetry off, or outside a request)
CURRENT: contextvars.ContextVar["Trace | None"] = contextvars.ContextVar("ponder_trace", default=None)


class Trace:
    """What one request did, collected as (name, start, end, attributes, parent) with wall-clock seconds."""

    __slots__ = ("events", "samples", "started")

    def __init__(self) -> None:
        self.events: list[tuple[str, float, float, dict, Any]] = []
        #: (choice, sample id) -> [first event time, end time, attributes]
        self.samples: dict[tuple[int, int], list] = {}
        self.started = time.time()

    def sample_seen(self, choice: int, sid: int) -> None:
        if (choice, sid) not in self.samples:
            self.samples[(choice, sid)] = [time.time(), None, {}]

    def sample_done(self, choice: int, sid: int, generation: Any) -> None:
        rec = self.samples.setdefault((choice, sid), [time.time(), None, {}])
        rep, u = generation.thinking_report, generation.usage
        rec[1] = time.time()
        rec[2] = {"ponder.choice": choice, "ponder.sample": sid, "gen_ai.usage.input_tokens": u.input_tokens,
                  "gen_ai.usage.output_tokens": u.completion_tokens, "ponder.thinking_tokens": u.thinking_tokens,
                  "ponder.answer_tokens": u.answer_tokens, "ponder.thinking.stopped": rep.stopped,
                  "gen_ai.response.finish_reasons": (generation.finish_reason,)}

    def add(self, name: str, start: float, end: float, attributes: dict) -> None:
        self.events.append((name, start, end, attributes, None))


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[dict]:
    """Record a child span of the running request (nothing when telemetry is off); yields its attributes."""
    trace = CURRENT.get()
    if trace is None:
        yield attributes
        return
    start = time.time()
    try:
        yield attributes
    except BaseException as exc:
        attributes["error.type"] = type(exc).__name__
        raise
    finally:
        trace.add(name, start, time.time(), attributes)


class Telemetry:
    """The tracer, set up from ``telemetry`` config (or given a provider, as the tests do)."""

    def __init__(self, endpoint: str | None = None, *, service_name: str = "ponder", provider: Any = None) -> None:
        from opentelemetry import trace as ot

        if provider is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self.provider = provider
        self.tracer = provider.get_tracer("ponder")
        self._ot = ot

    def begin(self) -> contextvars.Token:
        """Start collecting for the request running in this task (and the tasks it starts)."""
        return CURRENT.set(Trace())

    def end(self, token: contextvars.Token, outcome: Any, started_wall: float) -> None:
        trace = CURRENT.get()
        CURRENT.reset(token)
        if trace is None:
            return
        try:
            self._emit(trace, outcome, started_wall)
        except Exception:  # a trace must never take a response down
            log.exception("could not record the trace of request %s", getattr(outcome, "id", "?"))

    def _emit(self, trace: Trace, outcome: Any, started_wall: float) -> None:
        ns = lambda t: int(t * 1e9)  # noqa: E731
        end = time.time()
        root = self.tracer.start_span(f"chat {outcome.model}", start_time=ns(started_wall),
                                      kind=self._ot.SpanKind.SERVER, attributes=request_attributes(outcome))
        if not outcome.ok:
            root.set_status(self._ot.Status(self._ot.StatusCode.ERROR, outcome.error.message if outcome.error
                                            else str(outcome.status)))
        ctx = self._ot.set_span_in_context(root)
        for (choice, sid), (t0, t1, attrs) in sorted(trace.samples.items()):
            s = self.tracer.start_span("sample", context=ctx, start_time=ns(t0), attributes=attrs)
            s.end(end_time=ns(t1 or end))
        for name, t0, t1, attrs, _ in trace.events:
            s = self.tracer.start_span(name, context=ctx, start_time=ns(t0),
                                       kind=self._ot.SpanKind.CLIENT if name.startswith("POST") else
                                       self._ot.SpanKind.INTERNAL,
                                       attributes={k: v for k, v in attrs.items() if v is not None})
            if "error.type" in attrs:
                s.set_status(self._ot.Status(self._ot.StatusCode.ERROR, attrs["error.type"]))
            s.end(end_time=ns(t1))
        root.end(end_time=ns(end))

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.provider.shutdown()


def request_attributes(outcome: Any) -> dict:
    """GenAI semantic-convention attributes of the request span, plus ponder's own."""
    u, plan = outcome.usage, outcome.plan
    return {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "ponder", "gen_ai.request.model": plan.lane.name,
        "gen_ai.response.model": outcome.model, "gen_ai.response.id": outcome.id,
        "gen_ai.request.max_tokens": plan.sampling.max_answer_tokens, "gen_ai.request.temperature":
            plan.sampling.temperature, "gen_ai.usage.input_tokens": u.input_tokens,
        "gen_ai.usage.output_tokens": u.completion_tokens, "ponder.thinking_tokens": u.thinking_tokens,
        "ponder.thinking.budget": plan.budget.max_tokens, "ponder.lane": outcome.lane,
        "ponder.strategy": plan.strategy, "ponder.cost_usd": float(outcome.cost_usd),
        "ponder.samples": sum(r.n_samples for r in outcome.results), "http.response.status_code": outcome.status,
        "ponder.key": outcome.key or "", "ponder.flags": tuple(f["flag"] for f in outcome.extra.get("flags") or []),
    }


def build_telemetry(config: Any) -> "Telemetry | None":
    """The configured tracer, or None (telemetry off: no SDK import, no collection)."""
    endpoint = config.telemetry.otlp_endpoint
    if not endpoint:
        return None
    try:
        return Telemetry(endpoint, service_name=config.telemetry.service_name)
    except ImportError:
        from ponder.errors import ConfigError

        raise ConfigError("telemetry.otlp_endpoint needs the OpenTelemetry SDK: pip install 'ponder[otel]'",
                          param="telemetry.otlp_endpoint") from None
