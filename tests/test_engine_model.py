"""The real tiny model through the embedded engine and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ponder.thinking import control
from ponder.types import Message, Sampling, ThinkingBudget

pytestmark = pytest.mark.model
Q = [Message("user", "What is 12 + 7? Answer with a number.")]


def ask(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ponder.cli", "ask", *args], capture_output=True, text=True, timeout=240)


def test_cli_max_thinking_32_caps_and_answers():
    p = ask("What is 12 + 7?", "--max-thinking-tokens", "32", "--json", "--seed", "4", "--max-answer-tokens", "48")
    assert p.returncode == 0, p.stderr
    body = json.loads(p.stdout)
    assert body["object"] == "chat.completion"
    reasoning = body["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning <= 32
    assert body["ponder"]["thinking"]["used"] == reasoning
    assert body["ponder"]["thinking"]["budget"] == 32
    assert body["choices"][0]["message"]["content"].strip()
    assert body["usage"]["completion_tokens"] == reasoning + (body["usage"]["completion_tokens"] - reasoning)
    assert body["ponder"]["timings"]["total_s"] > 0


def test_cli_effort_none_thinks_zero_tokens():
    p = ask("Say hello.", "--effort", "none", "--json", "--seed", "1", "--max-answer-tokens", "24")
    assert p.returncode == 0, p.stderr
    body = json.loads(p.stdout)
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert "reasoning_content" not in body["choices"][0]["message"]
    assert body["choices"][0]["message"]["content"]


def test_cli_plain_output_has_usage_line():
    p = ask("What is 2 + 2?", "--effort", "minimal", "--seed", "2", "--max-answer-tokens", "24", "--show-thinking")
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("[input ") and "thinking" in last and "answer" in last and last.endswith("s]")


@pytest.mark.parametrize("args, needle", [
    (["x", "--effort", "huge"], "--effort"),
    (["x", "--max-thinking-tokens", "-4"], "--max-thinking-tokens"),
    (["x", "--max-thinking-tokens", "99999999"], "--max-thinking-tokens"),
    (["x", "--model", "/no/such/model.gguf"], "model file not found"),
    (["   "], "QUESTION"),
    (["x", "--min-thinking-tokens", "500", "--max-thinking-tokens", "10"], "--min-thinking-tokens"),
])
def test_cli_bad_input_is_one_line_exit_2(args, needle):
    p = ask(*args)
    assert p.returncode == 2
    assert needle in p.stderr
    assert "Traceback" not in p.stderr


def test_hard_cap_on_real_model(tiny_backend):
    for seed in range(3):
        g = control.run(tiny_backend, Q, ThinkingBudget(24), Sampling(seed=seed, max_answer_tokens=24))
        assert g.usage.thinking_tokens <= 24
        assert g.thinking_report.used == g.usage.thinking_tokens
        if g.thinking_report.truncated:
            assert g.thinking_report.used == 24
        assert g.answer.strip()


def test_min_thinking_on_real_model(tiny_backend):
    g = control.run(tiny_backend, Q, ThinkingBudget(200, min_tokens=80), Sampling(seed=5, max_answer_tokens=16))
    assert g.usage.thinking_tokens >= 80 or g.thinking_report.stopped in ("repetition", "budget")


def test_prefix_state_is_reused_across_samples(tiny_backend):
    s = Sampling(seed=1, max_answer_tokens=8)
    control.run(tiny_backend, Q, ThinkingBudget(0), s)
    g = control.run(tiny_backend, Q, ThinkingBudget(0), s.with_seed(2))
    assert g.usage.cached_prompt_tokens >= g.usage.prompt_tokens - 1
    assert g.usage.prompt_tokens > 10


def test_same_seed_same_answer(tiny_backend):
    # llama.cpp's float results depend on how the prompt was split into
    # batches, so compare runs that both reuse the cached prompt
    s = Sampling(seed=11, max_answer_tokens=16)
    control.run(tiny_backend, Q, ThinkingBudget(16), s)
    a = control.run(tiny_backend, Q, ThinkingBudget(16), s)
    b = control.run(tiny_backend, Q, ThinkingBudget(16), s)
    assert (a.thinking, a.answer) == (b.thinking, b.answer)
