"""The thinking machine over streamed completions of an upstream engine (see :mod:`ponder.backends.text_engine`).

One loop per sample: stream a completion of ``prompt + machine.text``; feed
every piece to the machine; when it decides to rewrite (close a capped
thinking, add ``Wait,``, insert a tool's result) the stream is closed and the
next call continues the rewritten text — the engine's prefix cache holds the
part it has already evaluated.  The answer phase carries the request's
grammar.  Deadlines and cancellation stop it between pieces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, AsyncIterator, Callable, Iterator

from ponder.telemetry import span
from ponder.backends.base import CONTROL_SLACK, SampleSpec
from ponder.backends.dialects import CallEnd, TokenTally, priority_fields
from ponder.backends.replicas import AFFINITY_CHARS
from ponder.backends.http import ConnectFailed, ConnectionCut
from ponder.errors import BackendError, UpstreamTimeout, UpstreamUnreachable
from ponder.thinking import control
from ponder.thinking.decisions import Decision
from ponder.thinking.machine import Event
from ponder.types import Deadline, Generation, Usage

log = logging.getLogger("ponder.upstream")


async def drive(backend: Any, spec: SampleSpec, on_event: Callable[[Event], None] | None) -> Generation:
    clock = control.Clock()

    def emit(e: Event) -> None:
        clock.saw(e)
        if on_event is not None:
            on_event(e)

    base, room = prompt_and_room(backend, spec)
    m = control.new_machine(spec, cue_tokens=backend.count_tokens, on_event=emit)
    usage, tools = Usage(), []
    await calls(backend, spec, m, base, room, usage, tools)
    finish = "cancelled" if spec.cancel.cancelled and m.finish is None else None
    return control.generation_of(m, usage, clock, finish=finish, tools=tools)


def prompt_and_room(backend: Any, spec: SampleSpec) -> tuple[str, int]:
    """The sample's rendered prompt (the one prepared with the request when it serves) and the most tokens its
    continuation may take (thinking cap + answer + cues)."""
    note = spec.tools_note()
    p = spec.prompt
    if spec.given_thinking is None and spec.resume_thinking is None and p is not None and \
            p.serves(spec.messages, spec.budget, note):
        base = p.text
    else:
        base = control.raw_prompt(backend, spec.messages, spec.budget, spec.given_thinking, note,
                                  resume_thinking=spec.resume_thinking)
    room = (0 if spec.given_thinking is not None else spec.budget.max_tokens) + spec.sampling.max_answer_tokens \
        + CONTROL_SLACK
    return base, room


async def calls(backend: Any, spec: SampleSpec, m: Any, base: str, room: int, usage: Usage, tools: list, *,
                 first: bool = True, deadline: Deadline | None = None) -> None:
    """Completion calls until the machine is done: every call of this sample (and every sample of this prompt)
    on the replica its prompt belongs to, and, where the engine caches prompts per slot, on one slot of it.
    ``first``: the sample's first call is still to come (its prompt counts are the sample's)."""
    ranked = backend.replicas.ranked(base[:AFFINITY_CHARS])
    replica = ranked.pop(0)
    slots = backend.slots_per_replica if backend.dialect.pins_slots else 0
    slot = backend.replicas.pin(replica, slots)
    deadline = deadline if deadline is not None else spec.deadline
    try:
        while m.phase != "done":
            if spec.cancel.cancelled:
                m.interrupt("cancelled")
                break
            grammar = spec.sampling.grammar if m.phase == "answer" else None
            n_probs = max(spec.sampling.top_logprobs, 5 if spec.monitor is not None else 0)
            left = room - m.used - m.answer_tokens
            if left <= 0:
                m.interrupt("context")
                break
            body = backend.dialect.completion_body(base + m.text, max_tokens=left, sampling=spec.sampling,
                                                   stop=(), n_probs=n_probs, grammar=grammar, stream=True, slot=slot)
            body.update(priority_fields(backend.priority_mode, spec.sched))
            backend.replicas.started(replica)
            try:
                with span("POST /completions", **{"server.address": replica.url, "ponder.lane": backend.name,
                                                  "ponder.phase": m.phase}):
                    decision, end = await _stream(backend, replica, body, m, spec, deadline)
            except UpstreamUnreachable:
                backend.replicas.finished(replica, refused=True)
                if first and not m.text and ranked:  # nothing generated yet: the next replica takes the sample
                    backend.replicas.unpin(replica, slot)
                    replica = ranked.pop(0)
                    slot = backend.replicas.pin(replica, slots)
                    continue
                raise
            except BaseException:
                backend.replicas.finished(replica, failed=True)
                raise
            backend.replicas.finished(replica)
            if first:
                usage.prompt_tokens = end.prompt_tokens or backend.count_tokens(base)
                usage.cached_prompt_tokens = min(end.cached_tokens, usage.prompt_tokens)
                first = False
            decision, deadline = await settle(backend, spec, m, decision, end, tools, usage, deadline)
            if decision.kind == "stop":
                break
    finally:
        backend.replicas.unpin(replica, slot)


async def settle(backend: Any, spec: SampleSpec, m: Any, decision: Decision | None, end: CallEnd, tools: list,
                 usage: Usage, deadline: Deadline | None) -> tuple[Decision, Deadline | None]:
    """What the end of one call means for the sample: the machine's decision (the engine's own ending read as
    end of turn or context), a tool run, and the deadline the next call has."""
    if decision is None:  # the engine ended the call itself
        decision = m.end_of_turn() if end.reason in ("stop", "word") else m.interrupt("context")
    if decision.kind == "tool":
        decision = await _run_tool(backend, spec, m, decision, tools, usage)
    if decision.kind == "rewrite" and m.report.stopped == "deadline" and deadline is not None:
        deadline = Deadline(time.monotonic() + spec.answer_grace_s)  # the answer still gets its grace
    return decision, deadline


async def _run_tool(backend: Any, spec: SampleSpec, m: Any, d: Decision, tools: list, usage: Usage) -> Decision:
    result, record = await spec.tools.call(d.payload, depth=len(tools))
    tools.append(record)
    usage.tool_tokens += backend.count_tokens(result)
    return m.tool_result(result, answer_now=spec.tools.exhausted(len(tools)))


async def sse_objects(backend: Any, replica: Any, body: dict) -> AsyncIterator[dict]:
    """The JSON objects of one streamed completion on ``replica`` (``data:`` lines, ``[DONE]`` skipped).  Close it
    (``contextlib.aclosing``) to close the connection: the engine then stops the call."""
    resp = await backend.root_pool(replica).post_json(backend.dialect.path, body)
    async with resp:
        if resp.status >= 400:
            raise await backend._http_error(resp)
        async for line in resp.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                yield json.loads(line[5:].strip())


@contextlib.contextmanager
def upstream_errors(backend: Any) -> Iterator[None]:
    """A streamed completion's transport failures as the upstream's typed errors (one error path)."""
    try:
        yield
    except ConnectFailed:
        raise UpstreamUnreachable(f"the upstream of lane {backend.name!r} is unreachable") from None
    except ConnectionCut as exc:
        log.warning("lane %s: %s", backend.name, exc)
        raise BackendError(f"the upstream stream of lane {backend.name!r} was cut off") from None
    except ValueError:
        raise BackendError(f"the upstream of lane {backend.name!r} sent a malformed stream chunk") from None


async def _stream(backend: Any, replica: Any, body: dict, m: Any, spec: SampleSpec, deadline: Deadline | None):
    """Stream one completion into the machine: (the machine's decision that ended it or None, how it ended)."""
    end, tally = CallEnd(), TokenTally()
    limit = backend.timeout_s if deadline is None else min(backend.timeout_s, max(0.05, deadline.left() + 1.0))
    try:
        with upstream_errors(backend):
            async with asyncio.timeout(limit), contextlib.aclosing(sse_objects(backend, replica, body)) as objs:
                async for obj in objs:
                    piece, last = backend.dialect.read(obj)
                    if last is not None:
                        end = last
                    elif not end.prompt_tokens:
                        end = backend.dialect.counts(obj) or end
                    piece = tally.take(piece)
                    if piece is not None:
                        d = m.feed(piece.text, piece.tokens, piece.logprob)
                        if d.kind != "continue":
                            return d, end  # leaving the block closes the connection: the engine stops this call
                        if spec.cancel.cancelled:
                            return m.interrupt("cancelled"), end
                        if deadline is not None and deadline.passed:
                            return m.interrupt("deadline"), end
        return None, end
    except TimeoutError:
        if deadline is not None and deadline.passed:
            return m.interrupt("deadline"), end
        raise UpstreamTimeout(f"the upstream of lane {backend.name!r} did not finish within {limit:g}s") from None
