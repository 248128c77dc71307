"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio

from ponder.backends.base import SampleSpec
from ponder.types import Message, Sampling, ThinkingBudget


def arun(coro):
    return asyncio.run(coro)


def sample(backend, messages, budget: ThinkingBudget, sampling: Sampling = Sampling(), *, events=None, **kw):
    """One sample, synchronously; ``events`` (a list) collects the streamed events."""
    spec = SampleSpec(tuple(messages), budget, sampling, **kw)
    return asyncio.run(backend.sample(spec, on_event=events.append if events is not None else None))


Q = [Message("user", "What is 12 + 7?")]
