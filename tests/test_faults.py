"""Fault injection: a real gateway in front of a real upstream that misbehaves (hangs, 500s, cuts, drips, resets).

Every case must end within its deadline plus a second, with the right status
(or an error event once the stream has started), a ledger row and a metric —
never as a success it was not.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from faulty import Faulty
from ponder.ledger import read_jsonl
from servers import Gateway

Q = [{"role": "user", "content": "What is 12 + 7?"}]
TIMEOUT = 2.0
PRICES = {"input_per_1m": 1.0, "output_per_1m": 100.0}
MODES = ("ok", "hang", "500", "429", "malformed", "cut", "drip", "reset", "json", "garbage", "usage", "stall", "think")


@pytest.fixture(scope="module")
def faulty():
    f = Faulty()
    yield f
    f.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, faulty):
    tmp = tmp_path_factory.mktemp("faults")
    lanes = [{"name": m, "backend": "openai", "base_url": faulty.url, "upstream_model": m, "timeout_s": TIMEOUT,
              "retries": 0, "effort": "none", "native_reasoning": True, "prices": PRICES} for m in MODES]
    lanes += [
        {"name": "flaky", "backend": "openai", "base_url": faulty.url, "upstream_model": "cut", "timeout_s": TIMEOUT,
         "retries": 0, "effort": "none", "fallbacks": ["ok"], "prices": PRICES},
        {"name": "slowpoke", "backend": "openai", "base_url": faulty.url, "upstream_model": "hang", "timeout_s": 30,
         "retries": 0, "effort": "none", "prices": PRICES},
        {"name": "unreachable", "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "timeout_s": TIMEOUT,
         "retries": 2, "retry_backoff_s": 0.05, "effort": "none", "fallbacks": ["ok"], "prices": PRICES},
        {"name": "resetting", "backend": "openai", "base_url": faulty.url, "upstream_model": "reset",
         "timeout_s": TIMEOUT, "retries": 1, "retry_backoff_s": 0.05, "effort": "none", "fallbacks": ["ok"],
         "prices": PRICES},
    ]
    config = {"server": {"progress_interval_s": 0.2}, "ledger": {"url": f"jsonl:///{tmp / 'ledger.jsonl'}"},
              "policy": "off", "lanes": lanes}
    g = Gateway(config, tmp)
    g.ledger = tmp / "ledger.jsonl"
    yield g
    g.stop()


def post(gw, lane, *, stream=False, timeout=30, **extra):
    return httpx.post(gw.url("/v1/chat/completions"), json={"model": lane, "messages": Q, "stream": stream, **extra},
                      timeout=timeout)


def ledger_row(gw, rid=None):
    time.sleep(0.3)  # the ledger is appended when the run ends
    rows = read_jsonl(gw.ledger)
    if rid is None:
        return rows[-1]
    return next(r for r in rows if r["id"] == rid)


def sse_events(text: str) -> list:
    out = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


@pytest.mark.parametrize("lane, status, code", [
    ("hang", 504, "upstream_timeout"),
    ("drip", 504, "upstream_timeout"),
    ("500", 502, "upstream_error"),
    ("malformed", 502, "upstream_error"),
    ("cut", 502, "upstream_error"),
    ("reset", 502, "upstream_unreachable"),  # before any byte: the retryable case (retries: 0 here)
    ("json", 502, "upstream_error"),
    ("garbage", 502, "upstream_error"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_each_fault_ends_in_time_with_its_status_a_ledger_row_and_a_metric(gw, faulty, lane, status, code, stream):
    before = gw.metric("ponder_requests_total", lane=lane, status=str(status))
    t0 = time.perf_counter()
    r = post(gw, lane, stream=stream)
    elapsed = time.perf_counter() - t0
    assert elapsed <= TIMEOUT + 1.0, f"{lane}: {elapsed:.2f}s"
    if r.status_code == 200:
        # the stream had started (content already sent): it must end with an error event, never [DONE]
        assert stream and lane == "cut"
        events = sse_events(r.text)
        assert "[DONE]" not in events
        assert events[-1]["error"]["code"] == code
        assert any(e.get("choices") and e["choices"][0]["delta"].get("content") for e in events[:-1])
    else:
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["code"] == code and err["message"]
        assert "127.0.0.1" not in r.text and "secret" not in r.text
    row = ledger_row(gw)
    assert row["lane"] == lane and row["status"] == "error" and row["http_status"] == status
    assert gw.metric("ponder_requests_total", lane=lane, status=str(status)) == before + 1


def test_upstream_429_passes_through_with_its_retry_after(gw):
    r = post(gw, "429")
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["type"] == "rate_limit_error"


def test_absurd_upstream_usage_is_not_billed(gw):
    r = post(gw, "usage", max_tokens=16)
    assert r.status_code == 200
    u = r.json()["usage"]
    assert u["prompt_tokens"] < 1000 and u["completion_tokens"] <= 16
    assert r.json()["ponder"]["cost_usd"] < 0.01
    row = ledger_row(gw, r.json()["id"])
    assert row["prompt_tokens"] < 1000 and row["cost_usd"] < 0.01


def test_fallback_answers_from_the_second_lane_and_prices_both_attempts(gw):
    r = post(gw, "flaky", max_tokens=16)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "19"
    attempts = body["ponder"]["attempts"]
    assert [a["lane"] for a in attempts] == ["flaky", "ok"]
    assert attempts[0]["status"] == 502 and attempts[1]["status"] == 200
    # the cut attempt streamed tokens before failing: they are billed at its lane's prices
    assert attempts[0]["usage"]["completion_tokens"] > 0 and attempts[0]["cost_usd"] > 0
    assert body["ponder"]["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in attempts), rel=1e-6)
    assert body["usage"]["completion_tokens"] == sum(a["usage"]["completion_tokens"] for a in attempts)
    assert body["ponder"]["lane"] == "ok"


def test_connection_refused_is_retried_then_falls_back(gw):
    r = post(gw, "unreachable")
    assert r.status_code == 200, r.text
    attempts = r.json()["ponder"]["attempts"]
    assert [a["lane"] for a in attempts] == ["unreachable"] * 3 + ["ok"]
    assert all(a["status"] == 502 for a in attempts[:3])


def test_a_reset_before_any_byte_is_retried_like_a_refused_connection(gw):
    r = post(gw, "resetting")
    assert r.status_code == 200, r.text
    attempts = r.json()["ponder"]["attempts"]
    assert [(a["lane"], a["status"]) for a in attempts] == [("resetting", 502)] * 2 + [("ok", 200)]


def test_request_deadline_covers_the_whole_request(gw):
    t0 = time.perf_counter()
    r = httpx.post(gw.url("/v1/chat/completions"), json={"model": "slowpoke", "messages": Q},
                   headers={"x-ponder-deadline-s": "1"}, timeout=30)
    assert time.perf_counter() - t0 < 1 + 1.5
    assert r.status_code == 504


def test_client_leaving_a_stalled_stream_closes_the_upstream_at_once(gw, faulty):
    n_before = len(faulty.closed_within("stall"))
    with httpx.stream("POST", gw.url("/v1/chat/completions"), json={"model": "stall", "messages": Q,
                                                                    "stream": True}, timeout=30) as r:
        for line in r.iter_lines():
            if '"content":"thinking' in line:
                break
        t_left = time.monotonic()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        conns = [c for c in faulty.connections if c["model"] == "stall"][n_before:]
        if conns and conns[-1]["closed"]:
            break
        time.sleep(0.05)
    conns = [c for c in faulty.connections if c["model"] == "stall"][n_before:]
    assert conns and conns[-1]["closed"] is not None
    assert conns[-1]["closed"] - t_left < 1.0
    row = ledger_row(gw)
    assert row["http_status"] == 499 and row["status"] == "cancelled"


def test_client_leaving_before_the_upstreams_first_byte_is_a_499_and_closes_the_upstream(gw, faulty):
    """The stream's headers wait for the first event (so a failure gets a real status); a client that leaves in
    that wait must stop the run then, not when the lane's timeout_s (30 s here) runs out."""
    import socket

    n_before = len(faulty.closed_within("hang"))
    body = json.dumps({"model": "slowpoke", "messages": Q, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    time.sleep(0.8)  # the upstream has the call and says nothing
    s.close()
    t_left = time.monotonic()
    deadline = time.monotonic() + 5
    conns = []
    while time.monotonic() < deadline:
        conns = [c for c in faulty.connections if c["model"] == "hang"][n_before:]
        if conns and conns[-1]["closed"]:
            break
        time.sleep(0.05)
    assert conns and conns[-1]["closed"] is not None and conns[-1]["closed"] - t_left < 2.0
    row = ledger_row(gw)
    assert row["lane"] == "slowpoke" and row["http_status"] == 499 and row["status"] == "cancelled"


def test_streamed_success_from_a_thinking_upstream_ends_with_done_and_usage(gw):
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    stream = client.chat.completions.create(model="think", messages=Q, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"max_thinking_tokens": 32,
                                                        "thinking": {"visibility": "visible"}})
    text, reasoning, usage = "", "", None
    for c in stream:
        if c.choices:
            text += c.choices[0].delta.content or ""
            reasoning += (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        if c.usage:
            usage = c.usage
    assert text == "19" and reasoning == "Add the units."
    assert usage.completion_tokens_details.reasoning_tokens == 3 and usage.completion_tokens == 4


def test_openai_sdk_sees_a_mid_stream_failure_as_an_error(gw):
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    stream = client.chat.completions.create(model="cut", messages=Q, stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
