"""One request from plan to ledger.

A :class:`Run` owns a planned request for its whole life:

1. opens its ledger row (write-ahead: a crash leaves an ``interrupted`` row
   with what had been streamed, flushed every ``ledger.flush_interval_s``);
2. runs the plan's strategy for every choice — on the lane, then on its
   ``fallbacks`` (an upstream error, timeout or 5xx before any content
   reached the client moves the request on; connection errors are first
   retried with jittered backoff) — under the request's deadline;
3. turns the strategy's sample events into client events (live deltas for
   strategies that stream one sample, progress otherwise; summaries in
   summary mode);
4. builds the :class:`Outcome`, prices every attempt with the one pricing
   function, and writes the ledger row and the metrics **exactly once**,
   whatever way the request ends: success, client error, engine or upstream
   error, timeout, deadline, disconnect, shutdown.

The gateway (SSE or JSON) and the CLI are thin adapters that read
:attr:`Run.events`; the lab runs strategies through the same pieces.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Awaitable, Callable

from ponder.errors import (
    BackendError,
    Cancelled,
    DeadlineExceeded,
    PonderError,
    ShuttingDown,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from ponder import guard
from ponder.pricing import price
from ponder.strategies import get_strategy
from ponder.strategies.base import Meter, StrategyResult
from ponder.summaries import Summarizer
from ponder.telemetry import CURRENT, span
from ponder.tools.forced import check_forced_call
from ponder.thinking.machine import AnswerDelta, Event, ThinkingDelta
from ponder.outcome import (
    Attempt,
    ChoiceEnd,
    Delta,
    Ended,
    Outcome,
    RunEvent,
    answer_and_calls,
    ledger_row,
    outcome_extra,
)
from ponder.types import CancelToken, Deadline, Generation, Timings, Usage

if TYPE_CHECKING:
    from ponder.planning import Plan
    from ponder.runtime import RunDeps

log = logging.getLogger("ponder.run")


class Run:
    """One request: plan -> strategy -> outcome -> ledger and metrics (see the module docstring)."""

    def __init__(self, deps: "RunDeps", plan: "Plan", *, request_id: str | None = None, key: str | None = None,
                 cancel: CancelToken | None = None, queue_s: float = 0.0,
                 on_end: Callable[[Outcome], Awaitable[None] | None] | None = None,
                 stream: bool = False, started: float | None = None) -> None:
        self.deps = deps
        self.plan = plan
        self.id = request_id or "chatcmpl-" + uuid.uuid4().hex[:24]
        self.key = key
        self.cancel = cancel or CancelToken()
        self.queue_s = queue_s
        self.stream = stream
        self.t0 = started if started is not None else time.perf_counter()
        self.created = int(time.time())
        self.deadline = Deadline.after(plan.deadline_s)
        self.events: asyncio.Queue[RunEvent] = asyncio.Queue()
        self.sent_content = False
        self.outcome: Outcome | None = None
        self._on_end = on_end
        self._meters: list[Meter] = []
        self._first_token: float | None = None
        self._first_answer: float | None = None
        self._live_used: dict[tuple[int, int], int] = {}
        self._answer_streamed: set[int] = set()
        self._cache_info: dict | None = None
        #: summaries of the thinking (summary visibility), streamed or at the end
        self.summaries = Summarizer(deps.summarize, self.cancel, self.events, deps.config.server.summary_every_tokens,
                                    self.id)
        self._accounted = False
        #: the request's trace (:mod:`ponder.telemetry`; None when telemetry is off)
        self.trace = None

    # -- live figures (progress chunks, write-ahead flushes, shedding) ---------------
    @property
    def thinking_tokens_now(self) -> int:
        return sum(self._live_used.values())

    def spent(self) -> Usage:
        total = Usage()
        for m in self._meters:
            total = total + m.total()
        return total

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    # -- the run -----------------------------------------------------------------------
    async def execute(self) -> Outcome:
        """Run to the end.  Never raises: failures are in the outcome (and an :class:`Ended` event)."""
        ledger = self.deps.ledger
        telemetry = self.deps.telemetry
        token = telemetry.begin() if telemetry is not None else None
        self.trace = CURRENT.get() if token is not None else None
        ledger.open(self._row(status="running"))
        self.deps.running.add(self)
        attempts: list[Attempt] = []
        results: list[StrategyResult] = []
        error: PonderError | None = None
        status = 200
        plan_used = self.plan
        cache = self.deps.answer_cache
        ckey = cache.key_for(self.plan)
        hit = None
        try:
            if ckey is not None and self.plan.cache == "use":
                with span("cache lookup", **{"ponder.cache.backend": cache.url.split(":")[0]}) as attrs:
                    hit = await cache.get(ckey)
                    attrs["ponder.cache.hit"] = hit is not None
            if hit is not None:
                results = hit.results
                self._cache_info = {"hit": True, "age_s": round(hit.age_s, 3),
                                    "saved": {"usage": hit.saved_usage, "cost_usd": hit.saved_cost_usd}}
                for i, r in enumerate(results):
                    self._replay_chosen(i, r)
                    self.events.put_nowait(ChoiceEnd(i, r))
            elif self.deadline is not None:
                # a hard stop: the deadline cuts thinking, the answer gets its grace, then everything ends
                hard = self.deadline.left() + self.deps.config.server.answer_grace_s + 2.0
                try:
                    results, plan_used = await asyncio.wait_for(self._attempts(attempts), max(0.1, hard))
                except asyncio.TimeoutError:
                    self.cancel.cancel("deadline")
                    raise DeadlineExceeded("the request's deadline passed") from None
            else:
                results, plan_used = await self._attempts(attempts)
            if self.cancel.cancelled and self.cancel.why() == "cancelled":
                status = 499
                error = Cancelled("the client went away")
            elif self.cancel.cancelled and self.cancel.why() == "shutdown":
                status, error = 503, ShuttingDown("the gateway shut down before this request finished")
            elif self.deadline is not None and self.deadline.passed and \
                    not any(r.usage.completion_tokens for r in results):
                status, error = 504, DeadlineExceeded("the request's deadline passed before anything was generated")
            if hit is None:
                await self.summaries.finish(results, self.plan.visibility == "summary" and not self.stream)
            if ckey is not None and hit is None:
                self._cache_info = {"hit": False}
                if error is None and results and all(r.chosen.finish_reason in ("stop", "length") and
                                                     r.stopped is None for r in results):
                    usage = sum((a.usage for a in attempts), Usage())
                    await cache.put(ckey, results, usage, sum(a.cost_usd for a in attempts))
        except asyncio.CancelledError:
            if self.cancel.why() == "shutdown":
                status, error = 503, ShuttingDown("the gateway shut down before this request finished")
            else:
                status, error = 499, Cancelled("the request was cancelled")
            self.cancel.cancel()
        except PonderError as exc:
            status, error = exc.status, exc
        except Exception:  # a bug: logged with the request id, reported as a 500
            log.exception("request %s failed", self.id)
            status, error = 500, PonderError("internal error in ponder (see the server log)")
            error.status, error.type, error.code = 500, "server_error", "internal_error"  # type: ignore[misc]
        finally:
            self.deps.running.discard(self)
            self.summaries.cancel()
            outcome = self._build(plan_used, results, attempts, status, error)
            self.outcome = outcome
            await self._account(outcome)
            if token is not None:
                telemetry.end(token, outcome, time.time() - self.elapsed())
            self.events.put_nowait(Ended(outcome))
        return outcome

    async def _attempts(self, attempts: list[Attempt]) -> tuple[list[StrategyResult], "Plan"]:
        lanes = [self.plan.lane.name, *self.plan.lane.fallbacks]
        last_error: PonderError | None = None
        for li, lane_name in enumerate(lanes):
            plan = self.plan if li == 0 else replace(self.plan, lane=self.deps.config.lane(lane_name))
            tries = plan.lane.retries + 1
            for t in range(tries):
                meter = Meter()
                self._meters.append(meter)
                t_att = time.perf_counter()
                try:
                    results = await self._choices(plan, meter)
                except PonderError as exc:
                    usage = meter.total()
                    attempts.append(Attempt(plan.lane.name, exc.status, usage, price(usage, plan.lane.prices),
                                            time.perf_counter() - t_att, exc.message))
                    log.warning("request %s: attempt on lane %s failed: %s", self.id, plan.lane.name, exc.message)
                    last_error = exc
                    if self.sent_content or self.cancel.cancelled or (self.deadline and self.deadline.passed):
                        raise
                    if exc.retryable and t + 1 < tries:
                        await asyncio.sleep(plan.lane.retry_backoff_s * (2 ** t) * (0.5 + random.random()))
                        continue
                    if isinstance(exc, (BackendError, UpstreamTimeout, UpstreamRateLimited)) and li + 1 < len(lanes):
                        break  # on to the next lane
                    raise
                usage = sum((r.usage for r in results), Usage())
                status = 499 if self.cancel.cancelled and self.cancel.why() == "cancelled" else 200
                attempts.append(Attempt(plan.lane.name, status, usage, self._cost_of(plan, results),
                                        time.perf_counter() - t_att))
                return results, plan
        assert last_error is not None
        raise last_error

    async def _choices(self, plan: "Plan", meter: Meter) -> list[StrategyResult]:
        backend = await self.deps.engines.get_async(plan.lane)
        strategy = plan.runner or get_strategy(plan.strategy)
        # client tools and guard actions: the answer is only known once it is complete (and checked)
        live = strategy.info.streams_live and plan.escalation is None and not plan.client_tools and plan.guard is None
        # the attempt's own token: a failed choice stops its siblings without cancelling the request
        cancel = self.cancel.child()

        async def choice(i: int) -> StrategyResult:
            sink = _ChoiceSink(self, i, live, plan)
            request = self.deps.strategy_request(plan, cancel, seed_offset=i * 10007 if i else 0,
                                                    deadline=self.deadline, meter=meter, sink=sink)
            if plan.escalation is not None:
                from ponder.routing.cascade import run_cascade

                result = await run_cascade(self.deps, plan, request, i, self.deadline, meter)
            else:
                result = await strategy.run(request, backend, plan.strategy_params)
            check_forced_call(plan, result)
            result = await guard.check(self.deps, plan, request, result, backend, i, self.deadline, meter)
            if not live:
                self._replay_chosen(i, result)
            elif i not in self._answer_streamed and result.chosen.answer:
                # the answer came from the thinking (the model ended its turn there):
                # nothing was streamed as content yet, so the client gets it now
                g = result.chosen
                self._emit(Delta(i, "answer", g.answer, g.thinking_report.used, tuple(g.answer_logprobs())))
            self.events.put_nowait(ChoiceEnd(i, result))
            return result

        if plan.n == 1:
            try:
                return [await choice(0)]
            except BaseException:
                cancel.cancel("failed")
                raise
        tasks = [asyncio.ensure_future(choice(i)) for i in range(plan.n)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            cancel.cancel("failed")
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _replay_chosen(self, i: int, result: StrategyResult) -> None:
        """Strategies that pick among samples stream their chosen sample once it is chosen."""
        g = result.chosen
        if g.thinking:
            self._emit(Delta(i, "thinking", g.thinking, g.thinking_report.used))
        content = answer_and_calls(result, self.plan)[0]
        if content:
            self._emit(Delta(i, "answer", content, g.thinking_report.used, tuple(g.answer_logprobs())))

    # -- events ------------------------------------------------------------------------
    def _emit(self, ev: RunEvent) -> None:
        if isinstance(ev, Delta):
            now = self.elapsed()
            if self._first_token is None:
                self._first_token = now
            if ev.kind == "answer":
                self._answer_streamed.add(ev.index)
                if self._first_answer is None:
                    self._first_answer = now
            if self.stream and (ev.kind == "answer" or self.plan.visibility == "visible"):
                self.sent_content = True  # a streamed client has content now: no fallback can take it back
        self.events.put_nowait(ev)

    def _sample_event(self, index: int, sid: int, ev: Event, live: bool) -> None:
        if isinstance(ev, ThinkingDelta):
            self._live_used[(index, sid)] = ev.used
            if self._first_token is None:
                self._first_token = self.elapsed()
        if not live:
            return
        if isinstance(ev, ThinkingDelta):
            self._emit(Delta(index, "thinking", ev.text, ev.used))
            if self.plan.visibility == "summary" and self.stream:
                self.summaries.saw(index, ev.text, ev.used)
        elif isinstance(ev, AnswerDelta):
            self._emit(Delta(index, "answer", ev.text, self._live_used.get((index, sid), 0), ev.logprobs))

    # -- accounting ----------------------------------------------------------------------
    def _cost_of(self, plan: "Plan", results: list[StrategyResult]) -> float:
        total = 0.0
        for r in results:
            # a cascade priced each of its attempts at its own lane
            total += r.extra["cost_usd"] if "cost_usd" in r.extra else price(r.usage, plan.lane.prices)
        return total

    def _build(self, plan: "Plan", results: list[StrategyResult], attempts: list[Attempt], status: int,
               error: PonderError | None) -> Outcome:
        usage = plan.overhead
        cost = price(plan.overhead, plan.lane.prices)
        for a in attempts:
            usage = usage + a.usage
            cost += a.cost_usd
        if not attempts:
            # failed before any attempt finished (or was cancelled mid-way): bill what the meters saw
            spent = self.spent()
            usage = usage + spent
            cost += price(spent, plan.lane.prices)
            if spent.total_tokens or error is not None:
                attempts.append(Attempt(plan.lane.name, status, spent, price(spent, plan.lane.prices),
                                        self.elapsed(), error.message if error else None))
        summaries, s_cost = self.summaries.total()
        stopped = next((r.stopped for r in results if r.stopped), None)
        extra = outcome_extra(plan, results, attempts, summaries, s_cost, self.summaries.count, self._cache_info,
                              status, stopped, first_lane=self.plan.lane.name)
        first = results[0].chosen.timings if results else Timings()
        queue_s = self.queue_s + (first.queue_s or 0.0)
        # samples run side by side: the request was held back as long as its most paused sample
        preempted = max((s.generation.timings.preempted_s for r in results for s in r.samples), default=0.0)
        timings = Timings(queue_s=queue_s, ttft_s=self._first_token, time_to_answer_s=self._first_answer,
                          total_s=self.elapsed(), preempted_s=preempted)
        backend = self.deps.engines.cached(plan.lane)
        return Outcome(
            id=self.id, created=self.created, plan=plan, model=backend.info.model if backend else plan.lane.name,
            results=results, usage=usage, cost_usd=cost + s_cost, timings=timings, status=status, error=error,
            attempts=attempts, stopped=stopped, key=self.key, extra=extra,
        )

    async def _account(self, outcome: Outcome) -> None:
        """Ledger row and metrics, exactly once."""
        if self._accounted:
            return
        self._accounted = True
        try:
            self.deps.ledger.complete(self._row(outcome=outcome))
        except Exception:  # the ledger must never take a response down; it logs its own trouble
            log.exception("request %s: ledger write failed", self.id)
        if self.deps.metrics is not None:
            self.deps.metrics.record(outcome)
        if self._on_end is not None:
            r = self._on_end(outcome)
            if asyncio.iscoroutine(r):
                await r

    def _row(self, *, status: str | None = None, outcome: Outcome | None = None) -> dict:
        return ledger_row(self.id, self.key, self.created, self.plan, self.cancel.cancelled, status=status,
                          outcome=outcome)

    def flush(self) -> None:
        """Write what this run has spent so far to its ledger row (write-ahead accounting)."""
        spent = self.spent()
        if spent != getattr(self, "_flushed", None):
            self._flushed = spent
            self.deps.ledger.progress(self.id, spent, price(spent, self.plan.lane.prices))


class _ChoiceSink:
    """Where one choice's sample events go."""

    def __init__(self, run: Run, index: int, live: bool, plan: "Plan") -> None:
        self.run, self.index, self.live = run, index, live

    def sample_event(self, sid: int, event: Event) -> None:
        if self.run.trace is not None:
            self.run.trace.sample_seen(self.index, sid)
        self.run._sample_event(self.index, sid, event, self.live)

    def sample_done(self, sid: int, generation: Generation) -> None:
        self.run._live_used[(self.index, sid)] = generation.usage.thinking_tokens
        if self.run.trace is not None:
            self.run.trace.sample_done(self.index, sid, generation)
