"""The Responses API through real gateways, with the official openai SDK: the embedded default, a fake
upstream, conversations shared by two replicas through a real Redis, and bad input in OpenAI's error shape."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from redis_server import RedisServer
from servers import Gateway

from ponder.tenancy import hash_secret

pytestmark = pytest.mark.model

KEYS = {"alice": "sk-alice-0123456789", "bob": "sk-bob-0123456789"}
ADD = [{"type": "function", "name": "add", "description": "Add two integers",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"]}}]


def config(upstream_url: str, state_url: str = "memory://") -> dict:
    return {"policy": "off", "ledger": {"url": "off"}, "server": {"access_log": False},
            "state": {"url": state_url},
            "auth": {"keys": [{"name": n, "key_sha256": hash_secret(s)} for n, s in KEYS.items()]},
            "lanes": [{"name": "default", "n_ctx": 2048},
                      {"name": "up", "backend": "openai", "base_url": upstream_url, "upstream_model": "think",
                       "retries": 0},
                      {"name": "up-tools", "backend": "openai", "base_url": upstream_url, "upstream_model": "tools",
                       "effort": "none", "retries": 0},
                      {"name": "up-plain", "backend": "openai", "base_url": upstream_url, "upstream_model": "ok",
                       "effort": "none", "retries": 0}]}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream):
    g = Gateway(config(upstream.url), tmp_path_factory.mktemp("responses"))
    yield g
    g.stop()


def sdk(g: Gateway, who: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=g.base_url, api_key=KEYS[who], max_retries=0)


def test_create_maps_effort_and_reports_reasoning_tokens(gw):
    r = sdk(gw).responses.create(model="default", input="What is 12 + 7?", reasoning={"effort": "minimal"},
                                 max_output_tokens=24, temperature=0)
    assert r.status in ("completed", "incomplete") and r.id.startswith("resp_")
    body = r.model_dump()
    assert body["ponder"]["thinking"]["budget"] == 64  # effort minimal is ponder's 64-token tier
    used = body["ponder"]["thinking"]["used"]
    assert r.usage.output_tokens_details.reasoning_tokens == used > 0
    assert [o.type for o in r.output][0] == "reasoning" and r.output_text
    # the answer room is max_output_tokens, after the thinking
    assert r.usage.output_tokens - used <= 24


def test_stream_events_come_in_order_and_match_the_final_response(gw):
    with sdk(gw).responses.stream(model="default", input="Name a colour.", reasoning={"effort": "minimal"},
                                  max_output_tokens=16, temperature=0, extra_body={"thinking": {"visibility": "visible"}}
                                  ) as s:
        events = list(s)
        final = s.get_final_response()
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    seqs = [e.sequence_number for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text
    thinking = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    reasoning = [o for o in final.output if o.type == "reasoning"][0]
    assert thinking.strip() == reasoning.content[0].text
    # each item opened before its deltas and closed before the next one opens
    assert types.index("response.output_item.added") < types.index("response.reasoning_text.delta")
    assert types.index("response.output_item.done") < types.index("response.content_part.added")


def test_a_conversation_continues_and_is_not_anyone_elses(gw):
    alice = sdk(gw, "alice")
    first = alice.responses.create(model="default", input="My name is Ada.", reasoning={"effort": "none"},
                                   max_output_tokens=8)
    alone = alice.responses.create(model="default", input="What is my name?", reasoning={"effort": "none"},
                                   max_output_tokens=8, store=False)
    follow = alice.responses.create(model="default", input="What is my name?", previous_response_id=first.id,
                                    reasoning={"effort": "none"}, max_output_tokens=8)
    # the stored turn (question and answer) is in the prompt of the continuation
    assert follow.usage.input_tokens > alone.usage.input_tokens + 5
    with pytest.raises(openai.NotFoundError) as e:  # another key: the same 404 as an unknown id
        sdk(gw, "bob").responses.create(model="default", input="?", previous_response_id=first.id,
                                        reasoning={"effort": "none"}, max_output_tokens=4)
    assert e.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):  # store: false keeps nothing
        alice.responses.create(model="default", input="?", previous_response_id=alone.id,
                               reasoning={"effort": "none"}, max_output_tokens=4)
    with pytest.raises(openai.NotFoundError):
        alice.responses.create(model="default", input="?", previous_response_id="resp_nope",
                               reasoning={"effort": "none"}, max_output_tokens=4)


def test_forced_function_call_round_trip_on_the_embedded_engine(gw):
    c = sdk(gw)
    r = c.responses.create(model="default", input="What is 17 + 25?", tools=ADD, tool_choice="required",
                           reasoning={"effort": "minimal"}, max_output_tokens=64)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "add" and set(json.loads(calls[0].arguments)) == {"a", "b"}
    nxt = c.responses.create(model="default", previous_response_id=r.id, tools=ADD, max_output_tokens=16,
                             input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "42"}],
                             reasoning={"effort": "none"})
    assert nxt.status in ("completed", "incomplete")
    # the stored call and its result reached the model as the conversation's last turns
    assert nxt.usage.input_tokens > r.usage.input_tokens


def test_upstream_lane_reasoning_and_tools(gw):
    c = sdk(gw)
    r = c.responses.create(model="up", input="What is 12 + 7?", reasoning={"effort": "low", "summary": None},
                           extra_body={"thinking": {"visibility": "visible"}})
    assert r.output_text == "19"
    assert [o.content[0].text for o in r.output if o.type == "reasoning"] == ["Add the units."]
    t = c.responses.create(model="up-tools", input="How warm is Paris?", tools=[
        {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}])
    (call,) = [o for o in t.output if o.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    done = c.responses.create(model="up-tools", previous_response_id=t.id,
                              input=[{"type": "function_call_output", "call_id": call.call_id, "output": "21C"}])
    assert done.output_text == "It is 21C in Paris."


def test_an_upstream_that_ignores_a_forced_call_is_an_error(gw):
    with pytest.raises(openai.APIStatusError) as e:
        sdk(gw).responses.create(model="up-plain", input="What is 17 + 25?", tools=ADD, tool_choice="required")
    assert e.value.status_code == 502 and e.value.body["code"] == "tool_choice_ignored"


@pytest.mark.parametrize("body, param", [
    ({"input": [{"type": "image_generation_call", "id": "x"}]}, "input.0.type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input.0.content.0.type"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools.0.type"),
    ({"input": "hi", "background": True}, "background"),
    ({"input": "hi", "include": ["reasoning.encrypted_content"]}, "include"),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": 5}, "input"),
])
def test_bad_input_is_a_400_in_openai_shape(gw, body, param):
    r = httpx.post(gw.url("/v1/responses"), json={"model": "default", **body}, timeout=30,
                   headers={"Authorization": f"Bearer {KEYS['alice']}"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


def test_two_replicas_share_conversations_through_redis(tmp_path, upstream):
    redis = RedisServer(tmp_path / "redis")
    a = b = None
    try:
        a = Gateway(config(upstream.url, redis.url), tmp_path / "a")
        b = Gateway(config(upstream.url, redis.url), tmp_path / "b")
        first = sdk(a).responses.create(model="up-plain", input="Remember 7.")
        follow = sdk(b).responses.create(model="up-plain", input="Which number?", previous_response_id=first.id)
        assert follow.output_text == "19"
        sent = upstream.bodies[-1]["messages"]  # what replica b sent upstream: the whole conversation
        assert [m["content"] for m in sent] == ["Remember 7.", "19", "Which number?"]
        with pytest.raises(openai.NotFoundError):
            sdk(b, "bob").responses.create(model="up-plain", input="?", previous_response_id=first.id)
    finally:
        for g in (a, b):
            if g is not None:
                g.stop()
        redis.stop()
