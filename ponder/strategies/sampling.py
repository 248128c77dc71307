"""Drawing samples for a strategy: the one path every sample takes.

* N samples of one prompt are drawn together (:meth:`Backend.sample_many`):
  the embedded engine prefills the prompt once and decodes them in one
  batch; upstreams get N concurrent streams.
* Sample *i* is seeded with ``seed + i``, so strategies and the lab's pools
  agree on what "sample i" is.
* Every sample's events go to the request's sink (with a request-wide index),
  and its spend to the request's meter — as it runs and when it ends, also
  when it fails (the partial spend rides on the exception).
* Near the request's deadline no new samples are started.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace

from ponder.backends.base import Backend, SampleSpec
from ponder.strategies.base import Sample, StrategyRequest
from ponder.thinking.extract import extract_answer
from ponder.thinking.machine import AnswerDelta, Event, ThinkingDelta
from ponder.types import Generation, Message, Usage

#: a new sample is not started with less than this many seconds before the deadline
MIN_TIME_S = 0.5


class Counter:
    """Request-wide sample indices (several rounds of draws must not reuse an index)."""

    def __init__(self) -> None:
        self._it = itertools.count()
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._it)


def spec_of(request: StrategyRequest, messages: tuple[Message, ...] | None = None) -> SampleSpec:
    return SampleSpec(
        messages=messages or request.messages, budget=request.budget, sampling=request.sampling,
        loop_guard=request.loop_guard, cancel=request.cancel, deadline=request.deadline,
        answer_grace_s=request.answer_grace_s, tools=request.tools,
        response_format=request.response_format, client_tools=request.client_tools, tool_choice=request.tool_choice,
        prompt=request.prompt if messages is None else None, sched=request.sched,
    )


def time_left(request: StrategyRequest) -> bool:
    """May the strategy start another sample?"""
    if request.cancel.cancelled:
        return False
    return request.deadline is None or request.deadline.left() > MIN_TIME_S


def sample_of(g: Generation, answer_kind: str) -> Sample:
    return Sample(g, extract_answer(g.answer, kind=answer_kind) if g.answer else None)


async def fresh(request: StrategyRequest, backend: Backend, indices: list[int],
                messages: tuple[Message, ...] | None = None, spec: SampleSpec | None = None) -> list[Generation]:
    """Draw the samples ``indices`` (seed + i each) in one go; meter and stream them."""
    if not indices:
        return []
    spec = spec or spec_of(request, messages)
    counter = request.counter or Counter()
    ids = [counter.next() for _ in indices]
    meter, sink = request.meter, request.sink

    def on_event(k: int, e: Event) -> None:
        if isinstance(e, ThinkingDelta):
            state[k][0] = e.used
        elif isinstance(e, AnswerDelta):
            state[k][1] += 1
        meter.live(ids[k], state[k][0], state[k][1], prompt_read)
        if sink is not None:
            sink.sample_event(ids[k], e)

    state = [[0, 0] for _ in indices]
    # the prompt as prepared with the request (its count is the engine's, or the upstream's estimate)
    prompt_read = spec.prompt.n_tokens if spec.prompt is not None else 0
    contiguous = indices == list(range(indices[0], indices[0] + len(indices)))
    try:
        if request.early_exit is not None and backend.info.text_completion and spec.given_thinking is None:
            from ponder.backends.base import gather_all
            from ponder.strategies import probe

            gens = await gather_all([probe.sample(backend, spec.seeded(i), request.early_exit, request.answer_kind,
                                                  on_event=lambda e, k=k: on_event(k, e))
                                     for k, i in enumerate(indices)])
        elif contiguous:
            gens = await backend.sample_many(spec, len(indices), start=indices[0], on_event=on_event)
        else:
            from ponder.backends.base import gather_all

            gens = await gather_all([backend.sample(spec.seeded(i), on_event=lambda e, k=k: on_event(k, e))
                                     for k, i in enumerate(indices)])
    except BaseException as exc:
        # what the failed (or cancelled) samples had streamed is still spent; the prompt was read by each
        partial = getattr(exc, "partial_usage", None)
        prompt = partial.prompt_tokens if partial is not None else 0
        for k in range(len(indices)):
            meter.finish(ids[k], Usage(prompt_tokens=prompt, thinking_tokens=state[k][0], answer_tokens=state[k][1]))
        raise
    for k, g in enumerate(gens):
        meter.finish(ids[k], g.usage)
        if sink is not None:
            sink.sample_done(ids[k], g)
    return gens


async def draw(request: StrategyRequest, backend: Backend, n: int, *, start: int = 0) -> list[Sample]:
    """Samples ``start .. start+n-1`` of the request (from the lab's pool when there is one)."""
    if n <= 0 or not time_left(request):
        return []
    indices = list(range(start, start + n))
    if request.pool is not None:
        gens = await request.pool.get(indices, lambda missing: fresh(request, backend, missing))
    else:
        gens = await fresh(request, backend, indices)
    return [sample_of(g, request.answer_kind) for g in gens]


async def one(request: StrategyRequest, backend: Backend, i: int = 0,
              messages: tuple[Message, ...] | None = None) -> Sample:
    """The i-th sample (seed + i), optionally of a different conversation (a retry turn)."""
    if request.pool is not None and messages is None:
        return (await draw(request, backend, 1, start=i))[0]
    g = (await fresh(request, backend, [i], messages=messages))[0]
    return sample_of(g, request.answer_kind)


async def answer_only(request: StrategyRequest, backend: Backend, messages: list[Message], *,
                      max_tokens: int = 128) -> Generation:
    """A short greedy answer with thinking off (critiques, ratings); its spend is metered."""
    from ponder.types import Sampling, ThinkingBudget

    spec = SampleSpec(tuple(messages), ThinkingBudget(0), Sampling(temperature=0.0, max_answer_tokens=max_tokens),
                      cancel=request.cancel, deadline=request.deadline)
    g = await backend.sample(spec)
    request.meter.add(g.usage)
    return g


def with_sampling(request: StrategyRequest, **changes) -> StrategyRequest:
    return replace(request, sampling=replace(request.sampling, **changes))
