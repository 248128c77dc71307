"""Hostile input against a real gateway: bounded work, clear 4xx bodies, nothing lost (real model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from servers import Gateway

pytestmark = pytest.mark.model
Q = [{"role": "user", "content": "What is 12 + 7?"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    g = Gateway({"lanes": [{"name": "default", "n_ctx": 256}, {"name": "strict", "n_ctx": 256}],
                 "policy": "off", "server": {"max_body_bytes": 2_000_000},
                 "ledger": {"url": f"jsonl:///{tmp / 'ledger.jsonl'}"}}, tmp)
    g.ledger = tmp / "ledger.jsonl"
    yield g
    g.stop()


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def post_raw(gw, data: bytes, **kw):
    return httpx.post(gw.url("/v1/chat/completions"), content=data, headers={"content-type": "application/json"},
                      timeout=30, **kw)


def test_lone_surrogate_is_a_400_naming_the_field(gw):
    r = post_raw(gw, b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}')
    assert r.status_code == 400
    e = r.json()["error"]
    assert e["param"] == "messages.0.content" and "surrogate" in e["message"]


def test_json_nested_thousands_deep_in_an_ignored_field_is_a_400(gw):
    deep = b'{"messages": [{"role": "user", "content": "hi"}], "user_data": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    t0 = time.perf_counter()
    r = post_raw(gw, deep)
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("chunked", [False, True])
def test_fifty_megabyte_body_is_refused_fast_with_bounded_memory(gw, chunked):
    before = rss_kb(gw.proc.pid)
    body = b'{"messages": [{"role": "user", "content": "' + b"a" * (50 * 1024 * 1024) + b'"}]}'
    t0 = time.perf_counter()
    content = (body[i:i + 65536] for i in range(0, len(body), 65536)) if chunked else body
    try:
        r = httpx.post(gw.url("/v1/chat/completions"), content=content, timeout=30,
                       headers={"content-type": "application/json"})
        status = r.status_code
        assert status == 413 and r.json()["error"]["code"] == "request_too_large"
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        status = 413  # the gateway answered and closed while the client was still sending 50 MB
    assert time.perf_counter() - t0 < 1.0 + 1.0
    assert rss_kb(gw.proc.pid) - before < 40_000, "the gateway must not buffer the body"
    assert httpx.get(gw.url("/health"), timeout=5).status_code == 200


@pytest.mark.parametrize("field, value", [("stream", "yes"), ("max_thinking_tokens", True), ("n", "2"),
                                          ("temperature", "0.5"), ("messages", "hi")])
def test_lax_types_are_refused(gw, field, value):
    r = httpx.post(gw.url("/v1/chat/completions"), json={"messages": Q, field: value}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == field


def test_too_many_messages_and_oversized_ones_are_refused_before_work(gw):
    r = httpx.post(gw.url("/v1/chat/completions"), json={"messages": Q * 600}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = httpx.post(gw.url("/v1/chat/completions"), json={"messages": [{"role": "user", "content": "x" * 300_000}]},
                   timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.content"


def test_a_budget_that_cannot_fit_is_clamped_up_front_and_said_so(gw):
    t0 = time.perf_counter()
    r = httpx.post(gw.url("/v1/chat/completions"), json={
        "messages": Q, "max_thinking_tokens": 100_000, "min_thinking_tokens": 100_000, "max_tokens": 16,
        "thinking": {"visibility": "hidden"}}, timeout=120)
    assert r.status_code == 200, r.text
    p, u = r.json()["ponder"], r.json()["usage"]
    c = p["clamped"]["max_thinking_tokens"]
    assert c["from"] == 100_000 and c["to"] < 256 and c["why"] == "context"
    assert p["thinking"]["budget"] == c["to"] and u["completion_tokens_details"]["reasoning_tokens"] <= c["to"]
    assert u["prompt_tokens"] + u["completion_tokens"] <= 256
    assert time.perf_counter() - t0 < 60


def test_a_budget_that_cannot_fit_is_refused_when_the_server_says_reject(tmp_path):
    g = Gateway({"lanes": [{"name": "default", "n_ctx": 256}], "policy": "off",
                 "server": {"budget_overflow": "reject"}, "ledger": {"url": "off"}}, tmp_path)
    try:
        r = httpx.post(g.url("/v1/chat/completions"), json={"messages": Q, "max_thinking_tokens": 100_000},
                       timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_thinking_tokens"
        assert r.json()["error"]["code"] == "context_length_exceeded"
    finally:
        g.stop()


def test_openapi_documents_the_full_request_body(gw):
    spec = httpx.get(gw.url("/openapi.json"), timeout=10).json()
    op = spec["paths"]["/v1/chat/completions"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    props = schema["properties"]
    for f in ("messages", "max_thinking_tokens", "min_thinking_tokens", "reasoning_effort", "ponder", "thinking",
              "response_format", "stream"):
        assert f in props, f
    assert "messages" in schema["required"]
    assert "PonderOptions" in spec["components"]["schemas"]


def test_unknown_routes_and_models_get_openai_bodies(gw):
    r = httpx.get(gw.url("/v2/nothing"), timeout=5)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(gw.url("/v1/models/nope"), timeout=5)
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    assert httpx.get(gw.url("/v1/models/default"), timeout=5).json()["id"] == "default"
    r = httpx.get(gw.url("/v1/chat/completions"), timeout=5)
    assert r.status_code == 405 and "error" in r.json()


def test_kill_9_mid_stream_leaves_an_interrupted_row_with_its_streamed_tokens(tmp_path):
    db = tmp_path / "ledger.db"
    config = {"lanes": [{"name": "default", "n_ctx": 2048, "prices": {"input_per_1m": 1.0, "output_per_1m": 2.0}}],
              "policy": "off", "thinking": {"loop_guard": {"enabled": False}},
              "ledger": {"url": f"sqlite:///{db}", "flush_interval_s": 0.5}}
    g = Gateway(config, tmp_path)
    seen = {"chunks": 0}

    def stream():
        body = {"messages": Q, "stream": True, "max_thinking_tokens": 1500, "min_thinking_tokens": 1500}
        try:
            with httpx.stream("POST", g.url("/v1/chat/completions"), json=body, timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        seen["chunks"] += 1
        except httpx.HTTPError:
            pass

    t = threading.Thread(target=stream)
    t.start()
    deadline = time.time() + 60
    while seen["chunks"] < 60 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.2)  # at least two write-ahead flushes
    os.kill(g.proc.pid, signal.SIGKILL)
    g.proc.wait(10)
    t.join(10)
    streamed = seen["chunks"]
    # a restarted server comes up on the same ledger; `ponder usage` reports the interrupted request
    g2 = Gateway(config, tmp_path)
    try:
        p = subprocess.run([sys.executable, "-m", "ponder.cli", "usage", "--ledger", f"sqlite:///{db}", "--json",
                            "--requests"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        rows = json.loads(p.stdout)["rows"]
        assert len(rows) == 1
        row = rows[0]
        assert row["status"] == "interrupted"
        # the row bills what the engine generated up to the last flush: at least the 60 chunks seen 1.2 s before
        # the kill (less slack for one flush interval), never more than the request's cap.  Not compared with the
        # chunk count: under CPU contention one chunk carries several tokens, and the engine runs ahead of the
        # socket writer
        assert streamed >= 60
        assert 30 <= row["thinking_tokens"] <= 1500
        # ...and the prompt it had read: a running sample bills its prompt from its first token on
        assert row["prompt_tokens"] > 0 and row["cost_usd"] > 0
    finally:
        g2.stop()


def test_a_client_that_hangs_up_mid_body_is_a_counted_499_not_a_traceback(gw):
    import socket

    before = gw.metric("ponder_requests_total", status="499")
    body = json.dumps({"messages": Q}).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: %d\r\n\r\n" % len(body) + body[:10])
        time.sleep(0.3)  # the headers are in: the handler is reading the body when the client goes
    deadline = time.time() + 10
    while gw.metric("ponder_requests_total", status="499") < before + 1 and time.time() < deadline:
        time.sleep(0.1)
    assert gw.metric("ponder_requests_total", status="499") == before + 1
    assert "Traceback" not in gw.log.read_text()
    assert httpx.post(gw.url("/v1/chat/completions"), json={"messages": Q, "max_tokens": 4}, timeout=60).status_code == 200


def test_405_names_the_allowed_methods_and_openapi_lists_every_answer(gw):
    for method, path, allow in (("GET", "/v1/chat/completions", "POST"), ("GET", "/v1/responses", "POST"),
                                ("POST", "/health", "GET"), ("DELETE", "/v1/models", "GET")):
        r = httpx.request(method, gw.url(path), timeout=10)
        assert r.status_code == 405 and r.headers.get("allow") == allow, (path, r.headers)
        assert r.json()["error"]["code"] == "method_not_allowed"
    spec = httpx.get(gw.url("/openapi.json"), timeout=10).json()["paths"]
    assert "404" in spec["/v1/models/{model_id}"]["get"]["responses"]
    assert list(spec["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain; version=0.0.4"]
    assert {"/v1/chat/completions", "/v1/responses", "/v1/messages"} <= set(spec)
