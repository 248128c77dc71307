"""Drawing N samples of one request as cheaply as the engine allows.

* embedded engine: sequentially; llama.cpp keeps the evaluated prompt, so
  samples 2..N pay only for their own tokens (prefix reuse);
* upstreams that accept ``n``: one call returns all N (the server shares the
  prompt); budgets are enforced by ``max_tokens`` only on that path;
* other upstreams: N concurrent requests.
"""

from __future__ import annotations

import concurrent.futures as cf
from dataclasses import replace

from ponder.backends.base import Backend
from ponder.strategies.base import Sample, StrategyRequest
from ponder.thinking import control
from ponder.thinking.extract import extract_answer
from ponder.types import Generation, Message, ThinkingReport, Timings, Usage


def seeded(request: StrategyRequest, i: int) -> StrategyRequest:
    seed = request.sampling.seed
    return replace(request, sampling=request.sampling.with_seed(None if seed is None else seed + i))


def one(request: StrategyRequest, backend: Backend, i: int = 0, messages: tuple[Message, ...] | None = None) -> Sample:
    """The i-th independent sample (seed + i) of the request.

    With a lab pool on the request, the pool hands back the sample it already
    drew for index ``i`` (or draws and keeps it), so every strategy and every
    N of one item share the same draws.
    """
    if request.pool is not None and messages is None:
        return request.pool.get(i, lambda: _fresh(request, backend, i, None))
    return _fresh(request, backend, i, messages)


def _fresh(request: StrategyRequest, backend: Backend, i: int, messages: tuple[Message, ...] | None) -> Sample:
    r = seeded(request, i)
    g = control.run(backend, messages or r.messages, r.budget, r.sampling, cancel=r.cancel, loop_guard=r.loop_guard)
    return Sample(g, extract_answer(g.answer, kind=request.answer_kind) if g.answer else None)


def draw(request: StrategyRequest, backend: Backend, n: int, *, start: int = 0) -> list[Sample]:
    if n <= 0:
        return []
    info = backend.info
    if info.supports_n and not info.text_completion and n > 1 and hasattr(backend, "chat") and request.pool is None:
        return _draw_with_n(request, backend, n)
    if info.concurrent and n > 1:
        with cf.ThreadPoolExecutor(max_workers=n) as pool:
            return list(pool.map(lambda i: one(request, backend, start + i), range(n)))
    out = []
    for i in range(n):
        if request.cancel.cancelled:
            break
        out.append(one(request, backend, start + i))
    return out


def _draw_with_n(request: StrategyRequest, backend, n: int) -> list[Sample]:
    from ponder.thinking.prompts import with_think_instruction

    msgs = list(request.messages)
    if request.budget.enabled and not backend.info.native_reasoning:
        msgs = with_think_instruction(msgs)
    max_tokens = request.sampling.max_answer_tokens + request.budget.max_tokens
    choices, stats = backend.chat(msgs, max_tokens=max_tokens, sampling=request.sampling,
                                  thinking=request.budget.enabled, n=n)
    out = []
    for i, (thinking, answer, finish) in enumerate(choices):
        t = backend.count_tokens(thinking)
        a = backend.count_tokens(answer)
        usage = Usage(prompt_tokens=stats.prompt_tokens if i == 0 else 0, thinking_tokens=t, answer_tokens=a)
        rep = ThinkingReport(budget=request.budget.max_tokens, min=request.budget.min_tokens, used=t,
                             truncated=t >= request.budget.max_tokens and finish == "length",
                             stopped="end" if thinking else "none", effort=request.budget.effort)
        g = Generation(thinking, answer, usage, rep, Timings(), "length" if finish == "length" else "stop")
        out.append(Sample(g, extract_answer(answer, kind=request.answer_kind) if answer else None))
    return out
