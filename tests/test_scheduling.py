"""Scheduling classes and fair admission: short requests first, no key takes every slot, a key cannot raise its class."""

from __future__ import annotations

import asyncio

import pytest

from ponder.backends.base import SampleSpec
from ponder.backends.dialects import priority_fields
from ponder.backends.openai_compat import OpenAICompatBackend
from ponder.config import config_from_dict
from ponder.planning import plan_request
from ponder.request import PonderRequest
from ponder.tenancy.tenancy import Principal, Tenancy
from ponder.config_ops import KeyLimits
from ponder.tenancy.store import MemoryStore
from ponder.types import Message, Sampling, ThinkingBudget

Q = (Message("user", "Count from one to twenty in words."),)


def cfg(**server):
    return config_from_dict({"lanes": [{"name": "default"}], "ledger": {"url": "off"}, "server": server})


def test_the_class_comes_from_the_effort_and_a_request_may_only_lower_it():
    c = cfg()
    assert plan_request(PonderRequest(Q, effort="none"), c).priority == 0
    assert plan_request(PonderRequest(Q, effort="high"), c).priority == 2
    lowered = plan_request(PonderRequest(Q, effort="none", priority="batch"), c)
    assert lowered.priority == 2
    raised = plan_request(PonderRequest(Q, effort="high", priority="interactive"), c)
    assert raised.priority == 2 and raised.clamped["ponder.priority"]["to"] == "batch"
    lane = cfg(scheduling={"lanes": {"default": "interactive"}})
    assert plan_request(PonderRequest(Q, effort="high"), lane).priority == 0


def test_a_key_caps_the_class_and_names_its_share():
    c = cfg()
    t = Tenancy(c, MemoryStore())
    plan = plan_request(PonderRequest(Q, effort="none"), c)
    capped = t.apply_limits(Principal("bulk", KeyLimits(priority="batch", weight=0.5)), plan)
    assert capped.priority == 2 and capped.sched_key == "bulk" and capped.sched_weight == 0.5
    free = t.apply_limits(Principal("team", KeyLimits()), plan)
    assert free.priority == 0


def test_priority_reaches_vllm_and_sglang_in_their_own_polarity():
    spec = SampleSpec(Q, ThinkingBudget(0), Sampling(), sched=(0, "k", 1.0))
    assert priority_fields("vllm", (0, "k", 1.0)) == {"priority": 0}      # vLLM: lower first
    assert priority_fields("vllm", (2, "k", 1.0)) == {"priority": 2}
    assert priority_fields("sglang", (0, "k", 1.0)) == {"priority": 2}    # SGLang: higher first
    assert priority_fields("none", (0, "k", 1.0)) == {} and priority_fields("vllm", None) == {}
    b = OpenAICompatBackend("http://127.0.0.1:9/v1", "m")
    assert "priority" not in b._body(Q, max_tokens=8, spec=spec, thinking=False)
    b.priority_mode = "vllm"
    assert b._body(Q, max_tokens=8, spec=spec, thinking=False)["priority"] == 0


@pytest.mark.model
def test_the_engine_admits_by_class_then_fair_share():
    """One decoding place, a long batch sequence in it: the interactive request preempts it, the standard ones
    follow (key A's three queued samples do not all go before key B's one), then the paused long one resumes
    before the batch request that came later."""
    from ponder.backends.llama_cpp import LlamaCppBackend

    b = LlamaCppBackend(n_ctx=1024, max_sequences=1)
    order: list[str] = []

    async def one(name: str, sched: tuple, tokens: int, delay: float) -> None:
        await asyncio.sleep(delay)
        spec = SampleSpec(Q, ThinkingBudget(tokens, min_tokens=tokens), Sampling(seed=1, max_answer_tokens=2),
                          sched=sched)
        await b.sample(spec)
        order.append(name)

    async def go() -> None:
        await asyncio.gather(
            one("long-batch", (2, "x", 1.0), 48, 0.0),
            one("A1-standard", (1, "A", 1.0), 4, 0.05), one("A2-standard", (1, "A", 1.0), 4, 0.06),
            one("A3-standard", (1, "A", 1.0), 4, 0.07), one("B1-standard", (1, "B", 1.0), 4, 0.08),
            one("batch", (2, "C", 1.0), 4, 0.09), one("interactive", (0, "D", 1.0), 4, 0.10))

    try:
        asyncio.run(go())
    finally:
        b.close()
    assert order[0] == "interactive" and order[-2:] == ["long-batch", "batch"], order
    assert order.index("B1-standard") < order.index("A3-standard"), order


@pytest.mark.model
def test_a_preempted_greedy_sequence_produces_exactly_the_tokens_of_an_unpreempted_run():
    from ponder.backends.llama_cpp import LlamaCppBackend

    b = LlamaCppBackend(n_ctx=1024, max_sequences=1)
    long_spec = SampleSpec(Q, ThinkingBudget(96, min_tokens=96), Sampling(temperature=0.0, max_answer_tokens=8),
                           sched=(2, "bulk", 1.0))
    short = SampleSpec((Message("user", "Hi"),), ThinkingBudget(4), Sampling(temperature=0.0, max_answer_tokens=4),
                       sched=(0, "chat", 1.0))

    async def alone():
        return await b.sample(long_spec)

    async def interrupted():
        async def later():
            await asyncio.sleep(0.15)  # the long one is decoding by now
            return await b.sample(short)
        return await asyncio.gather(b.sample(long_spec), later())

    try:
        solo = asyncio.run(alone())
        before = b.engine.preemptions
        mixed, quick = asyncio.run(interrupted())
        assert b.engine.preemptions == before + 1 and b.engine.resumed >= 1
    finally:
        b.close()
    assert mixed.thinking == solo.thinking and mixed.answer == solo.answer
    assert mixed.usage.thinking_tokens == solo.usage.thinking_tokens == 96
    assert quick.timings.total_s < mixed.timings.total_s


@pytest.mark.model
def test_a_paused_sequences_deadline_and_cancellation_act_while_it_is_paused():
    """Two decoding places; an interactive request of 800 thinking tokens pauses two batch sequences.  The one
    whose deadline passes at 1.5 s answers within its grace while the interactive one still decodes; the
    cancelled one ends at once.  (Acted on only at resume, both would end after the interactive one.)"""
    import time as _time

    from ponder.backends.llama_cpp import LlamaCppBackend
    from ponder.thinking.machine import LoopGuardSettings
    from ponder.types import CancelToken, Deadline

    b = LlamaCppBackend(n_ctx=2048, max_sequences=2)
    cancel = CancelToken()
    off = LoopGuardSettings(enabled=False)
    ended: dict[str, float] = {}

    async def run(name: str, spec: SampleSpec, delay: float = 0.0):
        await asyncio.sleep(delay)
        g = await b.sample(spec)
        ended[name] = _time.perf_counter()
        return g

    async def go():
        t0 = _time.perf_counter()
        long_budget = ThinkingBudget(400, min_tokens=400)
        timed = SampleSpec(Q, long_budget, Sampling(seed=1, max_answer_tokens=6), sched=(2, "bulk", 1.0),
                           deadline=Deadline.after(1.5), answer_grace_s=1.0, loop_guard=off)
        dropped = SampleSpec(Q, long_budget, Sampling(seed=2, max_answer_tokens=6), sched=(2, "bulk", 1.0),
                             cancel=cancel, loop_guard=off)
        chat = SampleSpec(Q, ThinkingBudget(800, min_tokens=800), Sampling(seed=3, max_answer_tokens=4),
                          sched=(0, "chat", 1.0), loop_guard=off)

        async def cancel_later():
            await asyncio.sleep(0.8)
            cancel.cancel()

        res = await asyncio.gather(run("timed", timed), run("dropped", dropped), run("chat", chat, 0.3),
                                   cancel_later())
        return t0, res

    try:
        t0, (timed, dropped, chat, _) = asyncio.run(go())
        preempted = b.engine.preemptions
    finally:
        b.close()
    assert preempted >= 1
    assert timed.finish_reason != "cancelled" and timed.usage.thinking_tokens < 400, timed
    assert ended["timed"] < ended["chat"] and ended["dropped"] < ended["chat"], (ended, t0, chat, dropped)
    assert ended["timed"] - t0 < 1.5 + 1.0 + 1.0
    assert timed.timings.preempted_s > 0.3


@pytest.mark.model
def test_kv_save_and_restore_frees_and_reclaims_cells():
    """512 KV cells: a long greedy batch sequence reserves ~400, an interactive request needs ~150 more.  The long
    one is saved out of the cache (its cells freed), the interactive one runs and ends first, the long one is
    restored and finishes with exactly the tokens of an uninterrupted run."""
    from ponder.backends.llama_cpp import LlamaCppBackend
    from ponder.thinking.machine import LoopGuardSettings

    off = LoopGuardSettings(enabled=False)
    b = LlamaCppBackend(n_ctx=512, kv_cells=512, max_sequences=2, cache_slots=0)
    long_spec = SampleSpec(Q, ThinkingBudget(300, min_tokens=300), Sampling(temperature=0.0, max_answer_tokens=8),
                           sched=(2, "bulk", 1.0), loop_guard=off)
    short = SampleSpec((Message("user", "Hi"),), ThinkingBudget(64), Sampling(temperature=0.0, max_answer_tokens=4),
                       sched=(0, "chat", 1.0))
    seen: list[dict] = []

    async def interrupted():
        async def later():
            await asyncio.sleep(0.3)  # the long one is decoding by now
            task = asyncio.ensure_future(b.sample(short))
            while not task.done():  # what the engine holds while the short one runs
                seen.append(b.engine.load())
                await asyncio.sleep(0.01)
            return await task
        return await asyncio.gather(b.sample(long_spec), later())

    try:
        solo = asyncio.run(b.sample(long_spec))
        mixed, quick = asyncio.run(interrupted())
        load = b.engine.load()
    finally:
        b.close()
    assert load["kv_saved"] == 1 and load["kv_restored"] == 1, load
    # while the short one ran, the long one was out of the cache (restored only after)
    assert max(x["saved_out"] for x in seen) == 1
    assert mixed.thinking == solo.thinking and mixed.answer == solo.answer
    assert mixed.usage.thinking_tokens == solo.usage.thinking_tokens == 300
    assert quick.timings.total_s < mixed.timings.total_s
    assert mixed.timings.preempted_s > 0
    assert load["kv_reserved"] == 0                   # every reservation given back


@pytest.mark.model
def test_a_key_over_its_share_gives_a_place_back_to_another_key_at_once():
    """Two places, one class: key "bulk" fills both with 4 samples of 200 tokens; key "chat" sends one request.
    Equal weights give each key one place, so a bulk sample pauses at the next step and the chat request is
    admitted at once and ends before any bulk sample (first come, first served: it waits for one to end)."""
    from ponder.backends.llama_cpp import LlamaCppBackend
    from ponder.thinking.machine import LoopGuardSettings

    off = LoopGuardSettings(enabled=False)
    b = LlamaCppBackend(n_ctx=1024, max_sequences=2)
    bulk = SampleSpec(Q, ThinkingBudget(200, min_tokens=200), Sampling(seed=4, max_answer_tokens=4),
                      sched=(1, "bulk", 1.0), loop_guard=off)
    chat = SampleSpec((Message("user", "Hi"),), ThinkingBudget(8), Sampling(temperature=0.0, max_answer_tokens=4),
                      sched=(1, "chat", 1.0))

    async def go():
        async def later():
            await asyncio.sleep(0.3)
            return await b.sample(chat)
        return await asyncio.gather(b.sample_many(bulk, 4), later())

    try:
        samples, quick = asyncio.run(go())
        paused = b.engine.preemptions
    finally:
        b.close()
    assert paused >= 1
    first_bulk = min(g.timings.total_s for g in samples)
    assert quick.timings.queue_s < 0.25 * first_bulk, (quick.timings, first_bulk)
    assert 0.3 + quick.timings.total_s < first_bulk
    assert all(g.usage.thinking_tokens == 200 for g in samples)


@pytest.mark.model
def test_a_paused_request_reports_how_long_it_was_paused():
    """Through the service (what every API answers with): a batch request paused for an interactive one reports
    its pause in timings.preempted_s; the interactive one reports none."""
    from ponder.service import Ponder

    svc = Ponder(config_from_dict({"ledger": {"url": "off"}, "thinking": {"loop_guard": {"enabled": False}},
                                   "lanes": [{"name": "default", "max_sequences": 1, "n_ctx": 1024}]}))

    async def go():
        async def one(delay: float, **kw):
            await asyncio.sleep(delay)
            plan = await svc.prepare(PonderRequest(Q, seed=1, **kw).validate())
            return await svc.run(plan).execute()

        try:
            await one(0.0, effort="none", max_answer_tokens=1)  # the model loaded before the clock matters
            return await asyncio.gather(one(0.0, priority="batch", max_thinking_tokens=160, min_thinking_tokens=160,
                                            max_answer_tokens=4),
                                        one(0.5, effort="none", max_answer_tokens=6))
        finally:
            await svc.aclose()

    long, short = asyncio.run(go())
    assert long.status == 200 and short.status == 200
    assert short.timings.preempted_s == 0.0
    assert 0.0 < long.timings.preempted_s < long.timings.total_s
    assert long.timings.to_dict()["preempted_s"] == round(long.timings.preempted_s, 6)
