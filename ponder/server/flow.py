"""The steps every API route shares, from the raw request to a running run.

Read the body (bounded) -> authenticate -> the API's own parse into ponder's
request -> prepare (plan, engine, context fit) -> the key's limits -> admit
(capacity, shedding, quotas) -> a :class:`~ponder.run.Run` owns the rest.
Each API module (:mod:`~ponder.server.chat`, :mod:`~ponder.server.responses`,
:mod:`~ponder.server.messages`) supplies its parse and turns the run's
events into its own wire format; refusals are counted and logged here once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from starlette.requests import Request

from ponder.errors import PonderError, ShuttingDown
from ponder.outcome import Ended, Outcome
from ponder.request import PonderRequest
from ponder.run import Run
from ponder.server.gateway import Gateway
from ponder.server.http import read_body, watch_disconnect
from ponder.types import CancelToken

#: parse(raw body, principal, headers) -> ponder's request
Parse = Callable[[bytes, Any, Any], Awaitable[PonderRequest]]


@dataclass
class Started:
    run: Run
    task: asyncio.Task
    #: x-ratelimit-* headers of the key's reservation
    headers: dict
    key: str | None
    request: PonderRequest


async def start(gw: Gateway, request: Request, rid: str, parse: Parse, *,
                after: Callable[[Outcome], Awaitable[None]] | None = None) -> Started:
    """Admit the request and start its run; a refusal is counted, logged and raised (the route shapes it).

    ``after`` runs when the run has its outcome, before the client hears the end (a stored conversation
    is there before the response is complete).
    """
    t0 = time.perf_counter()
    lane_label, key_name = "unknown", None
    try:
        if gw.draining:
            raise ShuttingDown("the gateway is shutting down; retry on another replica")
        principal = await gw.tenancy.authenticate(request.headers) if gw.tenancy is not None else None
        key_name = principal.name if principal is not None else None
        raw = await read_body(request, gw.server.max_body_bytes)
        req = await parse(raw, principal, request.headers)
        plan = await gw.service.prepare(req)
        lane_label = plan.lane.name
        if gw.tenancy is not None and principal is not None:
            plan = gw.tenancy.apply_limits(principal, plan)
        ticket = await gw.gate.admit(plan, principal)
    except PonderError as exc:
        gw.metrics.refused(lane_label, exc.status, exc.code, key_name)
        gw.log_access(rid, key_name, lane_label, exc.status, None, time.perf_counter() - t0, exc.code)
        raise

    async def on_end(outcome: Outcome) -> None:
        if after is not None and outcome.error is None:
            await after(outcome)
        await ticket.release(outcome)
        gw.observe(outcome, key_name, ticket.reservation)
        gw.runs.pop(rid, None)
        gw.log_access(rid, key_name, outcome.lane, outcome.status, outcome, outcome.timings.total_s,
                      outcome.error.code if outcome.error else None)

    run = gw.service.run(ticket.plan, request_id=rid, key=key_name, cancel=CancelToken(), on_end=on_end,
                         stream=req.stream, started=t0)
    task = asyncio.ensure_future(run.execute())
    gw.runs[rid] = (run, task)
    return Started(run, task, dict(ticket.headers), key_name, req)


async def outcome_of(request: Request, started: Started) -> Outcome:
    """Wait for a non-streamed run's outcome, cancelling it if the client goes away."""
    watcher = asyncio.ensure_future(watch_disconnect(request, started.run.cancel))
    try:
        return await asyncio.shield(started.task)
    finally:
        watcher.cancel()


async def first_event(gw: Gateway, run: Run, request: Request) -> Any:
    """The run's first event, waited for before a stream's headers go out (None when none came in time).

    So a request that fails at once gets a real status code (and may still fall back): briefly on an engine
    ponder schedules, whose progress matters, up to the lane's own deadline on an upstream.  A client that
    leaves during the wait cancels the run at once (a 499, the upstream call closed), as after it.
    """
    backend = gw.service.cached_backend(run.plan.lane)
    wait = gw.server.first_byte_wait_s if backend is None or backend.info.max_sequences else \
        run.plan.lane.timeout_s + 1.0
    if run.deadline is not None:
        wait = min(wait, max(0.0, run.deadline.left()) + gw.server.answer_grace_s + 2.0)
    watcher = asyncio.ensure_future(watch_disconnect(request, run.cancel))
    try:
        return await asyncio.wait_for(run.events.get(), timeout=wait)
    except asyncio.TimeoutError:
        return None
    finally:
        watcher.cancel()


def failed_before_content(run: Run, first: Any) -> Outcome | None:
    """The outcome when the run failed before anything reached the client (it gets a real status)."""
    if isinstance(first, Ended) and first.outcome.error is not None and not run.sent_content:
        return first.outcome
    return None


async def next_event(run: Run, pending: list, interval: float) -> Any:
    """The next event of a stream (None when ``interval`` passed without one: time for a keep-alive)."""
    if pending:
        return pending.pop(0)
    if not run.events.empty():
        return run.events.get_nowait()  # the common case: no timer, no task
    try:
        return await asyncio.wait_for(run.events.get(), interval)
    except asyncio.TimeoutError:
        return None


async def event_stream(run: Run, stream: Any, first: Any, interval: float, keep_alive: bytes):
    """A run's events through an API's stream writer (``start`` / ``on`` / ``end``), with keep-alives while
    nothing happens; a client that leaves stops the run (still accounted)."""
    ended = False
    try:
        for line in stream.start():
            yield line
        pending = [first] if first is not None else []
        while True:
            ev = await next_event(run, pending, interval)
            if ev is None:
                yield keep_alive
                continue
            if isinstance(ev, Ended):
                ended = True
                for line in stream.end(ev.outcome):
                    yield line
                return
            for line in stream.on(ev):
                yield line
    finally:
        if not ended:
            run.cancel.cancel()


async def reply(gw: Gateway, request: Request, started: Started, *, body: Callable[[Outcome], dict],
                error: Callable[[PonderError], dict], stream: Callable[[Any], Any]) -> Any:
    """The response every API gives a started run: one JSON body, or an SSE stream of its own events.

    ``body`` builds the API's JSON from the outcome, ``error`` its error body, ``stream(first)`` its event
    stream.  A failure before anything reached the client gets a real status code; after that the stream
    carries it.
    """
    from fastapi.responses import JSONResponse, Response

    from ponder.server.http import SSEResponse

    run, headers = started.run, started.headers

    def failure(o: Outcome) -> Any:
        return JSONResponse(error(o.error), status_code=o.status, headers={**headers, **o.error.headers()})

    if not started.request.stream:
        outcome = await outcome_of(request, started)
        if outcome.status == 499:
            return Response(status_code=499)
        return failure(outcome) if outcome.error is not None else \
            JSONResponse(body(outcome), headers=headers or None)
    first = await first_event(gw, run, request)
    failed = failed_before_content(run, first)
    if failed is not None:
        return failure(failed)
    return SSEResponse(stream(first), run.cancel, {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})
