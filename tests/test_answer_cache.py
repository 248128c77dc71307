"""The answer cache through real gateways: hit/miss, what a hit reports, TTL, bounded size, Redis shared
by two replicas, streams, and the hit-rate metric.  The upstream counts its calls: a hit makes none."""

from __future__ import annotations

import time

import httpx
import pytest

from faulty import Faulty
from redis_server import RedisServer
from servers import Gateway


@pytest.fixture(scope="module")
def upstream():
    f = Faulty(delay=0.05)
    yield f
    f.close()


def config(upstream_url: str, **cache) -> dict:
    lane = {"name": "ok", "backend": "openai", "base_url": upstream_url, "upstream_model": "ok", "effort": "none",
            "native_reasoning": True, "retries": 0, "prices": {"input_per_1m": 1.0, "output_per_1m": 2.0}}
    return {"policy": "off", "ledger": {"url": "off"}, "server": {"access_log": False}, "lanes": [lane],
            "cache": {"enabled": True, **cache}}


def ask(g, content="What is 12 + 7?", **body):
    r = httpx.post(g.url("/v1/chat/completions"), timeout=30,
                   json={"model": "ok", "messages": [{"role": "user", "content": content}], "temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream):
    g = Gateway(config(upstream.url, ttl_s=2.0, max_entries=3), tmp_path_factory.mktemp("cache"))
    yield g
    g.stop()


def test_a_repeat_is_a_hit_with_zero_new_tokens_and_the_saved_usage(gw, upstream):
    first = ask(gw, "cache me 1")
    calls = len(upstream.bodies)
    second = ask(gw, "cache me 1")
    assert len(upstream.bodies) == calls, "a hit must not call the upstream"
    assert first["ponder"]["cache"] == {"hit": False}
    c = second["ponder"]["cache"]
    assert c["hit"] is True and 0 <= c["age_s"] < 2
    assert c["saved"]["usage"] == first["usage"] and c["saved"]["cost_usd"] == first["ponder"]["cost_usd"] > 0
    assert second["usage"]["completion_tokens"] == 0 and second["usage"]["prompt_tokens"] == 0
    assert second["ponder"]["cost_usd"] == 0
    assert second["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]
    assert second["id"] != first["id"]


def test_what_changes_the_answer_changes_the_key(gw, upstream):
    ask(gw, "cache me 2")
    calls = len(upstream.bodies)
    assert ask(gw, "cache me 2", max_tokens=7)["ponder"]["cache"]["hit"] is False
    assert ask(gw, "cache me 2", seed=3)["ponder"]["cache"]["hit"] is False
    assert len(upstream.bodies) == calls + 2


def test_random_sampling_is_not_cached_and_off_and_refresh_are_honoured(gw, upstream):
    r = ask(gw, "cache me 3", temperature=0.8)
    assert "cache" not in r["ponder"]
    ask(gw, "cache me 4")
    calls = len(upstream.bodies)
    assert "cache" not in ask(gw, "cache me 4", ponder={"cache": "off"})["ponder"]
    assert ask(gw, "cache me 4", ponder={"cache": "refresh"})["ponder"]["cache"]["hit"] is False
    assert len(upstream.bodies) == calls + 2


def test_entries_expire_after_the_ttl(gw):
    ask(gw, "cache me 5")
    assert ask(gw, "cache me 5")["ponder"]["cache"]["hit"] is True
    time.sleep(2.2)
    assert ask(gw, "cache me 5")["ponder"]["cache"]["hit"] is False


def test_the_cache_is_bounded_oldest_out_first(gw):
    for i in range(4):
        ask(gw, f"bounded {i}")
    assert ask(gw, "bounded 3")["ponder"]["cache"]["hit"] is True
    assert ask(gw, "bounded 0")["ponder"]["cache"]["hit"] is False  # 4 entries into 3 slots: the first went


def test_a_streamed_hit_streams_the_stored_answer(gw):
    ask(gw, "stream me")
    text, final = "", None
    with httpx.stream("POST", gw.url("/v1/chat/completions"), timeout=30, json={
            "model": "ok", "messages": [{"role": "user", "content": "stream me"}], "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        import json as _json

        for line in r.iter_lines():
            if line.startswith("data: {"):
                obj = _json.loads(line[6:])
                for ch in obj.get("choices") or []:
                    text += ch["delta"].get("content") or ""
                if obj.get("usage"):
                    final = obj
    assert text == "19" and final["ponder"]["cache"]["hit"] is True
    assert final["usage"]["completion_tokens"] == 0


def test_hit_rate_metric(gw):
    before_hits = gw.metric("ponder_cache_total", result="hit")
    before_miss = gw.metric("ponder_cache_total", result="miss")
    ask(gw, "metric me")
    ask(gw, "metric me")
    assert gw.metric("ponder_cache_total", result="hit") == before_hits + 1
    assert gw.metric("ponder_cache_total", result="miss") == before_miss + 1


def test_two_replicas_share_the_cache_through_redis(tmp_path, upstream):
    r = RedisServer(tmp_path / "redis")
    cfg = config(upstream.url, ttl_s=60, max_entries=100)
    cfg["state"] = {"url": r.url}
    a, b = Gateway(cfg, tmp_path / "a"), Gateway(cfg, tmp_path / "b")
    try:
        assert ask(a, "shared")["ponder"]["cache"]["hit"] is False
        calls = len(upstream.bodies)
        hit = ask(b, "shared")
        assert hit["ponder"]["cache"]["hit"] is True and len(upstream.bodies) == calls
        r.stop()  # the store goes away: a miss, never a failed request
        assert ask(b, "shared after outage")["ponder"]["cache"]["hit"] is False
    finally:
        a.stop()
        b.stop()
        r.stop()
