"""An upstream lane on a real llama.cpp ``llama-server`` (the shipped tiny model): ponder probes it, renders the
model's template itself and continues one text through think -> close -> answer, so thinking is exact to the
token, minimums are kept with ``Wait,``, and every strategy runs there — the same as on the embedded engine."""

from __future__ import annotations

import os
import time

import openai
import pytest

from llama_server import LlamaServer, binary
from servers import Gateway

# skipped only outside CI: there make test has built llama-server, and its absence must fail, not pass quietly
pytestmark = [pytest.mark.model,
              pytest.mark.skipif(binary() is None and not os.environ.get("CI"),
                                 reason="llama-server is not built (make test builds it)")]

Q = [{"role": "user", "content": "Explain step by step why the sky is blue."}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    s = LlamaServer(tmp_path_factory.mktemp("llama-server"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, engine):
    g = Gateway({"policy": "off", "ledger": {"url": "off"}, "server": {"access_log": False},
                 "thinking": {"loop_guard": {"enabled": False}},
                 "lanes": [{"name": "engine", "backend": "openai", "base_url": engine.url,
                            "upstream_model": "smollm2", "retries": 0, "timeout_s": 120}]},
                tmp_path_factory.mktemp("engines"))
    yield g
    g.stop()


@pytest.fixture(scope="module")
def client(gw):
    return openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)


def ask(client, **kw):
    r = client.chat.completions.with_raw_response.create(model="engine", messages=kw.pop("messages", Q), **kw)
    body = r.parse().model_dump()
    return body, body["ponder"]


def test_the_lane_learns_it_can_continue_text(gw):
    import httpx

    card = httpx.get(gw.url("/v1/models/engine")).json()
    assert card["ponder"]["backend"] == "openai"
    # beam needs raw continuation: refused on a chat lane, served here
    body, p = ask(openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0), max_tokens=16,
                  extra_body={"max_thinking_tokens": 32, "ponder": {"strategy": "beam",
                                                                    "params": {"width": 2, "branch": 2,
                                                                               "max_steps": 2}}})
    assert p["strategy"] == "beam" and body["choices"][0]["message"]["content"] is not None


def test_a_capped_request_thinks_exactly_the_cap_and_still_answers(client):
    # a minimum equal to the cap keeps the model thinking until the cap cuts it, exactly there
    body, p = ask(client, max_tokens=24, seed=3, extra_body={"max_thinking_tokens": 40, "min_thinking_tokens": 40})
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 40 == p["thinking"]["used"]
    assert p["thinking"]["truncated"] and p["thinking"]["stopped"] == "budget"
    assert body["choices"][0]["message"]["content"].strip()


def test_a_minimum_is_kept_with_wait(client):
    free, fp = ask(client, max_tokens=16, seed=5, temperature=0.0, extra_body={"max_thinking_tokens": 400})
    body, p = ask(client, max_tokens=16, seed=5, temperature=0.0,
                  extra_body={"max_thinking_tokens": 400, "min_thinking_tokens": 120,
                              "thinking": {"visibility": "visible"}})
    assert p["thinking"]["used"] >= 120
    if fp["thinking"]["used"] < 120:  # it would have stopped sooner: the minimum kept it going
        assert p["thinking"]["continuations"] >= 1 and "Wait," in body["choices"][0]["message"]["reasoning_content"]


@pytest.mark.parametrize("strategy, params", [
    ("self-consistency", {"n": 3}),
    ("deepconf-online", {"n_max": 4, "warmup": 2, "round_size": 2}),
    ("beam", {"width": 2, "branch": 2, "max_steps": 2, "step_tokens": 16}),
])
def test_strategies_run_on_the_engine(client, strategy, params):
    body, p = ask(client, max_tokens=16, temperature=0.7, seed=1,
                  messages=[{"role": "user", "content": "What is 12 + 7?"}],
                  extra_body={"max_thinking_tokens": 32, "ponder": {"strategy": strategy, "params": params}})
    assert p["strategy"] == strategy and p["samples"] >= 2
    assert body["usage"]["completion_tokens"] > 0 and body["usage"]["prompt_tokens"] > 0


# -- a fleet: two llama-server replicas in one lane -------------------------------------------------------

def replicas(g: Gateway) -> dict[str, dict]:
    import httpx

    return {r["url"]: r for r in httpx.get(g.url("/v1/models/fleet"), timeout=10).json()["ponder"]["replicas"]}


def test_a_fleet_keeps_a_prompt_on_one_replica_and_fails_over_when_it_dies(tmp_path):
    a = LlamaServer(tmp_path / "a", slots=4, ctx=4096)
    b = LlamaServer(tmp_path / "b", slots=4, ctx=4096)
    g = None
    try:
        g = Gateway({"policy": "off", "ledger": {"url": "off"}, "server": {"access_log": False},
                     "lanes": [{"name": "fleet", "backend": "openai", "base_urls": [a.url, b.url],
                                "upstream_model": "smollm2", "retries": 0, "eject_s": 3,
                                # failover by the calls themselves (a health check could eject the dead
                                # replica first, and no call would fail: tests/test_health.py covers that)
                                "health_interval_s": 0}]}, tmp_path / "gw")
        c = openai.OpenAI(base_url=g.base_url, api_key="x", max_retries=0)
        msgs = [{"role": "system", "content": "You are terse. " * 20}, {"role": "user", "content": "What is 2 + 3?"}]
        sc = {"max_thinking_tokens": 16, "ponder": {"strategy": "self-consistency", "params": {"n": 4}}}
        c.chat.completions.create(model="fleet", messages=msgs, max_tokens=8, seed=1, extra_body=sc)
        calls = {u: r["calls"] for u, r in replicas(g).items()}
        home = max(calls, key=calls.get)
        other = next(u for u in calls if u != home)
        assert calls[home] >= 4 and calls[other] == 0, calls  # every sample went to the prompt's replica
        # the home replica dies: the same prompt fails over before its first byte, and the replica is ejected
        (a if home == a.url else b).stop()
        r = c.chat.completions.create(model="fleet", messages=msgs, max_tokens=8, seed=2,
                                      extra_body={"max_thinking_tokens": 16})
        assert r.choices[0].message.content is not None
        state = replicas(g)  # (the ejection itself may be over already on a slow machine: its count stays)
        assert state[home]["ejections"] >= 1 and state[home]["errors"] >= 1 and state[other]["calls"] >= 1
        assert g.metric("ponder_upstream_replica_ejections", lane="fleet", replica=home) >= 1
        # it comes back: after eject_s the prompt's replica is tried again and serves it
        (a if home == a.url else b).start()
        time.sleep(3.5)
        before = replicas(g)[home]["calls"]
        c.chat.completions.create(model="fleet", messages=msgs, max_tokens=8, seed=3,
                                  extra_body={"max_thinking_tokens": 16})
        state = replicas(g)
        assert not state[home]["ejected"] and state[home]["calls"] > before
    finally:
        if g is not None:
            g.stop()
        a.stop()
        b.stop()


def test_a_tool_call_inside_the_thinking_runs_and_the_same_text_continues_on_the_same_replica():
    """The tiny model does not call tools by itself; a scripted llama-server stand-in does (two replicas)."""
    import asyncio

    from fake_llama import FakeLlamaServer

    from ponder.backends.base import SampleSpec
    from ponder.backends.probe import text_engine_or_none
    from ponder.config import LaneConfig, ToolsConfig
    from ponder.tools import ToolCache, toolbox_for
    from ponder.types import Message, Sampling, ThinkingBudget

    def reply(prompt: str) -> str:
        turn = prompt.rsplit("<|im_start|>assistant", 1)[-1]  # (the system note names the tags too)
        if "</think>" in turn:
            return "391"
        if "<tool_response>" not in turn:
            return 'I will compute it. <tool_call>{"name": "calculator", "arguments": {"expression": "17*23"}}' \
                   '</tool_call> never reached'
        return " So the product is 391.</think> this is closed by ponder"

    fakes = [FakeLlamaServer(reply), FakeLlamaServer(reply)]
    try:
        lane = LaneConfig(name="fleet", backend="openai", base_urls=[f.url for f in fakes])
        backend = text_engine_or_none(lane)
        tools = toolbox_for(ToolsConfig(enabled=["calculator"]), ("calculator",), ToolCache())
        spec = SampleSpec((Message("user", "What is 17 * 23?"),), ThinkingBudget(200),
                          Sampling(seed=1, max_answer_tokens=16), tools=tools)
        g = asyncio.run(backend.sample(spec))
        assert [t["name"] for t in g.tools] == ["calculator"] and g.answer == "391"
        assert "<tool_response>\n391\n</tool_response>" in g.thinking and "never reached" not in g.thinking
        (served,) = [f for f in fakes if f.prompts]  # every call of the sample on one replica
        first, second, third = served.prompts
        assert second.startswith(first) and second.endswith("</tool_response>\n")  # the same text, continued
        assert third.startswith(second) and third.endswith("</think>\n\n")  # ...and closed by the machine
        assert g.usage.tool_tokens > 0 and g.thinking_report.used < 200
    finally:
        for f in fakes:
            f.close()


def test_ponder_lanes_shows_what_the_probe_found(engine, tmp_path):
    import json
    import subprocess
    import sys

    import yaml

    cfg = tmp_path / "ponder.yaml"
    cfg.write_text(yaml.safe_dump({"lanes": [
        {"name": "engine", "backend": "openai", "base_url": engine.url, "upstream_model": "smollm2"},
        {"name": "hosted", "backend": "openai", "base_url": engine.url, "capabilities": "chat"}]}))
    p = subprocess.run([sys.executable, "-m", "ponder.cli", "lanes", "--config", str(cfg), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rows = {r["lane"]: r for r in json.loads(p.stdout)}
    assert rows["engine"]["engine"] == "TextEngineBackend"
    assert {"text_completion", "grammar", "builtin_tools"} <= set(rows["engine"]["capabilities"])
    assert rows["engine"]["replicas"][0]["url"] == engine.url
    assert rows["hosted"]["capabilities"] == ["response_format"]  # never probed: a chat lane


def test_early_exit_probes_the_trace_through_raw_completions(client, engine):
    """Each segment continues the same text (llama-server's prompt cache holds it); the probes are billed."""
    body, p = ask(client, max_tokens=16, temperature=0,
                  extra_body={"max_thinking_tokens": 96, "ponder": {"early_exit": {"probe_every": 16, "agree": 2}}})
    t = p["thinking"]
    assert t["used"] < 16 or (t["probes"] >= 1 and t["probe_tokens"] >= 1), t  # a trace past 16 tokens was probed
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == t["used"] + t["probe_tokens"]
    assert t["used"] <= 96 and t["stopped"] in ("end", "budget", "settled", "repetition")


def test_samples_of_one_prompt_share_one_prefill_on_the_engine(tmp_path):
    """A real llama-server with 4 slots.  4 samples that answer in one call (thinking off) are one n_cmpl call:
    the engine prefills the prompt once (its own prompt-token counter) where 4 separate calls prefill it in every
    slot, and the samples differ.  4 capped samples (24 of 24 thinking tokens each) continue alone after the
    cap; llama-server forgets a child's prompt, so there the group saves nothing but costs little more."""
    import asyncio
    import re

    import httpx

    from ponder.backends.base import SampleSpec
    from ponder.backends.probe import text_engine_or_none
    from ponder.config import LaneConfig
    from ponder.thinking.machine import LoopGuardSettings
    from ponder.types import Message, Sampling, ThinkingBudget

    server = LlamaServer(tmp_path / "s", slots=4, metrics=True)

    def prefilled() -> int:
        text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
        return int(float(re.search(r"^llamacpp:prompt_tokens_total\s+([0-9.e+]+)", text, re.M).group(1)))

    def draw(tag: str, grouped: bool, budget: ThinkingBudget) -> tuple[int, list]:
        backend = text_engine_or_none(LaneConfig(name="s", backend="openai", base_url=server.url,
                                                 health_interval_s=0))
        spec = SampleSpec((Message("system", f"[{tag}] " + "You are a careful, terse assistant. " * 20),
                           Message("user", "What is 12 + 7?")), budget,
                          Sampling(seed=5, temperature=0.8, max_answer_tokens=12),
                          loop_guard=LoopGuardSettings(enabled=False))
        if not grouped:
            backend.slots_per_replica = 0  # no groups, no pinning: one plain call per sample
        before = prefilled()
        try:
            gens = asyncio.run(backend.sample_many(spec, 4))
        finally:
            asyncio.run(backend.aclose())
        return prefilled() - before, gens

    try:
        off = ThinkingBudget(0)
        apart, _ = draw("apart", False, off)
        together, gens = draw("together", True, off)
        capped = ThinkingBudget(24, min_tokens=24)
        capped_apart, _ = draw("capped apart", False, capped)
        capped_together, capped_gens = draw("capped together", True, capped)
    finally:
        server.stop()
    assert all(g.answer for g in gens) and len({g.answer for g in gens}) > 1
    assert together < 0.4 * apart, (together, apart)  # ~1 prefill against ~4
    # exact: a sample that thought to its cap has 24 (the end-of-turn token is never counted); one that kept
    # ending early despite its Wait, cues may stop below its minimum, never above its cap
    assert all(g.answer and g.usage.thinking_tokens <= 24 for g in capped_gens)
    assert all(g.usage.thinking_tokens == 24 for g in capped_gens if g.thinking_report.stopped == "budget")
    assert any(g.thinking_report.stopped == "budget" for g in capped_gens)
    assert capped_together < 1.3 * capped_apart, (capped_together, capped_apart)


def test_cached_prompt_tokens_are_what_the_engine_reused(engine):
    """A prompt the engine has not seen reports only its template's shared start as cached (the default system
    prompt other requests put in the slot); the same prompt again reports all but its last token or so.  Read
    from the first streamed piece: the thinking is capped, so ponder closes its first call before the end."""
    import asyncio

    from ponder.backends.base import SampleSpec
    from ponder.backends.probe import text_engine_or_none
    from ponder.config import LaneConfig
    from ponder.types import Message, Sampling, ThinkingBudget

    backend = text_engine_or_none(LaneConfig(name="e", backend="openai", base_url=engine.url, health_interval_s=0))
    spec = SampleSpec((Message("user", f"[cache {time.time()}] Name three colours."),), ThinkingBudget(8),
                      Sampling(seed=1, max_answer_tokens=4))
    try:
        first = asyncio.run(backend.sample(spec))
        second = asyncio.run(backend.sample(spec))
    finally:
        asyncio.run(backend.aclose())
    assert first.usage.prompt_tokens > 10 and first.usage.cached_prompt_tokens < first.usage.prompt_tokens - 10
    assert second.usage.prompt_tokens - 2 <= second.usage.cached_prompt_tokens < second.usage.prompt_tokens
