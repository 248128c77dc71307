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
