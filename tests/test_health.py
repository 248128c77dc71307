"""Active health checks of a fleet: a replica whose /health fails is ejected before any request finds out, and
readmitted as soon as it passes again; requests meanwhile go to the healthy one."""

from __future__ import annotations

import asyncio
import time

from ponder.backends.base import SampleSpec
from ponder.types import Message, Sampling, ThinkingBudget


def _wait(cond, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_a_failing_health_check_ejects_a_replica_and_a_passing_one_readmits_it():
    from fake_llama import FakeLlamaServer

    from ponder.backends.probe import text_engine_or_none
    from ponder.config import LaneConfig

    fakes = [FakeLlamaServer(lambda p: "ok</think> 7"), FakeLlamaServer(lambda p: "ok</think> 7")]
    lane = LaneConfig(name="fleet", backend="openai", base_urls=[f.url for f in fakes], health_interval_s=0.2,
                      eject_s=600)
    backend = text_engine_or_none(lane)
    try:
        state = lambda: {r["url"]: r for r in backend.replicas.state()}  # noqa: E731
        sick, well = fakes
        sick.health = 503
        assert _wait(lambda: state()[sick.url]["ejected"]), state()
        assert state()[sick.url]["calls"] == 0 and not state()[well.url]["ejected"]  # no request had to fail
        spec = SampleSpec((Message("user", "3 + 4?"),), ThinkingBudget(16), Sampling(seed=1, max_answer_tokens=8))
        for i in range(4):  # whatever replica their prompts hash to, they land on the healthy one
            asyncio.run(backend.sample(spec.seeded(i)))
        assert not sick.prompts and well.prompts
        sick.health = 200
        assert _wait(lambda: not state()[sick.url]["ejected"]), state()  # well before eject_s (600 s)
        assert state()[sick.url]["ejections"] == 1 and state()[sick.url]["health_failures"] >= 1
    finally:
        asyncio.run(backend.aclose())
        for f in fakes:
            f.close()


def test_each_samples_calls_are_pinned_to_one_slot_and_samples_spread_over_the_slots():
    """llama-server caches prompts per slot: a sample's continuation (after the cap closes its thinking) must go
    back to the slot that holds its text, and concurrent samples take the least loaded slots."""
    from fake_llama import FakeLlamaServer

    from ponder.backends.probe import text_engine_or_none
    from ponder.config import LaneConfig

    fake = FakeLlamaServer(lambda p: "3 " * 40 if "</think>" not in p.rsplit("assistant", 1)[-1] else "6",
                           slots=2)
    backend = text_engine_or_none(LaneConfig(name="one", backend="openai", base_url=fake.url,
                                             health_interval_s=0))
    spec = SampleSpec((Message("user", "3 + 3?"),), ThinkingBudget(8), Sampling(seed=1, max_answer_tokens=4))

    async def two():
        return await asyncio.gather(backend.sample(spec.seeded(0)), backend.sample(spec.seeded(1)))

    try:
        asyncio.run(two())
    finally:
        asyncio.run(backend.aclose())
        fake.close()
    by_slot: dict[int, list[str]] = {}
    for body in fake.bodies:
        by_slot.setdefault(body["id_slot"], []).append(body["prompt"])
    assert sorted(by_slot) == [0, 1], by_slot.keys()               # one sample a slot
    for prompts in by_slot.values():                               # the capped call, then its continuation
        assert len(prompts) == 2 and prompts[1].startswith(prompts[0])
    assert all(r.slot_load == [0, 0] for r in backend.replicas.replicas)  # every pin released


def _group_run(n_cmpl: bool, thought: str = "three and three make six, surely. " * 3):
    from fake_llama import FakeLlamaServer

    from ponder.backends.probe import text_engine_or_none
    from ponder.config import LaneConfig

    def reply(prompt: str) -> str:
        return "6" if "</think>" in prompt.rsplit("assistant", 1)[-1] else thought

    fake = FakeLlamaServer(reply, slots=4, n_cmpl=n_cmpl)
    backend = text_engine_or_none(LaneConfig(name="one", backend="openai", base_url=fake.url,
                                             health_interval_s=0))
    spec = SampleSpec((Message("user", "3 + 3?"),), ThinkingBudget(20), Sampling(seed=1, max_answer_tokens=4))
    try:
        gens = asyncio.run(backend.sample_many(spec, 6))
    finally:
        asyncio.run(backend.aclose())
        fake.close()
    return fake, gens


def test_samples_of_one_prompt_share_one_prefill_per_group_of_slots():
    """llama-server's n_cmpl: 6 samples on 4 slots are two calls that each prefill the prompt once (4 + 2
    children); every sample still thinks exactly its cap and continues its own text alone."""
    fake, gens = _group_run(True)
    groups = [b for b in fake.bodies if b.get("n_cmpl")]
    assert sorted(b["n_cmpl"] for b in groups) == [2, 4]
    assert len({b["seed"] for b in groups}) == 2                  # each group its own seed: children differ
    assert all(g.usage.thinking_tokens == 20 and g.answer == "6" for g in gens)
    base = groups[0]["prompt"]
    rest = [b["prompt"] for b in fake.bodies if not b.get("n_cmpl")]
    assert len(rest) == 6 and all(p.startswith(base) and "</think>" in p[len(base):] for p in rest)


def test_a_group_samples_prompt_count_is_the_engines_count_of_the_prompt():
    """Thinking that ends by itself (12 of 20 tokens): every child's end is read, its prompt count is the engine's
    count of the prompt (the stand-in: 4 characters a token), not of its continuation, which still follows."""
    fake, gens = _group_run(True, thought="six, surely.")
    base = next(b["prompt"] for b in fake.bodies if b.get("n_cmpl"))
    assert {g.usage.prompt_tokens for g in gens} == {len(base) // 4}
    assert all(g.usage.thinking_tokens == 12 and g.answer == "6" for g in gens)
    assert len([b for b in fake.bodies if not b.get("n_cmpl")]) == 6  # each continued alone after its close


def test_an_engine_without_n_cmpl_still_gives_every_sample():
    """An older llama-server ignores n_cmpl and streams one completion: the other samples run on their own."""
    fake, gens = _group_run(False)
    assert len(gens) == 6 and all(g.usage.thinking_tokens == 20 and g.answer == "6" for g in gens)


def test_a_malformed_group_stream_is_an_upstream_error_not_a_crash():
    import pytest
    from fake_llama import FakeLlamaServer

    from ponder.backends.probe import text_engine_or_none
    from ponder.config import LaneConfig
    from ponder.errors import BackendError

    fake = FakeLlamaServer(lambda p: "x", slots=4, n_cmpl=True)
    backend = text_engine_or_none(LaneConfig(name="one", backend="openai", base_url=fake.url, health_interval_s=0))
    fake.garbage = True
    spec = SampleSpec((Message("user", "3 + 3?"),), ThinkingBudget(8), Sampling(seed=1, max_answer_tokens=4))
    try:
        with pytest.raises(BackendError, match="malformed"):
            asyncio.run(backend.sample_many(spec, 3))
    finally:
        asyncio.run(backend.aclose())
        fake.close()
