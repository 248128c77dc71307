"""The embedded engine on the real tiny model: batching, prefix sharing, control, cancellation, the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from ponder.backends.base import SampleSpec
from ponder.backends.llama_cpp import LlamaCppBackend
from ponder.thinking.machine import LoopGuardSettings, ThinkingDelta
from ponder.types import CancelToken, Message, Sampling, ThinkingBudget

from helpers import sample

pytestmark = pytest.mark.model
Q = [Message("user", "What is 12 + 7? Answer with a number.")]


def ask(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ponder.cli", "ask", *args], capture_output=True, text=True, timeout=240)


# -- the CLI -------------------------------------------------------------------------------------------

def test_cli_max_thinking_32_caps_and_answers():
    p = ask("What is 12 + 7?", "--max-thinking-tokens", "32", "--json", "--seed", "4", "--max-answer-tokens", "48")
    assert p.returncode == 0, p.stderr
    body = json.loads(p.stdout)
    assert body["object"] == "chat.completion"
    reasoning = body["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning <= 32
    assert body["ponder"]["thinking"]["used"] == reasoning
    assert body["ponder"]["thinking"]["budget"] == 32
    content = body["choices"][0]["message"]["content"]
    assert content.strip() and "<think>" not in content and "</think>" not in content
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
    (["x", "--strategy", "telepathy"], "--strategy"),
    (["x", "--strategy", "self-consistency", "--param", "n=0"], "--param n"),
])
def test_cli_bad_input_is_one_line_exit_2(args, needle):
    p = ask(*args)
    assert p.returncode == 2
    assert needle in p.stderr
    assert "Traceback" not in p.stderr


# -- thinking control on the real model -----------------------------------------------------------------

def test_hard_cap_on_real_model(tiny_backend):
    for seed in range(3):
        g = sample(tiny_backend, Q, ThinkingBudget(24), Sampling(seed=seed, max_answer_tokens=24))
        assert g.usage.thinking_tokens <= 24
        assert g.thinking_report.used == g.usage.thinking_tokens
        if g.thinking_report.truncated:
            assert g.thinking_report.used == 24
        assert g.answer.strip()


def test_min_thinking_on_real_model(tiny_backend):
    # the loop guard off, so nothing but the minimum decides how long the trace is
    off = LoopGuardSettings(enabled=False)
    free = sample(tiny_backend, Q, ThinkingBudget(200), Sampling(seed=5, max_answer_tokens=16), loop_guard=off)
    assert free.usage.thinking_tokens < 80 and free.thinking_report.stopped == "end"  # it would stop early...
    g = sample(tiny_backend, Q, ThinkingBudget(200, min_tokens=80), Sampling(seed=5, max_answer_tokens=16),
               loop_guard=off)
    assert g.usage.thinking_tokens >= 80  # ...and is kept thinking with "Wait," until the minimum
    assert g.thinking_report.continuations >= 1 and "Wait," in g.thinking


def test_same_seed_same_answer(tiny_backend):
    s = Sampling(seed=11, max_answer_tokens=16)
    a = sample(tiny_backend, Q, ThinkingBudget(16), s)
    b = sample(tiny_backend, Q, ThinkingBudget(16), s)
    assert (a.thinking, a.answer) == (b.thinking, b.answer)


def test_logprobs_are_recorded_for_every_generated_token(tiny_backend):
    g = sample(tiny_backend, Q, ThinkingBudget(16), Sampling(seed=3, max_answer_tokens=12, top_logprobs=3))
    lps = g.logprobs
    assert g.thinking_report.continuations == 0  # no injected cues: every counted token was sampled
    assert lps and len(lps) == g.usage.thinking_tokens + g.usage.answer_tokens
    assert all(t.logprob <= 0.0 for t in lps)
    assert all(len(t.top) == 3 and t.top[0][1] >= t.top[-1][1] for t in lps)
    # the sampled token is among the alternatives at least where it was the most likely one
    assert any(t.token == t.top[0][0] for t in lps)
    assert {t.phase for t in lps} <= {"thinking", "answer"}


# -- batching, prefix sharing, admission, cancellation ------------------------------------------------------

def test_eight_samples_decode_together_distinct_seeded_and_capped(tiny_backend):
    spec = SampleSpec(tuple(Q), ThinkingBudget(24), Sampling(seed=100, temperature=0.9, max_answer_tokens=16))
    engine = tiny_backend.engine
    before = engine.tokens_decoded
    gens = asyncio.run(tiny_backend.sample_many(spec, 8))
    decoded = engine.tokens_decoded - before
    assert len(gens) == 8
    texts = {(g.thinking, g.answer) for g in gens}
    assert len(texts) >= 6, "eight seeded samples should mostly differ"
    for g in gens:
        assert g.usage.thinking_tokens <= 24
        assert g.thinking_report.used == g.usage.thinking_tokens
    # the prompt was evaluated once for all eight: everything decoded is one prompt plus each sample's own tokens
    prompt = gens[0].usage.prompt_tokens
    own = sum(g.usage.thinking_tokens + g.usage.answer_tokens for g in gens)
    assert decoded < 2 * prompt + own + 8 * 64, (decoded, prompt, own)
    assert decoded < 8 * prompt, "eight separate prefills would cost at least 8 x the prompt"


def test_admission_limits_sequences_and_everyone_finishes():
    b = LlamaCppBackend(None, n_ctx=1024, max_sequences=2, cache_slots=1)
    try:
        spec = SampleSpec(tuple(Q), ThinkingBudget(16), Sampling(seed=1, max_answer_tokens=8))
        peak = {"active": 0}

        async def watch():
            while True:
                peak["active"] = max(peak["active"], b.load()["active"])
                await asyncio.sleep(0.005)

        async def main():
            w = asyncio.ensure_future(watch())
            gens = await asyncio.gather(*(b.sample(spec.seeded(i)) for i in range(5)))
            w.cancel()
            return gens

        gens = asyncio.run(main())
        assert len(gens) == 5 and all(g.answer or g.thinking for g in gens)
        assert peak["active"] <= 2
        assert any(g.timings.queue_s > 0 for g in gens), "three of five had to wait for a slot"
    finally:
        b.close()


def test_cancelled_sequence_frees_its_slot_and_the_next_starts_at_once():
    b = LlamaCppBackend(None, n_ctx=2048, max_sequences=1, cache_slots=0)
    try:
        cancel = CancelToken()
        seen = []

        def on(e):
            if isinstance(e, ThinkingDelta):
                seen.append(e)
                if len(seen) == 10:
                    cancel.cancel()

        long_spec = SampleSpec(tuple(Q), ThinkingBudget(1500, min_tokens=1500), Sampling(seed=2, max_answer_tokens=8),
                               cancel=cancel)
        short = SampleSpec(tuple(Q), ThinkingBudget(0), Sampling(seed=3, max_answer_tokens=4))

        async def main():
            first = asyncio.ensure_future(b.sample(long_spec, on_event=on))
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            second = await b.sample(short)
            return await first, second, time.perf_counter() - t0

        g1, g2, waited = asyncio.run(main())
        assert g1.finish_reason == "cancelled" and g1.usage.thinking_tokens < 100
        assert g2.answer and waited < 10
        assert b.load()["active"] == 0 and b.load()["kv_reserved"] == 0
    finally:
        b.close()


def test_a_sequence_that_fills_its_context_ends_with_a_clear_reason():
    b = LlamaCppBackend(None, n_ctx=256, cache_slots=0)
    try:
        g = sample(b, Q, ThinkingBudget(180, min_tokens=180), Sampling(seed=4, max_answer_tokens=100))
        assert g.usage.prompt_tokens + g.usage.thinking_tokens + g.usage.answer_tokens <= 256
        assert g.finish_reason == "length" or g.thinking_report.stopped in ("context", "budget", "repetition")
    finally:
        b.close()


def test_batch_of_one_reproduces_llama_generate_token_for_token():
    """With flash attention off (as ``Llama`` has it), one sequence samples exactly what Llama.generate samples."""
    from llama_cpp import Llama

    b = LlamaCppBackend(None, n_ctx=1024, flash_attn=False, cache_slots=0)
    try:
        from ponder.backends.sequences import Done, SeqRequest
        from ponder.thinking.completion import CompletionMachine

        prompt = b.render_chat(Q)
        ids = b._prompt_ids(prompt)
        got = {}

        async def ours(seed: int) -> list[int]:
            loop = asyncio.get_running_loop()
            q: asyncio.Queue = asyncio.Queue()
            m = CompletionMachine(24)
            req = SeqRequest(m, lambda e: loop.call_soon_threadsafe(q.put_nowait, e),
                             sampling=Sampling(temperature=0.7, top_p=0.95, top_k=40, seed=seed), max_new=32)
            b.engine.submit(ids, [req])
            while not isinstance(await q.get(), Done):
                pass
            return m.text

        llm = Llama(model_path=str(b.path), n_ctx=1024, n_threads=b.engine.n_threads, verbose=False)
        for seed in (1, 2):
            got = asyncio.run(ours(seed))
            llm.set_seed(seed)
            ref = []
            for t in llm.generate(ids, top_k=40, top_p=0.95, min_p=0.0, temp=0.7, repeat_penalty=1.0, reset=True):
                if llm._model.token_eos() == t or t in (llm.token_eos(),):
                    break
                ref.append(t)
                if len(ref) == 24:
                    break
            ref_text = b"".join(b.engine.piece(t) for t in ref).decode("utf-8", errors="replace")
            assert got == ref_text, f"seed {seed}"
        llm.close()
    finally:
        b.close()


def test_summaries_run_next_to_the_generation_without_disturbing_it():
    """A summary shares the engine (batched with the main sequence) and leaves the main sequence intact.

    Batching changes floating-point accumulation order, so greedy texts may part ways at a near-tie; up to
    that point every token and its log-probability must be the same as without summaries (a corrupted KV
    or a mixed-up sequence would show at once).
    """
    from ponder.config import PonderConfig
    from ponder.service import Ponder

    b = LlamaCppBackend(None, n_ctx=2048)
    try:
        service = Ponder(PonderConfig(lanes=[{"name": "default", "n_ctx": 2048}], ledger={"url": "off"}),
                         backends={"default": b})
        spec = SampleSpec((Message("user", "Explain step by step why the sky is blue."),),
                          ThinkingBudget(128, min_tokens=128), Sampling(temperature=0.0, max_answer_tokens=16))

        async def main():
            alone = await b.sample(spec)
            summaries = []

            async def summarize_while_it_thinks(task):
                while not task.done():
                    await asyncio.sleep(0.15)
                    text, usage, _ = await service.summarize("The user asks about the sky. Blue light scatters "
                                                             "more than red light in the air.", tokens=10)
                    summaries.append((text, usage))

            task = asyncio.ensure_future(b.sample(spec))
            await summarize_while_it_thinks(task)
            return alone, await task, summaries

        alone, together, summaries = asyncio.run(main())
        assert len(summaries) >= 2 and all(u.completion_tokens > 0 for _, u in summaries)
        assert together.finish_reason in ("stop", "length") and together.thinking_report.stopped == "budget"
        assert together.usage.thinking_tokens == alone.usage.thinking_tokens == 128
        same = 0
        for x, y in zip(alone.logprobs, together.logprobs):
            if x.token != y.token:
                break
            assert abs(x.logprob - y.logprob) < 0.3, (same, x, y)  # float noise is ~0.1 here; corruption is >> 1
            same += 1
        assert same >= 16, f"the runs parted after {same} tokens"
    finally:
        b.close()


@pytest.mark.parametrize("grace", [0.0, 30.0])
def test_server_answer_grace_reaches_the_engine(tiny_backend, grace):
    """``server.answer_grace_s`` is what the engine gives the answer after the deadline cuts the thinking.

    The trace is kept thinking (a minimum it cannot reach, no loop guard) until the 0.6 s deadline cuts it;
    with no grace the answer is stopped at once, with 30 s it runs to its own end.
    """
    from ponder.config import PonderConfig
    from ponder.request import PonderRequest
    from ponder.service import Ponder

    cfg = PonderConfig(lanes=[{"name": "default", "n_ctx": 2048}], ledger={"url": "off"},
                       server={"answer_grace_s": grace},
                       thinking={"loop_guard": {"enabled": False}})
    service = Ponder(cfg, backends={"default": tiny_backend})
    plan = service.prepare_sync(PonderRequest((Message("user", "Explain step by step why the sky is blue."),),
                                              max_thinking_tokens=1500, min_thinking_tokens=1500,
                                              max_answer_tokens=24, temperature=0.0, deadline_s=0.6))
    outcome = asyncio.run(service.ask(plan))
    g = outcome.results[0].chosen
    assert g.thinking_report.stopped == "deadline"
    if grace == 0.0:
        assert g.finish_reason == "deadline" and g.usage.answer_tokens <= 2
    else:
        assert g.finish_reason in ("stop", "length") and g.usage.answer_tokens > 2
