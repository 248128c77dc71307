"""Routing and load shedding through a real gateway on 127.0.0.1 (real model)."""

from __future__ import annotations

import threading

import openai
import pytest

from servers import Gateway

pytestmark = pytest.mark.model

WORD_PROBLEM = ("A baker bakes 4 trays of 12 rolls each morning. She sells 29 rolls and gives 7 to a neighbour. "
                "How many rolls are left? Solve it step by step.")


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gwr")
    config = {
        "server": {"queue_size": 8, "shedding": {"queue_marks": [100], "thinking_marks": [1], "floor": "low"}},
        # the loop guard off: the in-flight request must think its whole minimum whatever batch it shares (with
        # the guard, a trace that repeats itself next to the degraded request stopped at 30 of 64 in one CI run)
        "thinking": {"efforts": {"none": 0, "minimal": 8, "low": 16, "medium": 32, "high": 64, "max": 128},
                     "loop_guard": {"enabled": False}},
        # the built-in pair of lanes, on one engine; no --policy: the shipped default policy routes
        "lanes": [{"name": "reasoning", "n_ctx": 1024}, {"name": "fast", "n_ctx": 1024, "effort": "none"}],
    }
    g = Gateway(config, tmp)
    yield g
    g.stop()


@pytest.fixture
def client(gw):
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=120)


def test_default_policy_sends_hi_fast_and_a_word_problem_to_reasoning(client):
    hi = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    route = hi.model_extra["ponder"]["route"]
    assert route["lane"] == "fast" and route["router"] == "heuristic" and route["score"] < 0.4
    assert hi.usage.completion_tokens_details.reasoning_tokens == 0
    word = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": WORD_PROBLEM}],
                                          max_tokens=8)
    p = word.model_extra["ponder"]
    assert p["route"]["lane"] == "reasoning" and p["route"]["score"] > 0.75
    assert p["thinking"]["budget"] == 32 and word.usage.completion_tokens_details.reasoning_tokens > 0
    # naming a lane pins it; an explicit effort wins over the policy
    pinned = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": WORD_PROBLEM}],
                                            max_tokens=8, extra_body={"reasoning_effort": "low"})
    assert pinned.model_extra["ponder"]["lane"] == "fast"
    assert pinned.model_extra["ponder"]["thinking"]["budget"] == 16


def test_pressure_degrades_new_requests_and_completes_in_flight_ones(client, gw):
    before = gw.metric("ponder_degraded_total")
    first_chunk = threading.Event()
    result = {}

    def long_request():
        stream = client.chat.completions.create(
            model="reasoning", messages=[{"role": "user", "content": WORD_PROBLEM}], max_tokens=8, stream=True,
            stream_options={"include_usage": True}, extra_body={"reasoning_effort": "high", "min_thinking_tokens": 64})
        chunks = []
        for ch in stream:
            chunks.append(ch)
            first_chunk.set()
        result["chunks"] = chunks

    t = threading.Thread(target=long_request)
    t.start()
    assert first_chunk.wait(60)
    degraded = client.chat.completions.create(model="reasoning", messages=[{"role": "user", "content": WORD_PROBLEM}],
                                              max_tokens=8, extra_body={"reasoning_effort": "high"})
    t.join(120)
    d = degraded.model_extra["ponder"]["degraded"]
    assert d["from"] == "high" and d["to"] == "medium" and "thinking tokens in flight" in d["reason"]
    assert degraded.model_extra["ponder"]["thinking"]["budget"] == 32
    # the request that was already running kept its whole budget and finished
    chunks = result["chunks"]
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 64
    last_ponder = [c.model_extra.get("ponder") for c in chunks if c.model_extra.get("ponder")][-1]
    assert "degraded" not in last_ponder
    assert gw.metric("ponder_degraded_total") == before + 1
