"""N samples of one prompt on llama-server, prefilled once: one call with ``n_cmpl`` children per group of slots.

llama-server caches prompts per slot, so N samples sent as N calls prefill
the prompt once in every slot they land in (measured: 3.98x one prompt for 8
samples on 4 slots).  A call with ``n_cmpl: k`` prefills the prompt once and
copies its KV to ``k - 1`` child slots; the children's tokens arrive in one
stream, told apart by ``index``.  Each sample keeps its own thinking machine:

* a sample whose machine decides something (the cap's close, ``Wait,``, a
  deadline) leaves the group: the rest of its child's tokens are ignored,
  and it continues alone with :func:`ponder.backends.text_driver.calls` —
  the same path as a single sample, pinned to a slot; once every sample has
  left, the stream is closed and the engine stops the children;
* a sample whose child ended by itself before its machine was done
  (end of turn, the call's limit) continues alone the same way.

Used only where it changes nothing a sample sees: no tools (a tool call pauses
one text) and no per-token monitor (confidence strategies stop a trace by
closing its stream).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ponder.backends.base import SampleSpec
from ponder.backends.dialects import CallEnd, TokenTally, priority_fields
from ponder.backends.replicas import AFFINITY_CHARS
from ponder.backends.text_driver import calls, prompt_and_room, settle, sse_objects, upstream_errors
from ponder.errors import UpstreamTimeout
from ponder.thinking import control
from ponder.types import Generation, Usage


def groupable(backend: Any, spec: SampleSpec, n: int) -> bool:
    """Can ``n`` samples of ``spec`` share one prefill on this engine?"""
    return (n > 1 and getattr(backend.dialect, "groups", False) and backend.slots_per_replica > 1
            and spec.tools is None and spec.monitor is None and spec.given_thinking is None
            # the group call carries no grammar: a sample that starts in its answer must not need one
            and (spec.budget.max_tokens > 0 or spec.sampling.grammar is None))


class _Member:
    """One sample of a group: its spec, machine, clock and what its part of the group call left it with."""

    def __init__(self, backend: Any, spec: SampleSpec, index: int, on_event) -> None:
        self.spec, self.index = spec, index
        self.clock = control.Clock()
        self.usage, self.tools = Usage(), []
        self.decision = None
        self.end: CallEnd | None = None
        self.tally = TokenTally()
        #: the prompt counts its child's first piece carried (llama-server), for when its end never arrives
        self.counts: CallEnd | None = None

        def emit(e) -> None:
            self.clock.saw(e)
            if on_event is not None:
                on_event(index, e)

        self.m = control.new_machine(spec, cue_tokens=backend.count_tokens, on_event=emit)

    @property
    def open(self) -> bool:
        """Still reading its child's tokens from the group stream."""
        return self.decision is None and self.end is None


async def drive_group(backend: Any, spec: SampleSpec, n: int, start: int, on_event) -> list[Generation]:
    """``n`` samples (seeds ``start + i``; events labelled ``i``) of ``spec``, prefilled once per group."""
    base, room = prompt_and_room(backend, spec)
    members = [_Member(backend, spec.seeded(start + i), i, on_event) for i in range(n)]
    k = backend.slots_per_replica
    groups = [members[i:i + k] for i in range(0, n, k)]
    await asyncio.gather(*(_group_call(backend, base, room, g) for g in groups))

    # every member read the same prompt: a member whose end the stream did not reach takes another's count
    def seen(mb: _Member) -> CallEnd | None:
        return mb.end if mb.end is not None and mb.end.prompt_tokens else mb.counts

    known = next((c.prompt_tokens for c in map(seen, members) if c is not None and c.prompt_tokens), 0)

    async def finish(mb: _Member) -> Generation:
        c = seen(mb)
        if c is not None and c.prompt_tokens:
            mb.usage.prompt_tokens = c.prompt_tokens
            mb.usage.cached_prompt_tokens = min(c.cached_tokens, c.prompt_tokens)
        else:
            mb.usage.prompt_tokens = known or backend.count_tokens(base)
        if mb.m.phase != "done":
            decision, deadline = mb.decision, mb.spec.deadline
            if decision is not None or (mb.end is not None and mb.end.reason != "length"):
                decision, deadline = await settle(backend, mb.spec, mb.m, decision, mb.end or CallEnd(), mb.tools,
                                                  mb.usage, deadline)
            # else the group call's own limit (or a stream without this child's end): the sample simply goes on
            if mb.m.phase != "done" and (decision is None or decision.kind != "stop"):
                # its continuation's prompt is this prompt plus its own text: not the sample's prompt count
                await calls(backend, mb.spec, mb.m, base, room, mb.usage, mb.tools, first=False, deadline=deadline)
        cancelled = mb.spec.cancel.cancelled and mb.m.finish is None
        return control.generation_of(mb.m, mb.usage, mb.clock, finish="cancelled" if cancelled else None,
                                     tools=mb.tools)

    return list(await asyncio.gather(*(finish(mb) for mb in members)))


async def _group_call(backend: Any, base: str, room: int, group: list[_Member]) -> None:
    """One ``n_cmpl`` call for ``group`` (or a plain call for a group of one), failing over before any byte."""
    lead = group[0].spec
    body = backend.dialect.completion_body(base, max_tokens=room, sampling=lead.sampling,
                                           stop=(), n_probs=lead.sampling.top_logprobs, grammar=None, stream=True)
    body["n_cmpl"] = len(group)
    body.update(priority_fields(backend.priority_mode, lead.sched))
    ranked = backend.replicas.ranked(base[:AFFINITY_CHARS])
    await backend.replicas.call(ranked, lambda replica: _read_group(backend, replica, body, group))


async def _read_group(backend: Any, replica: Any, body: dict, group: list[_Member]) -> None:
    """Feed each child's tokens to its sample's machine until every sample has left the group or ended."""
    try:
        with upstream_errors(backend):
            async with asyncio.timeout(backend.timeout_s), \
                    contextlib.aclosing(sse_objects(backend, replica, body)) as objs:
                async for obj in objs:
                    idx = int(obj.get("index") or 0)
                    if idx >= len(group):
                        continue
                    mb = group[idx]
                    piece, last = backend.dialect.read(obj)
                    piece = mb.tally.take(piece)
                    if piece is not None and mb.open:
                        d = mb.m.feed(piece.text, piece.tokens, piece.logprob)
                        if d.kind != "continue":
                            mb.decision = d
                    if last is not None:
                        mb.end = last
                    elif mb.counts is None:
                        mb.counts = backend.dialect.counts(obj)
                    _interrupts(group)
                    if not any(x.open for x in group):
                        return  # leaving the block closes the stream: children still running are stopped
    except TimeoutError:
        raise UpstreamTimeout(f"the upstream of lane {backend.name!r} did not finish within "
                              f"{backend.timeout_s:g}s") from None


def _interrupts(group: list[_Member]) -> None:
    """Cancellation and deadlines reach every sample still reading the group stream."""
    for mb in group:
        if not mb.open:
            continue
        if mb.spec.cancel.cancelled:
            mb.decision = mb.m.interrupt("cancelled")
        elif mb.spec.deadline is not None and mb.spec.deadline.passed:
            mb.decision = mb.m.interrupt("deadline")
