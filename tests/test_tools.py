"""Built-in tools inside the thinking: the calculator, the python sandbox, limits, the cache, and the
real engine pausing one sequence, running the tool and thinking on from the same KV state.

The model's turn is scripted only where it writes the call (the tiny models rarely do): the scripted
machine makes the first sampled token be followed by a ``<tool_call>``; the engine prefills it into the
KV, pauses the sequence, the real tool runs, its result is prefilled and the real model continues.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from ponder.backends.base import SampleSpec
from ponder.thinking import control
from ponder.thinking.machine import ThinkingMachine
from ponder.tools import ToolBox, ToolCache, ToolLimits
from ponder.tools.calculator import CalculatorError, calculate
from ponder.types import Message, Sampling, ThinkingBudget

Q = (Message("user", "What is 17 * 23? Use the calculator."),)


# -- the calculator -----------------------------------------------------------------------------------

@pytest.mark.parametrize("expr, want", [
    ("17 * 23", "391"), ("1,234,567 + 1", "1234568"), ("gcd(12, 18)", "6"), ("lcm(4, 6)", "12"),
    ("1/3 + 1/6", "1/2 (= 0.5)"), ("2^10", "1024"), ("(3 - 5) * -2", "4"), ("10 // 3", "3"), ("-7 % 3", "2"),
    ("sqrt(144)", "12"), ("factorial(20)", "2432902008176640000"), ("0.1 + 0.2", "3/10 (= 0.3)"),
])
def test_calculator_is_exact(expr, want):
    assert calculate(expr) == want


@pytest.mark.parametrize("expr, why", [
    ("__import__('os').system('id')", "not arithmetic"), ("open('/etc/passwd')", "unknown function"),
    ("x + 1", "not arithmetic"), ("2 ** 100000", "exponents"), ("factorial(10000)", "factorial"),
    ("1 / 0", "division by zero"), ("[1, 2]", "not arithmetic"), ("", "empty"),
])
def test_calculator_refuses_what_is_not_bounded_arithmetic(expr, why):
    with pytest.raises(CalculatorError, match=why):
        calculate(expr)


# -- the toolbox --------------------------------------------------------------------------------------

def call(box: ToolBox, name: str, args: dict, depth: int = 0):
    return asyncio.run(box.call(json.dumps({"name": name, "arguments": args}), depth=depth))


def test_python_tool_runs_in_the_sandbox_and_returns_stdout():
    box = ToolBox(("python",))
    out, rec = call(box, "python", {"code": "print(sum(range(1, 101)))"})
    assert out == "5050" and rec["error"] is None and rec["seconds"] > 0
    leak, rec = call(box, "python", {"code": "print(open('/etc/passwd').read())"})
    assert leak.startswith("error:") and "FileNotFoundError" in leak and rec["error"]


def test_limits_calls_depth_and_time_then_the_model_is_told_to_answer():
    box = ToolBox(("calculator",), ToolLimits(max_calls=2, max_depth=5, cache_ttl_s=0))
    assert call(box, "calculator", {"expression": "1+1"})[0] == "2"
    assert call(box, "calculator", {"expression": "2+2"})[0] == "4"
    assert box.exhausted(0)
    out, rec = call(box, "calculator", {"expression": "3+3"})
    assert "limit" in out and rec["error"] == "limit reached" and box.calls == 2
    deep = ToolBox(("calculator",), ToolLimits(max_calls=10, max_depth=1))
    assert not deep.exhausted(0) and deep.exhausted(1)
    assert "limit" in call(deep, "calculator", {"expression": "1+1"}, depth=1)[0]
    slow = ToolBox(("python",), ToolLimits(timeout_s=1.0, max_total_s=30))
    t0 = time.perf_counter()
    out, rec = call(slow, "python", {"code": "import time; time.sleep(30)"})
    assert "did not finish" in out and time.perf_counter() - t0 < 5
    spent = ToolBox(("python",), ToolLimits(timeout_s=5, max_total_s=0.5))
    call(spent, "python", {"code": "print(1)"})  # ~0.1-0.3 s of sandbox start-up...
    spent.seconds = 0.6                          # ...and the request's tool time is used up
    assert "limit" in call(spent, "python", {"code": "print(2)"})[0]


def test_malformed_and_unknown_calls_are_errors_the_model_reads():
    box = ToolBox(("calculator",))
    out, rec = asyncio.run(box.call("{not json"))
    assert out.startswith("error") and rec["error"] == "malformed call"
    out, rec = call(box, "python", {"code": "print(1)"})
    assert "no tool named" in out and rec["error"] == "unknown tool"
    out, rec = asyncio.run(box.call(json.dumps({"name": "calculator", "arguments": json.dumps({"expression": "6*7"})})))
    assert out == "42"  # OpenAI-style arguments given as a JSON string
    with pytest.raises(ValueError, match="unknown tool"):
        ToolBox(("shell",))


def test_results_are_cached_by_tool_and_arguments_with_a_ttl_and_a_bound():
    cache = ToolCache(max_entries=2)
    box = ToolBox(("python",), ToolLimits(cache_ttl_s=60), cache)
    first, rec1 = call(box, "python", {"code": "import random; print(random.random())"})
    again, rec2 = call(box, "python", {"code": "import random; print(random.random())"})
    assert again == first and rec2["cached"] and not rec1["cached"] and cache.hits == 1
    other = ToolBox(("python",), ToolLimits(cache_ttl_s=0.0001), cache)  # a lane with a tiny TTL
    time.sleep(0.01)
    fresh, rec3 = call(other, "python", {"code": "import random; print(random.random())"})
    assert not rec3["cached"] and fresh != first
    for e in ("1+1", "2+2", "3+3"):
        call(ToolBox(("calculator",), ToolLimits(cache_ttl_s=60), cache), "calculator", {"expression": e})
    assert len(cache._data) == 2  # bounded: the oldest entries went


def test_failed_calls_are_not_cached():
    cache = ToolCache()
    box = ToolBox(("python",), ToolLimits(cache_ttl_s=60, max_calls=10), cache)
    call(box, "python", {"code": "raise SystemExit(3)"})
    _, rec = call(box, "python", {"code": "raise SystemExit(3)"})
    assert not rec["cached"]


# -- on the real engine ----------------------------------------------------------------------------------

class ScriptedCall(ThinkingMachine):
    """The model's first token is followed by a scripted tool call; everything after it is the real model."""

    script = ""

    def feed(self, text, tokens=1, logprob=None):
        if self.script and self.phase == "thinking" and not getattr(self, "_scripted", False):
            self._scripted = True
            return super().feed(text + self.script, tokens, logprob)
        return super().feed(text, tokens, logprob)


@pytest.fixture
def scripted_calls(monkeypatch):
    scripts: list[str] = []
    real = control.new_machine

    def make(spec, **kw):
        m = real(spec, **kw)
        m.__class__ = ScriptedCall
        m.script = scripts[0] if len(scripts) == 1 else scripts.pop(0)
        return m

    monkeypatch.setattr(control, "new_machine", make)
    return scripts


def tool_call(name: str, args: dict) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': args})}</tool_call>"


@pytest.mark.model
def test_a_tool_call_inside_thinking_pauses_runs_and_thinks_on(tiny_backend, scripted_calls):
    scripted_calls.append(tool_call("calculator", {"expression": "17 * 23"}))
    box = ToolBox(("calculator",), cache=None)
    spec = SampleSpec(Q, ThinkingBudget(40), Sampling(seed=3, max_answer_tokens=16), tools=box)
    g = asyncio.run(tiny_backend.sample(spec))
    assert g.tools == [{"name": "calculator", "arguments": {"expression": "17 * 23"}, "seconds": g.tools[0]["seconds"],
                        "cached": False, "error": None}]
    assert "<tool_response>\n391\n</tool_response>" in g.thinking
    after = g.thinking.split("</tool_response>", 1)[1]
    assert after.strip() or g.answer.strip(), "the model went on after the tool result"
    # the result is input the model reads, not thinking it wrote
    assert g.usage.tool_tokens == tiny_backend.count_tokens("391")
    assert g.usage.thinking_tokens <= 40 and g.thinking_report.used == g.usage.thinking_tokens


@pytest.mark.model
def test_two_sequences_calling_tools_in_the_same_step_run_them_in_parallel(tiny_backend, scripted_calls):
    code = "import time; a = time.time(); time.sleep(1.0); print(a, time.time())"
    scripted_calls.append(tool_call("python", {"code": code}))
    box = ToolBox(("python",), ToolLimits(cache_ttl_s=0, max_calls=4))
    spec = SampleSpec(Q, ThinkingBudget(24), Sampling(seed=5, temperature=0.8, max_answer_tokens=8), tools=box)
    gens = asyncio.run(tiny_backend.sample_many(spec, 2))
    spans = []
    for g in gens:
        assert len(g.tools) == 1 and g.tools[0]["error"] is None, g.tools
        a, b = map(float, g.thinking.split("<tool_response>\n", 1)[1].split("\n", 1)[0].split())
        spans.append((a, b))
    (a1, b1), (a2, b2) = spans
    assert max(a1, a2) < min(b1, b2), f"the two calls did not overlap: {spans}"


@pytest.mark.model
def test_past_the_depth_limit_the_sequence_answers(tiny_backend, scripted_calls):
    scripted_calls.append(tool_call("calculator", {"expression": "2 + 2"}))
    box = ToolBox(("calculator",), ToolLimits(max_depth=1))
    spec = SampleSpec(Q, ThinkingBudget(64), Sampling(seed=7, max_answer_tokens=12), tools=box)
    g = asyncio.run(tiny_backend.sample(spec))
    assert len(g.tools) == 1
    assert g.thinking_report.stopped == "tools"
    assert g.thinking.rstrip().endswith("</tool_response>"), "thinking ended right after the last allowed result"


def test_a_fenced_python_block_in_the_thinking_is_a_call_of_the_python_tool():
    from ponder.thinking.machine import ThinkingMachine

    m = ThinkingMachine(ThinkingBudget(200), max_answer_tokens=16, tools=True, fenced_python=True)
    seen = []
    for piece in ["Let me compute.\n", "```py", "thon\nprint(17", " * 23)\n", "```", "\nmore"]:
        d = m.feed(piece)
        seen.append(d.kind)
        if d.kind == "tool":
            break
    assert seen[-1] == "tool" and seen[:-1] == ["continue"] * (len(seen) - 1)
    assert json.loads(d.payload) == {"name": "python", "arguments": {"code": "print(17 * 23)"}}
    assert m.text[: d.keep].endswith("```")
    # without the python tool a fenced block is just thinking
    plain = ThinkingMachine(ThinkingBudget(200), max_answer_tokens=16, tools=True, fenced_python=False)
    assert all(plain.feed(p).kind == "continue" for p in ["```python\n", "print(1)\n", "```\n"])
    # a fence of another language is not a call and is not held back
    other = ThinkingMachine(ThinkingBudget(200), max_answer_tokens=16, tools=True, fenced_python=True)
    assert all(other.feed(p).kind == "continue" for p in ["```text\n", "hello\n", "```\n", "done"])
    assert "hello" in other.thinking


def test_a_call_that_arrives_one_character_a_token_is_still_a_call():
    """SmolLM2 spells <tool_call> in several tokens, a llama-server stream one piece each: the machine must hold a
    half-written opening tag instead of showing it as thinking (found by the llama-server driver's test)."""
    from ponder.backends.base import SampleSpec
    from ponder.config import ToolsConfig
    from ponder.thinking import control
    from ponder.tools import ToolCache, toolbox_for
    from ponder.types import Message, Sampling, ThinkingBudget

    tools = toolbox_for(ToolsConfig(enabled=["calculator"]), ("calculator",), ToolCache())
    m = control.new_machine(SampleSpec((Message("user", "q"),), ThinkingBudget(200), Sampling(), tools=tools),
                            cue_tokens=len)
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "17*23"}}</tool_call>'
    kinds = [m.feed(ch).kind for ch in "First: " + call]
    assert kinds[-1] == "tool" and set(kinds[:-1]) == {"continue"}
    assert "<tool" not in m.thinking.split("First:")[0] and m.thinking.startswith("First: <tool_call>")
