"""The gateway, started for real on 127.0.0.1 and driven with the openai SDK."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import openai
import pytest

from replay import Replay
from servers import Gateway

pytestmark = pytest.mark.model

Q = [{"role": "user", "content": "What is 12 + 7?"}]
PRICES = {"input_per_1m": 1.0, "output_per_1m": 4.0}


@pytest.fixture(scope="module")
def replay():
    r = Replay()
    r.script = [[{"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}]]
    yield r
    r.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, replay):
    tmp = tmp_path_factory.mktemp("gw")
    config = {
        "server": {"queue_size": 8, "progress_interval_s": 0.1, "summary_every_tokens": 16},
        "ledger": {"url": f"jsonl:///{tmp / 'ledger.jsonl'}"},
        "lanes": [
            {"name": "default", "n_ctx": 1024, "prices": PRICES},
            {"name": "upstream", "backend": "openai", "base_url": replay.url, "timeout_s": 1.0},
        ],
    }
    g = Gateway(config, tmp)
    g.ledger = tmp / "ledger.jsonl"
    yield g
    g.stop()


@pytest.fixture
def client(gw):
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=120)


def test_non_streaming_shape_usage_and_cost(client):
    r = client.chat.completions.create(model="default", messages=Q, max_tokens=24, seed=1,
                                       extra_body={"max_thinking_tokens": 32, "thinking": {"visibility": "visible"}})
    msg = r.choices[0].message
    assert msg.content
    extra = r.model_extra["ponder"]
    u = r.usage
    assert u.completion_tokens_details.reasoning_tokens == extra["thinking"]["used"] <= 32
    # the answer's tokens are exactly what streamed as content: re-count them with the model's own tokenizer
    assert u.completion_tokens > u.completion_tokens_details.reasoning_tokens
    assert u.prompt_tokens_details.cached_tokens <= u.prompt_tokens
    if extra["thinking"]["used"]:
        assert msg.model_extra["reasoning_content"]
    expected = (u.prompt_tokens * PRICES["input_per_1m"] + u.completion_tokens * PRICES["output_per_1m"]) / 1e6
    assert extra["cost_usd"] == pytest.approx(expected, rel=1e-6)
    t = extra["timings"]
    assert t["total_s"] >= t["ttft_s"] > 0 and t["queue_s"] >= 0 and t["preempted_s"] == 0.0  # alone: never paused
    assert extra["lane"] == "default" and extra["thinking"]["budget"] == 32


def test_stream_visible_reasoning_then_answer_with_usage(client):
    stream = client.chat.completions.create(
        model="default", messages=Q, max_tokens=16, seed=2, stream=True, stream_options={"include_usage": True},
        extra_body={"max_thinking_tokens": 24, "min_thinking_tokens": 12, "thinking": {"visibility": "visible"}})
    kinds, final = [], None
    for c in stream:
        if c.choices:
            d = c.choices[0].delta
            if (d.model_extra or {}).get("reasoning_content"):
                kinds.append("r")
            if d.content:
                kinds.append("a")
        if c.usage is not None:
            final = c
    assert kinds.count("r") >= 12, "thinking must stream token by token"
    assert final is not None
    if final.model_extra["ponder"].get("answer_source") == "thinking":
        # the model ended its turn inside the think: its stated result arrives as content, once
        assert kinds.count("a") == 1, "an answer taken from the thinking is still sent as content"
    else:
        assert kinds.count("a") >= 2, "the answer must stream token by token"
    assert "r" not in kinds[kinds.index("a"):], "no thinking after the answer started"
    assert final is not None and final.model_extra["ponder"]["thinking"]["used"] >= 12
    assert final.usage.completion_tokens_details.reasoning_tokens == final.model_extra["ponder"]["thinking"]["used"]


def test_stream_hidden_sends_progress_not_thinking(client):
    stream = client.chat.completions.create(
        model="default", messages=Q, max_tokens=8, seed=3, stream=True, stream_options={"include_usage": True},
        extra_body={"max_thinking_tokens": 120, "min_thinking_tokens": 100, "thinking": {"visibility": "hidden"}})
    progress, leaked = [], False
    for c in stream:
        p = (c.model_extra or {}).get("ponder") or {}
        if "progress" in p:
            progress.append(p["progress"]["thinking_tokens"])
        if c.choices and (c.choices[0].delta.model_extra or {}).get("reasoning_content"):
            leaked = True
    assert not leaked
    assert len(progress) >= 2
    assert progress == sorted(progress) and progress[-1] > 0


def test_stream_summary_mode_emits_summaries_only(client):
    stream = client.chat.completions.create(
        model="default", messages=Q, max_tokens=8, seed=4, stream=True, stream_options={"include_usage": True},
        extra_body={"max_thinking_tokens": 48, "min_thinking_tokens": 40, "thinking": {"visibility": "summary"}})
    summaries, reasoning_chunks, final = 0, 0, None
    for c in stream:
        p = (c.model_extra or {}).get("ponder") or {}
        if "summary" in p:
            summaries += 1
        if c.choices and (c.choices[0].delta.model_extra or {}).get("reasoning_content"):
            reasoning_chunks += 1
            assert "summary" in p, "only summaries may travel as reasoning_content"
        if c.usage is not None:
            final = c
    assert summaries >= 2 and reasoning_chunks == summaries
    assert final.model_extra["ponder"]["summaries"]["count"] == summaries


def test_async_client_stream_and_plain(gw):
    async def go():
        c = openai.AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=120)
        r = await c.chat.completions.create(model="default", messages=Q, max_tokens=8,
                                            extra_body={"reasoning_effort": "none"})
        text = ""
        async for ch in await c.chat.completions.create(model="default", messages=Q, max_tokens=8, stream=True,
                                                         extra_body={"reasoning_effort": "none"}):
            if ch.choices and ch.choices[0].delta.content:
                text += ch.choices[0].delta.content
        await c.close()
        return r, text
    r, text = asyncio.run(go())
    assert r.choices[0].message.content and r.usage.completion_tokens_details.reasoning_tokens == 0
    assert text


def test_n_choices(client):
    r = client.chat.completions.create(model="default", messages=Q, n=2, max_tokens=8, seed=5,
                                       extra_body={"reasoning_effort": "none"})
    assert [c.index for c in r.choices] == [0, 1]
    assert r.model_extra["ponder"]["samples"] == 2


def test_multi_turn_and_system_prompt(client):
    r = client.chat.completions.create(model="default", max_tokens=8, extra_body={"reasoning_effort": "none"}, messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is 1 + 1?"},
    ])
    assert r.choices[0].message.content


@pytest.mark.parametrize("body, param", [
    ({"messages": Q, "temperature": "hot"}, "temperature"),
    ({"messages": Q, "ponder": {"strategy": "single", "bogus": 1}}, "ponder.bogus"),
    ({"messages": []}, "messages"),
    ({"messages": Q, "max_thinking_tokens": -1}, "max_thinking_tokens"),
    ({"messages": Q, "max_thinking_tokens": 10**9}, "max_thinking_tokens"),
    ({"messages": Q, "reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"messages": Q, "ponder": {"strategy": "telepathy"}}, "ponder.strategy"),
    ({"messages": Q, "thinking": {"visibility": "loud"}}, "thinking.visibility"),
    ({"messages": [{"role": "user", "content": "word " * 3000}]}, "messages"),
])
def test_bad_requests_get_openai_error_bodies(client, body, param):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="default", **{k: v for k, v in body.items() if k in ("messages", "temperature")},
                                       extra_body={k: v for k, v in body.items() if k not in ("messages", "temperature")})
    e = err.value.body
    assert e["param"] == param and e["type"] == "invalid_request_error" and e["message"]


def test_malformed_json_and_unknown_model(gw):
    r = httpx.post(gw.url("/v1/chat/completions"), content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    r = httpx.post(gw.url("/v1/chat/completions"), json={"model": "gpt-9", "messages": Q})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    assert "Traceback" not in r.text


def test_upstream_failures_map_to_502_and_504(gw, replay):
    replay.script = [(500, {"error": {"message": "engine exploded"}})]
    r = httpx.post(gw.url("/v1/chat/completions"), json={"model": "upstream", "messages": Q}, timeout=30)
    assert r.status_code == 502 and "HTTP 500" in r.json()["error"]["message"]
    assert "engine exploded" not in r.text and "127.0.0.1" not in r.text
    replay.script = [("sleep", 2.5)]
    r = httpx.post(gw.url("/v1/chat/completions"), json={"model": "upstream", "messages": Q, "stream": True}, timeout=30)
    assert r.status_code == 504 and r.json()["error"]["type"] == "upstream_timeout"
    replay.script = [[{"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}]]


def test_models_health_metrics(gw, client):
    ids = [m.id for m in client.models.list().data]
    assert ids[:2] == ["default", "upstream"] and "auto" in ids
    assert httpx.get(gw.url("/health")).json()["status"] == "ok"
    text = httpx.get(gw.url("/metrics")).text
    for name in ("ponder_requests_total", "ponder_thinking_tokens_bucket", "ponder_time_to_first_token_seconds_bucket",
                 "ponder_time_to_answer_seconds_bucket", "ponder_cost_usd_total", "ponder_in_flight_requests",
                 "ponder_queue_depth"):
        assert name in text, name


def test_disconnect_cancels_and_frees_engine(gw):
    before = gw.metric("ponder_cancelled_total")
    body = {"messages": Q, "stream": True, "max_thinking_tokens": 3000, "min_thinking_tokens": 3000, "max_tokens": 8}
    with httpx.stream("POST", gw.url("/v1/chat/completions"), json=body, timeout=30) as r:
        n = 0
        for line in r.iter_lines():
            if line.startswith("data:"):
                n += 1
            if n >= 10:
                break
    deadline = time.time() + 20
    while time.time() < deadline and gw.metric("ponder_cancelled_total") <= before:
        time.sleep(0.2)
    assert gw.metric("ponder_cancelled_total") == before + 1
    # the engine is free again: a short request completes quickly
    t0 = time.time()
    r = httpx.post(gw.url("/v1/chat/completions"), json={"messages": Q, "max_tokens": 4, "reasoning_effort": "none"}, timeout=60)
    assert r.status_code == 200 and time.time() - t0 < 15
    # what the cancelled request spent is in the ledger
    from ponder.ledger import read_jsonl

    cancelled = [x for x in read_jsonl(gw.ledger) if x.get("http_status") == 499]
    assert cancelled and 0 < cancelled[-1]["thinking_tokens"] < 3000


def test_full_queue_answers_429(tmp_path):
    g = Gateway({"server": {"queue_size": 0}, "lanes": [{"name": "default", "n_ctx": 1024}]}, tmp_path)
    try:
        body = {"messages": Q, "stream": True, "max_thinking_tokens": 400, "min_thinking_tokens": 400, "max_tokens": 4}
        started = threading.Event()

        def long_request():
            with httpx.stream("POST", g.url("/v1/chat/completions"), json=body, timeout=60) as r:
                for _ in r.iter_lines():
                    started.set()

        t = threading.Thread(target=long_request)
        t.start()
        assert started.wait(30)
        r = httpx.post(g.url("/v1/chat/completions"), json={"messages": Q, "max_tokens": 4}, timeout=30)
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_error"
        t.join(60)
    finally:
        g.stop()


def test_strategy_through_the_gateway(client):
    r = client.chat.completions.create(
        model="default", messages=Q, max_tokens=12, seed=3,
        extra_body={"max_thinking_tokens": 16, "ponder": {"strategy": "self-consistency", "params": {"n": 3}}})
    p = r.model_extra["ponder"]
    assert p["strategy"] == "self-consistency" and p["samples"] == 3
    import re

    won = int(re.search(r"won (\d+) of 3", p["decision"]).group(1))
    assert p["confidence"] == pytest.approx(won / 3)
    assert r.usage.completion_tokens_details.reasoning_tokens <= 3 * 16
    stream = client.chat.completions.create(
        model="default", messages=Q, max_tokens=12, seed=3, stream=True, stream_options={"include_usage": True},
        extra_body={"max_thinking_tokens": 16, "ponder": {"strategy": "best-of-n", "params": {"n": 2}}})
    text, final = "", None
    for c in stream:
        if c.choices and c.choices[0].delta.content:
            text += c.choices[0].delta.content
        if c.usage is not None:
            final = c
    assert text and final.model_extra["ponder"]["samples"] == 2


def test_strategy_param_errors(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="default", messages=Q,
                                       extra_body={"ponder": {"strategy": "self-consistency", "params": {"n": 500}}})
    assert err.value.body["param"] == "ponder.params.n"


def test_stream_chunks_and_ledger_share_one_id(gw):
    ids = set()
    body = {"messages": Q, "stream": True, "max_tokens": 4, "reasoning_effort": "none"}
    with httpx.stream("POST", gw.url("/v1/chat/completions"), json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                ids.add(json.loads(line[6:])["id"])
    assert len(ids) == 1
    from ponder.ledger import read_jsonl

    rows = {r["id"]: r for r in read_jsonl(gw.ledger)}
    (cid,) = ids
    assert rows[cid]["status"] == "ok" and rows[cid]["http_status"] == 200


def test_sixteen_concurrent_requests_all_complete_with_their_own_usage(tmp_path):
    # every request is held to its own window of thinking tokens (disjoint windows): mixed-up accounting cannot hide
    g = Gateway({"lanes": [{"name": "default", "n_ctx": 1024}], "policy": "off",
                 "thinking": {"loop_guard": {"enabled": False}}, "ledger": {"url": "off"}}, tmp_path)
    try:
        results: dict[int, dict] = {}

        def one(i: int) -> None:
            cap = 12 + 6 * i
            r = httpx.post(g.url("/v1/chat/completions"), json={
                "messages": [{"role": "user", "content": f"What is {i} + 7?"}], "max_tokens": 6, "seed": i,
                "max_thinking_tokens": cap, "min_thinking_tokens": cap - 4}, timeout=120)
            results[i] = {"status": r.status_code, "body": r.json(), "cap": cap}

        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert len(results) == 16
        for i, r in results.items():
            assert r["status"] == 200, r["body"]
            u, p = r["body"]["usage"], r["body"]["ponder"]
            used = u["completion_tokens_details"]["reasoning_tokens"]
            assert r["cap"] - 4 <= used <= r["cap"] and used == p["thinking"]["used"] \
                and p["thinking"]["budget"] == r["cap"], (i, r)
            assert 0 <= u["completion_tokens"] - used <= 6, (i, r)  # the answer may be empty: EOS right after thinking
        total = sum(r["body"]["usage"]["completion_tokens_details"]["reasoning_tokens"] for r in results.values())
        assert g.metric("ponder_thinking_tokens_sum") == total
        assert time.time() - t0 < 180
    finally:
        g.stop()


def test_structured_output_parse_with_a_pydantic_model_on_the_embedded_engine(client):
    from pydantic import BaseModel

    class Sum(BaseModel):  # a key no model writes unasked: only the grammar can produce this shape
        question: str
        zq_result: int

    ask = dict(model="default", messages=[{"role": "user", "content":
                                           "What is 12 + 7? Reply as JSON with the question and the result."}],
               max_tokens=64, seed=3, extra_body={"max_thinking_tokens": 24})
    r = client.chat.completions.parse(response_format=Sum, **ask)
    assert r.choices[0].message.parsed is not None  # the grammar makes it valid, right or not
    assert r.usage.completion_tokens_details.reasoning_tokens > 0  # ...and only the answer: the thinking ran free
    free = client.chat.completions.create(**ask)  # the same request without the grammar
    with pytest.raises(ValueError):
        Sum.model_validate_json(free.choices[0].message.content or "")


def test_logprobs_come_back_for_each_answer_token(client):
    r = client.chat.completions.create(model="default", messages=Q, max_tokens=12, seed=4, logprobs=True,
                                       top_logprobs=3, extra_body={"max_thinking_tokens": 16})
    lp = r.choices[0].logprobs.content
    assert lp, "logprobs were asked for"
    answer_tokens = r.usage.completion_tokens - r.usage.completion_tokens_details.reasoning_tokens
    assert len(lp) == answer_tokens
    assert "".join(t.token for t in lp).strip() == r.choices[0].message.content.strip()
    for t in lp:
        assert t.logprob <= 0 and 1 <= len(t.top_logprobs) <= 3
        assert max(a.logprob for a in t.top_logprobs) >= t.logprob - 1e-6


@pytest.mark.parametrize("field, value", [("functions", [{"name": "f"}]), ("audio", {"voice": "alloy"}),
                                          ("modalities", ["text", "audio"]), ("prediction", {"type": "content"})])
def test_fields_ponder_does_not_implement_are_400_naming_them(gw, field, value):
    r = httpx.post(gw.url("/v1/chat/completions"), json={"messages": Q, field: value}, timeout=30)
    assert r.status_code == 400 and field in (r.json()["error"].get("param") or r.json()["error"]["message"])


def test_unknown_routes_and_models_get_openai_error_bodies(gw):
    r = httpx.get(gw.url("/v1/nope"), timeout=10)
    assert r.status_code == 404 and "error" in r.json() and "detail" not in r.json()
    m = httpx.get(gw.url("/v1/models/default"), timeout=10)
    assert m.status_code == 200 and m.json()["id"] == "default" and m.json()["object"] == "model"
    missing = httpx.get(gw.url("/v1/models/nope"), timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    bad = httpx.post(gw.url("/v1/chat/completions"), json={"messages": Q, "temperature": 9}, timeout=10)
    assert bad.status_code == 400 and "Value error" not in bad.json()["error"]["message"]
