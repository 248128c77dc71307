"""Anthropic's Messages API through a real gateway, with the official anthropic SDK: thinking budgets, streaming,
tool use round trips, the same keys, an upstream lane, and every error in Anthropic's shape."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from servers import Gateway

from ponder.tenancy import hash_secret

pytestmark = pytest.mark.model

SECRET = "sk-claude-client-0123"
ADD = [{"name": "add", "description": "Add two integers", "input_schema": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}]
Q = [{"role": "user", "content": "What is 17 + 25?"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream):
    g = Gateway({"policy": "off", "ledger": {"url": "off"}, "server": {"access_log": False},
                 "auth": {"required": True, "keys": [{"name": "agent", "key_sha256": hash_secret(SECRET),
                                                      "limits": {"max_thinking_tokens": 48}}]},
                 "lanes": [{"name": "default", "n_ctx": 2048},
                           {"name": "up", "backend": "openai", "base_url": upstream.url, "upstream_model": "think",
                            "retries": 0},
                           {"name": "up-tools", "backend": "openai", "base_url": upstream.url,
                            "upstream_model": "tools", "effort": "none", "retries": 0}]},
                tmp_path_factory.mktemp("messages"))
    yield g
    g.stop()


def sdk(g: Gateway, key: str = SECRET) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=g.url(), api_key=key, max_retries=0)


def test_thinking_budget_is_the_cap_and_max_tokens_counts_it(gw):
    m = sdk(gw).messages.create(model="default", max_tokens=40, thinking={"type": "enabled", "budget_tokens": 24},
                                messages=[{"role": "user", "content": "Why is the sky blue?"}], extra_body={"temperature": 0})
    thinking = [b for b in m.content if b.type == "thinking"]
    assert m.id.startswith("msg_") and len(thinking) == 1 and thinking[0].signature
    p = m.model_dump()["ponder"]["thinking"]
    assert p["budget"] == 24 and 0 < p["used"] <= 24
    assert m.usage.output_tokens <= 40  # thinking + answer within max_tokens, as Anthropic defines it
    off = sdk(gw).messages.create(model="default", max_tokens=16, thinking={"type": "disabled"}, messages=Q)
    assert [b.type for b in off.content] == ["text"] and off.model_dump()["ponder"]["thinking"]["used"] == 0


def test_stream_matches_the_final_message(gw):
    with sdk(gw).messages.stream(model="default", max_tokens=48, thinking={"type": "enabled", "budget_tokens": 24},
                                 messages=Q, extra_body={"temperature": 0}) as s:
        events = list(s)
        final = s.get_final_message()
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == "".join(b.text for b in final.content if b.type == "text")
    assert [b.type for b in final.content][:1] == ["thinking"] and final.stop_reason in ("end_turn", "max_tokens")


def test_tool_use_round_trip_with_a_forced_tool(gw):
    c = sdk(gw)
    m = c.messages.create(model="default", max_tokens=96, tools=ADD, tool_choice={"type": "tool", "name": "add"},
                          thinking={"type": "enabled", "budget_tokens": 16}, messages=Q)
    (use,) = [b for b in m.content if b.type == "tool_use"]
    assert m.stop_reason == "tool_use" and use.name == "add" and set(use.input) == {"a", "b"}
    assert use.id.startswith("toolu_")
    done = c.messages.create(model="default", max_tokens=24, tools=ADD, messages=[
        *Q, {"role": "assistant", "content": m.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "42"}]}])
    assert done.stop_reason in ("end_turn", "max_tokens") and done.usage.input_tokens > m.usage.input_tokens


def test_upstream_lane_thinking_and_tool_use(gw):
    c = sdk(gw)
    m = c.messages.create(model="up", max_tokens=64, thinking={"type": "enabled", "budget_tokens": 32}, messages=Q)
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in m.content] == \
        [("thinking", "Add the units."), ("text", "19")]
    t = c.messages.create(model="up-tools", max_tokens=64, messages=[{"role": "user", "content": "Paris?"}],
                          tools=[{"name": "get_weather", "input_schema": {"type": "object"}}])
    (use,) = [b for b in t.content if b.type == "tool_use"]
    assert use.input == {"city": "Paris"} and t.stop_reason == "tool_use"


def test_the_key_and_its_limits_apply(gw):
    with pytest.raises(anthropic.AuthenticationError) as e:
        sdk(gw, "sk-wrong").messages.create(model="default", max_tokens=8, messages=Q)
    assert e.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.PermissionDeniedError) as e:  # the key's max_thinking_tokens is 48
        sdk(gw).messages.create(model="default", max_tokens=200, thinking={"type": "enabled", "budget_tokens": 100},
                                messages=Q)
    assert e.value.body["type"] == "error" and "48" in e.value.body["error"]["message"]


@pytest.mark.parametrize("body, needle", [
    ({"max_tokens": 16, "thinking": {"type": "enabled", "budget_tokens": 16}, "messages": Q}, "budget_tokens"),
    ({"max_tokens": 16, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "image"),
    ({"max_tokens": 16, "messages": []}, "messages"),
    ({"messages": Q}, "max_tokens"),
    ({"max_tokens": 16, "messages": Q, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools"),
])
def test_bad_input_is_a_400_in_anthropic_shape(gw, body, needle):
    r = httpx.post(gw.url("/v1/messages"), json={"model": "default", **body}, timeout=30,
                   headers={"x-api-key": SECRET, "anthropic-version": "2023-06-01"})
    assert r.status_code == 400, r.text
    got = r.json()
    assert got["type"] == "error" and got["error"]["type"] == "invalid_request_error"
    assert needle in got["error"]["message"]
