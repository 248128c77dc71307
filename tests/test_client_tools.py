"""Client tools (OpenAI ``tools``): a call goes back as ``tool_calls``, the ``tool`` message continues.

Through a real gateway with the openai SDK, against a real local upstream that streams structured
tool-call fragments; and on the embedded engine, how the functions and the tool turns reach the model.
"""

from __future__ import annotations

import json

import openai
import pytest

from ponder.tools.client import as_text_turns, split_calls, tools_prompt
from ponder.types import Message, ThinkingBudget
from servers import Gateway

WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current temperature in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
Q = [{"role": "user", "content": "How warm is it in Paris?"}]


@pytest.fixture(scope="module")
def client(tmp_path_factory, upstream):
    lane = {"name": "tools", "backend": "openai", "base_url": upstream.url, "upstream_model": "tools",
            "effort": "none", "native_reasoning": True, "retries": 0}
    g = Gateway({"policy": "off", "ledger": {"url": "off"}, "server": {"access_log": False}, "lanes": [lane]},
                tmp_path_factory.mktemp("ctools"))
    yield openai.OpenAI(base_url=g.base_url, api_key="x", max_retries=0)
    g.stop()


def test_round_trip_with_the_openai_sdk(client, upstream):
    first = client.chat.completions.create(model="tools", messages=Q, tools=WEATHER)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_") and not choice.message.content
    sent = upstream.bodies[-1]
    assert sent["tools"] == WEATHER  # the upstream got the functions as they were given
    # the client runs its function and sends the result back
    follow = client.chat.completions.create(model="tools", tools=WEATHER, messages=[
        *Q, choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21 C"}])
    assert follow.choices[0].finish_reason == "stop"
    assert follow.choices[0].message.content == "It is 21 C in Paris."
    sent = upstream.bodies[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id and sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[2] == {"role": "tool", "content": "21 C", "tool_call_id": call.id}


def test_streamed_tool_calls(client):
    stream = client.chat.completions.create(model="tools", messages=Q, tools=WEATHER, stream=True)
    calls, finish, content = [], None, ""
    for c in stream:
        if not c.choices:
            continue
        d = c.choices[0].delta
        calls += d.tool_calls or []
        content += d.content or ""
        finish = c.choices[0].finish_reason or finish
    assert finish == "tool_calls" and not content.strip()
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}


def test_bad_tool_choice_and_strategies_that_vote_are_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tools", messages=Q, tools=WEATHER,
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert e.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tools", messages=Q, tool_choice="required")
    assert e.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tools", messages=Q, tools=WEATHER,
                                       extra_body={"ponder": {"strategy": "self-consistency"}})
    assert e.value.body["param"] == "ponder.strategy"


def test_tool_choice_none_offers_no_tools(client, upstream):
    r = client.chat.completions.create(model="tools", messages=Q, tools=WEATHER, tool_choice="none")
    assert r.choices[0].message.content == "no tools were offered" and "tools" not in upstream.bodies[-1]


# -- the embedded engine's side -------------------------------------------------------------------

def test_split_calls_takes_known_functions_and_leaves_the_rest():
    text = ('Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>\n'
            '<tool_call>{"name": "launch", "arguments": {}}</tool_call>\n<tool_call>not json</tool_call>')
    content, calls = split_calls(text, ["get_weather"])
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    assert content.startswith("Let me check.") and "launch" in content and "not json" in content
    assert split_calls("42", ["get_weather"]) == ("42", [])


@pytest.mark.model
def test_the_embedded_model_sees_the_functions_and_the_tool_turns(tiny_backend):
    from ponder.thinking.control import raw_prompt

    convo = [Message("user", "How warm is it in Paris?"),
             Message("assistant", "", tool_calls=({"id": "call_1", "name": "get_weather",
                                                   "arguments": '{"city": "Paris"}'},)),
             Message("tool", "21 C", tool_call_id="call_1")]
    prompt = raw_prompt(tiny_backend, convo, ThinkingBudget(0), tools_prompt=tools_prompt(WEATHER, "auto"))
    assert '"name": "get_weather"' in prompt and "<tools>" in prompt
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in prompt
    assert "<tool_response>\n21 C\n</tool_response>" in prompt
    turns = as_text_turns([Message("tool", "a"), Message("tool", "b")])
    assert len(turns) == 1 and turns[0].role == "user" and turns[0].content.count("<tool_response>") == 2


# -- forced calls on the embedded default: a grammar makes them certain ---------------------------------

FORCED_TOOLS = [
    {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}},
    {"type": "function", "function": {"name": "get_weather", "description": "Current temperature in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}}]
TYPES = {"integer": int, "string": str}


def schema_valid(args: dict, schema: dict) -> bool:
    props = schema["properties"]
    return set(schema["required"]) <= set(args) <= set(props) and \
        all(isinstance(v, TYPES[props[k]["type"]]) and not isinstance(v, bool) for k, v in args.items())


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    g = Gateway({"policy": "off", "ledger": {"url": "off"}, "server": {"access_log": False},
                 "lanes": [{"name": "default", "n_ctx": 2048}]}, tmp_path_factory.mktemp("forced"))
    yield openai.OpenAI(base_url=g.base_url, api_key="x", max_retries=0)
    g.stop()


@pytest.mark.model
@pytest.mark.parametrize("choice, expect", [
    ("required", {"add", "get_weather"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"get_weather"}),
])
def test_forced_tool_choice_always_returns_a_valid_call(embedded, choice, expect):
    from concurrent.futures import ThreadPoolExecutor

    def ask(seed: int):
        return embedded.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "What is 17 + 25?"}], tools=FORCED_TOOLS,
            tool_choice=choice, seed=seed, temperature=0.8, max_tokens=96, extra_body={"max_thinking_tokens": 32})

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(ask, range(20)))
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in FORCED_TOOLS}
    good = 0
    for r in replies:
        ch = r.choices[0]
        calls = ch.message.tool_calls or []
        if ch.finish_reason == "tool_calls" and len(calls) == 1 and calls[0].function.name in expect and \
                schema_valid(json.loads(calls[0].function.arguments), schemas[calls[0].function.name]):
            good += 1
    assert good == 20


def test_parallel_tool_calls_false_returns_at_most_one_call_with_ids_stable_per_request():
    from types import SimpleNamespace

    from ponder.outcome import answer_and_calls

    tools = tuple(FORCED_TOOLS)
    answer = ('<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>\n'
              '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>')
    result = SimpleNamespace(answer=answer)
    both = answer_and_calls(result, SimpleNamespace(client_tools=tools, parallel_tool_calls=True), "req-1")[1]
    one = answer_and_calls(result, SimpleNamespace(client_tools=tools, parallel_tool_calls=False), "req-1")[1]
    assert [c["function"]["name"] for c in both] == ["add", "get_weather"]
    assert [c["function"]["name"] for c in one] == ["add"]
    assert one[0]["id"] == both[0]["id"]  # the same request names its calls alike however often it is split
    again = answer_and_calls(result, SimpleNamespace(client_tools=tools, parallel_tool_calls=True), "req-2")[1]
    assert again[0]["id"] != both[0]["id"]  # another request, other ids
