"""OpenTelemetry traces: a request's span, its samples, tool calls, upstream calls and cache lookups."""

from __future__ import annotations

import asyncio
import http.server
import threading

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from ponder.config import config_from_dict  # noqa: E402
from ponder.request import PonderRequest  # noqa: E402
from ponder.service import Ponder  # noqa: E402
from ponder.telemetry import CURRENT, Telemetry, build_telemetry  # noqa: E402
from ponder.types import Message  # noqa: E402


def traced(cfg: dict, **backends) -> tuple[Ponder, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    svc = Ponder(config_from_dict({"ledger": {"url": "off"}, **cfg}), backends=backends or None)
    svc.deps.telemetry = Telemetry(provider=provider)
    return svc, exporter


def run(svc: Ponder, **kw):
    async def go():
        plan = await svc.prepare(PonderRequest((Message("user", "What is 17 + 26?"),), **kw).validate())
        out = await svc.run(plan).execute()
        await svc.aclose()
        return out
    return asyncio.run(go())


@pytest.mark.model
def test_a_self_consistency_request_is_one_span_with_its_samples_under_it():
    svc, exporter = traced({"cache": {"enabled": True},
                            "lanes": [{"name": "default", "max_sequences": 4, "n_ctx": 1024}]})
    out = run(svc, strategy="self-consistency", params={"n": 4}, max_thinking_tokens=16, max_answer_tokens=8,
              seed=1)
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 1 and roots[0].name.startswith("chat ")
    root = roots[0]
    a = root.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["ponder.strategy"] == "self-consistency"
    assert a["gen_ai.usage.output_tokens"] == out.usage.completion_tokens and a["ponder.samples"] == 4
    samples = [s for s in spans if s.name == "sample"]
    assert len(samples) == 4 and all(s.parent.span_id == root.context.span_id for s in samples)
    assert sum(s.attributes["ponder.thinking_tokens"] for s in samples) == out.usage.thinking_tokens
    assert all(root.start_time <= s.start_time <= s.end_time <= root.end_time for s in samples)
    cache = [s for s in spans if s.name == "cache lookup"]
    assert len(cache) == 1 and cache[0].attributes["ponder.cache.hit"] is False


def test_upstream_calls_are_client_spans_and_a_failure_marks_the_request(upstream):
    lane = {"backend": "openai", "base_url": upstream.url, "native_reasoning": False, "retries": 0,
            "capabilities": "chat", "effort": "none"}
    svc, exporter = traced({"lanes": [{"name": "ok", "upstream_model": "ok", **lane},
                                      {"name": "bad", "upstream_model": "500", **lane}]})
    run(svc, model="ok")
    calls = [s for s in exporter.get_finished_spans() if s.name == "POST /chat/completions"]
    assert len(calls) == 1 and calls[0].attributes["server.address"] == upstream.url.rstrip("/")
    exporter.clear()
    svc2, exporter2 = traced({"lanes": [{"name": "bad", "upstream_model": "500", **lane}]})
    out = run(svc2, model="bad")
    spans = exporter2.get_finished_spans()
    root = next(s for s in spans if s.parent is None)
    assert out.status >= 500 and root.status.status_code.name == "ERROR"
    failed = [s for s in spans if s.name == "POST /chat/completions"]
    assert failed and failed[0].attributes["error.type"]


def test_off_means_no_tracer_and_no_collection():
    cfg = config_from_dict({"lanes": [{"name": "a"}], "ledger": {"url": "off"}})
    assert build_telemetry(cfg) is None
    assert CURRENT.get() is None


class OtlpSink(http.server.BaseHTTPRequestHandler):
    got: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        OtlpSink.got.append((self.path, self.headers["content-type"], body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *a):
        pass


def test_a_gateway_exports_its_spans_over_otlp_http(tmp_path):
    """A real gateway with ``telemetry.otlp_endpoint`` sends OTLP/HTTP protobuf to a local collector."""
    import httpx
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from conftest import free_port
    from servers import Gateway

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), OtlpSink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = {"ledger": {"url": "off"}, "server": {"access_log": False},
           "telemetry": {"otlp_endpoint": f"http://127.0.0.1:{port}/v1/traces", "service_name": "ponder-test"},
           "lanes": [{"name": "default", "max_sequences": 2, "n_ctx": 1024}]}
    g = Gateway(cfg, tmp_path)
    try:
        r = httpx.post(g.url("/v1/chat/completions"), timeout=60,
                       json={"messages": [{"role": "user", "content": "Hi"}], "max_thinking_tokens": 8,
                             "max_tokens": 8})
        assert r.status_code == 200
    finally:
        g.stop()  # shutting down flushes the batch
        server.shutdown()
    assert OtlpSink.got, "no OTLP export reached the collector"
    path, ctype, body = OtlpSink.got[0]
    assert path == "/v1/traces" and ctype == "application/x-protobuf"
    req = ExportTraceServiceRequest.FromString(body)
    res = req.resource_spans[0]
    service = {kv.key: kv.value.string_value for kv in res.resource.attributes}["service.name"]
    names = [s.name for ss in res.scope_spans for s in ss.spans]
    assert service == "ponder-test" and any(n.startswith("chat ") for n in names) and "sample" in names
