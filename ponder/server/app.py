"""The gateway: OpenAI-compatible HTTP in front of :class:`ponder.service.Ponder`.

Per request: parse -> plan -> preflight (context) -> admission (queue) ->
a worker thread runs the plan -> events become SSE chunks (or one JSON body)
-> metrics and ledger.  A client that disconnects cancels its generation;
what it had already cost is still accounted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from ponder import __version__
from ponder.api.request import parse_request
from ponder.api.response import chunk, completion_body, ponder_block
from ponder.errors import InvalidRequest, Overloaded, PonderError
from ponder.server import worker
from ponder.server.admission import LaneGate
from ponder.server.ledger import Ledger
from ponder.server.metrics import Metrics
from ponder.server.shedding import Shedder
from ponder.service import ChoiceEvent, Outcome, Ponder, StrategyDone
from ponder.thinking.control import AnswerDelta, Finished, ThinkingDelta
from ponder.types import CancelToken, Usage

log = logging.getLogger("ponder.server")


@dataclass(frozen=True)
class Started:
    t_gen: float


@dataclass(frozen=True)
class Summary:
    index: int
    text: str
    thinking_tokens: int
    usage: Usage
    cost_usd: float


def create_app(service: Ponder) -> FastAPI:
    config = service.config
    app = FastAPI(title="ponder", version=__version__, docs_url=None, redoc_url=None)
    metrics = Metrics()
    ledger = Ledger(config.server.ledger_path)
    gates: dict[str, LaneGate] = {}
    gate_of_engine: dict[int, LaneGate] = {}
    shedder = Shedder(config.server.shedding, config.thinking.effort_table())
    app.state.service = service
    app.state.metrics = metrics
    app.state.gates = gates
    app.state.shedder = shedder

    def gate_for(lane, backend) -> LaneGate:
        """One queue per engine: lanes sharing an engine (fast/reasoning on one model) share its queue."""
        gate = gate_of_engine.get(id(backend))
        if gate is None:
            gate = LaneGate(serialized=not backend.info.concurrent, queue_size=config.server.queue_size)
            gate_of_engine[id(backend)] = gate
            gates[lane.name] = gate
        return gate

    # -- errors ---------------------------------------------------------------
    @app.exception_handler(PonderError)
    async def _ponder_error(request: Request, exc: PonderError):
        headers = {"Retry-After": str(int(max(1, exc.retry_after_s)))} if isinstance(exc, Overloaded) else None
        return JSONResponse(exc.to_openai(), status_code=exc.status, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("internal error")
        return JSONResponse(
            {"error": {"message": "internal error in ponder (see the server log)", "type": "server_error", "param": None, "code": None}},
            status_code=500,
        )

    # -- small endpoints --------------------------------------------------------
    @app.get("/health")
    async def health():
        return {"status": "ok", "version": __version__, "lanes": [lane.name for lane in config.lanes]}

    @app.get("/v1/models")
    async def models():
        data = [
            {"id": lane.name, "object": "model", "created": 0, "owned_by": "ponder",
             "ponder": {"backend": lane.backend, "model": lane.model or lane.upstream_model, "effort": lane.effort,
                        "strategy": lane.strategy}}
            for lane in config.lanes
        ]
        data.append({"id": "auto", "object": "model", "created": 0, "owned_by": "ponder", "ponder": {"routed": True}})
        return {"object": "list", "data": data}

    @app.get("/metrics")
    async def prometheus():
        for name, gate in gates.items():
            metrics.queue_depth.labels(name).set(gate.waiting)
            metrics.in_flight.labels(name).set(gate.in_flight)
        metrics.thinking_in_flight.set(shedder.thinking_in_flight)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # -- chat completions ---------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        lane_label = "unknown"
        try:
            raw = await request.body()
            try:
                body = json.loads(raw or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InvalidRequest(f"malformed JSON body: {exc}") from None
            req = parse_request(body)
            plan = await run_in_threadpool(service.plan, req) if service.routing_blocks else service.plan(req)
            lane_label = plan.lane.name
            backend = service.cached_backend(plan.lane) or await run_in_threadpool(service.backend, plan.lane)
            if backend.info.text_completion and backend.info.context_length:
                await run_in_threadpool(service.preflight, plan)
            gate = gate_for(plan.lane, backend)
            plan, reserved = shedder.admit(plan, waiting=sum(g.waiting for g in gate_of_engine.values()))
            try:
                queue_s = await gate.acquire()
            except BaseException:
                shedder.release(reserved)
                raise
        except PonderError as exc:
            metrics.requests.labels(lane_label, str(exc.status)).inc()
            raise
        if plan.degraded:
            metrics.degraded.labels(lane_label).inc()
        metrics.queue_time.labels(lane_label).observe(queue_s)
        cancel = CancelToken()
        loop = asyncio.get_running_loop()

        def on_exit() -> None:
            gate.release()
            shedder.release(reserved)

        queue = worker.start(loop, lambda: _produce(service, plan, cancel), on_exit=on_exit)
        run = _Run(service, plan, req, queue, queue_s, cancel, metrics, ledger)
        if req.stream:
            # hold the headers until the engine answers (or fails): a remote
            # engine that errors or times out before its first token gets a
            # real 502/504 instead of an error inside a 200 stream
            wait_s = plan.lane.timeout_s + 1.0 if backend.info.concurrent else 0.5
            first = await run.peek_first(wait_s)
            if isinstance(first, worker.WorkerError) and isinstance(first.error, PonderError):
                run.account(status=first.error.status)
                raise first.error
            return StreamingResponse(run.sse(request), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await run.collect(request)

    return app


def _produce(service: Ponder, plan, cancel: CancelToken):
    """Worker-thread side: the plan's events, plus summaries in summary mode."""
    yield Started(time.perf_counter())
    every = service.config.server.summary_every_tokens
    text = ""
    last_summary_at = 0
    for item in service.stream(plan, cancel=cancel):
        yield item
        if plan.visibility != "summary" or not isinstance(item, ChoiceEvent):
            continue
        ev = item.event
        if isinstance(ev, ThinkingDelta):
            text += ev.text
            if ev.used - last_summary_at >= every:
                last_summary_at = ev.used
                summary, usage, cost = service.summarize(text)
                yield Summary(item.index, summary, ev.used, usage, cost)
        elif isinstance(ev, Finished):
            text, last_summary_at = "", 0


class _Run:
    """The asyncio side of one request."""

    def __init__(self, service, plan, req, queue, queue_s, cancel, metrics, ledger) -> None:
        self.service, self.plan, self.req, self.queue = service, plan, req, queue
        self.queue_s, self.cancel, self.metrics, self.ledger = queue_s, cancel, metrics, ledger
        self.finished: list = []
        self.summaries: list[Summary] = []
        self.t_gen = time.perf_counter()
        self._peeked: list = []
        self.outcome: Outcome | None = None
        self.accounted = False
        self.ended = False
        #: one id for the stream's chunks, the final body and the ledger line
        self.cid = "chatcmpl-" + uuid.uuid4().hex[:24]

    async def _next(self, timeout: float | None = None):
        if self._peeked:
            return self._peeked.pop(0)
        if timeout is None:
            item = await self.queue.get()
        else:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        if item is worker.END:
            self.ended = True
        return item

    async def peek_first(self, wait_s: float = 0.5):
        """Wait briefly for the first real event so early failures get a status code."""
        deadline = time.perf_counter() + wait_s
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            try:
                item = await asyncio.wait_for(self.queue.get(), left)
            except asyncio.TimeoutError:
                return None
            if item is worker.END:
                self.ended = True
            self._peeked.append(item)
            if not isinstance(item, Started):
                if isinstance(item, worker.WorkerError):
                    self._peeked.clear()
                return item

    def _absorb(self, item) -> None:
        if isinstance(item, Started):
            self.t_gen = item.t_gen
        elif isinstance(item, ChoiceEvent) and isinstance(item.event, Finished):
            self.finished.append(item.event.generation)
        elif isinstance(item, ChoiceEvent) and isinstance(item.event, StrategyDone):
            self.finished[-1] = item.event.result
        elif isinstance(item, Summary):
            self.summaries.append(item)

    def build_outcome(self) -> Outcome | None:
        if not self.finished:
            return None
        outcome = self.service.finish(self.plan, self.finished, self.t_gen, self.queue_s)
        outcome.id = self.cid
        if self.summaries:
            s_usage = Usage()
            for s in self.summaries:
                s_usage = s_usage + s.usage
            cost = sum(s.cost_usd for s in self.summaries)
            outcome.cost_usd += cost
            outcome.extra["summaries"] = {
                "count": len(self.summaries), "prompt_tokens": s_usage.prompt_tokens,
                "completion_tokens": s_usage.completion_tokens, "cost_usd": round(cost, 10),
            }
        self.outcome = outcome
        return outcome

    def account(self, *, status: int) -> None:
        """Metrics and ledger, exactly once per request."""
        if self.accounted:
            return
        self.accounted = True
        lane = self.plan.lane.name
        m = self.metrics
        m.requests.labels(lane, str(status)).inc()
        outcome = self.outcome or self.build_outcome()
        if outcome is None:
            return
        u = outcome.usage
        m.thinking_tokens.labels(lane).observe(u.thinking_tokens)
        m.answer_tokens.labels(lane).observe(u.answer_tokens)
        m.prompt_tokens.labels(lane).inc(u.prompt_tokens)
        m.cost.labels(lane).inc(outcome.cost_usd)
        if outcome.timings.ttft_s is not None:
            m.ttft.labels(lane).observe(outcome.timings.ttft_s)
        if outcome.timings.time_to_answer_s is not None:
            m.tta.labels(lane).observe(outcome.timings.time_to_answer_s)
        if status == 499:
            m.cancelled.labels(lane).inc()
        self.ledger.record({
            "id": outcome.id, "status": status, "lane": lane, "model": outcome.model,
            "strategy": self.plan.strategy, "usage": u.to_openai(), "cost_usd": outcome.cost_usd,
            "thinking": ponder_block(outcome)["thinking"], "timings": outcome.timings.to_dict(),
            "samples": sum(r.n_samples for r in outcome.results),
        })

    async def drain_and_account(self, status: int) -> None:
        """After a disconnect: let the worker finish (it stops at the next token)."""
        self.cancel.cancel()
        try:
            while not self.ended:
                item = await self._next()
                if item is worker.END:
                    break
                self._absorb(item)
        finally:
            self.account(status=status)

    # -- non-streaming ------------------------------------------------------------
    async def collect(self, request: Request):
        watcher = asyncio.create_task(_watch_disconnect(request, self.cancel))
        try:
            while True:
                item = await self._next()
                if item is worker.END:
                    break
                if isinstance(item, worker.WorkerError):
                    await self.drain_and_account(_status_of(item.error))
                    raise item.error if isinstance(item.error, PonderError) else item.error
                self._absorb(item)
        finally:
            watcher.cancel()
        if self.cancel.cancelled:
            self.account(status=499)
            return JSONResponse({"error": {"message": "client disconnected", "type": "cancelled", "param": None, "code": None}}, status_code=499)
        outcome = self.build_outcome()
        body = completion_body(outcome)
        if self.plan.visibility == "summary":
            await self._summarize_final(body)
        self.account(status=200)
        return JSONResponse(body)

    async def _summarize_final(self, body: dict) -> None:
        for i, r in enumerate(self.outcome.results):
            if r.chosen.thinking:
                text, usage, cost = await run_in_threadpool(self.service.summarize, r.chosen.thinking)
                body["choices"][i]["message"]["reasoning_content"] = text
                self.outcome.cost_usd += cost
                extra = body["ponder"].setdefault("summaries", {"count": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0})
                extra["count"] += 1
                extra["prompt_tokens"] += usage.prompt_tokens
                extra["completion_tokens"] += usage.completion_tokens
                extra["cost_usd"] = round(extra["cost_usd"] + cost, 10)
        body["ponder"]["cost_usd"] = round(self.outcome.cost_usd, 10)

    # -- streaming ------------------------------------------------------------------
    async def sse(self, request: Request) -> AsyncIterator[bytes]:
        plan, req = self.plan, self.req
        cid = self.cid
        created = int(time.time())
        model = self.service.backend(plan.lane).info.model
        interval = self.service.config.server.progress_interval_s
        show = plan.visibility == "visible"
        started_roles: set[int] = set()
        last_progress = time.perf_counter()
        used = 0
        completed = False

        def emit(obj: dict) -> bytes:
            return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()

        def delta(index: int, **fields) -> dict:
            d = dict(fields)
            if index not in started_roles:
                started_roles.add(index)
                d = {"role": "assistant", **d}
            return d

        def progress(index: int = 0) -> bytes:
            return emit(chunk(cid, created, model, index=index, delta=delta(index),
                              ponder={"progress": {"thinking_tokens": used, "elapsed_s": round(time.perf_counter() - self.t_gen + self.queue_s, 3)}}))

        try:
            yield emit(chunk(cid, created, model, delta=delta(0, content="")))
            while True:
                try:
                    item = await self._next(interval)
                except asyncio.TimeoutError:
                    if not show:
                        last_progress = time.perf_counter()
                        yield progress()
                    continue
                if item is worker.END:
                    break
                if isinstance(item, worker.WorkerError):
                    err = item.error if isinstance(item.error, PonderError) else PonderError("internal error in ponder")
                    if not isinstance(item.error, PonderError):
                        log.error("generation failed", exc_info=item.error)
                    yield emit(err.to_openai())
                    yield b"data: [DONE]\n\n"
                    completed = True
                    await self.drain_and_account(_status_of(item.error))
                    return
                self._absorb(item)
                if isinstance(item, Summary):
                    yield emit(chunk(cid, created, model, index=item.index, delta=delta(item.index, reasoning_content=item.text + "\n"),
                                     ponder={"summary": {"text": item.text, "thinking_tokens": item.thinking_tokens}}))
                    continue
                if not isinstance(item, ChoiceEvent):
                    continue
                ev, idx = item.event, item.index
                if isinstance(ev, ThinkingDelta):
                    used = ev.used
                    if show:
                        yield emit(chunk(cid, created, model, index=idx, delta=delta(idx, reasoning_content=ev.text)))
                    elif time.perf_counter() - last_progress >= interval:
                        last_progress = time.perf_counter()
                        yield progress(idx)
                elif isinstance(ev, AnswerDelta):
                    yield emit(chunk(cid, created, model, index=idx, delta=delta(idx, content=ev.text)))
                elif isinstance(ev, Finished):
                    reason = "length" if ev.generation.finish_reason == "length" else "stop"
                    yield emit(chunk(cid, created, model, index=idx, delta=delta(idx), finish_reason=reason))
            outcome = self.build_outcome()
            if req.include_usage and outcome is not None:
                yield emit(chunk(cid, created, model, usage=outcome.usage, ponder=ponder_block(outcome), choices=False))
            yield b"data: [DONE]\n\n"
            completed = True
            self.account(status=200)
        finally:
            if not completed:
                # the client went away: stop the engine, account what was spent
                asyncio.get_running_loop().create_task(self.drain_and_account(499))


async def _watch_disconnect(request: Request, cancel: CancelToken) -> None:
    while not cancel.cancelled:
        if await request.is_disconnected():
            cancel.cancel()
            return
        await asyncio.sleep(0.25)


def _status_of(exc: BaseException) -> int:
    return exc.status if isinstance(exc, PonderError) else 500
