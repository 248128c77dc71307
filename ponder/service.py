"""The one flow: request -> policy -> strategy -> backend -> outcome.

:class:`Ponder` is what the CLI, the gateway and the lab hold.  It owns the
backends (built lazily, one per lane), plans requests through
:mod:`ponder.policy`, runs the planned strategy and accounts for every token
and dollar in an :class:`Outcome`.  It keeps no per-request state.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ponder.api.request import ChatCompletionRequest
from ponder.backends.base import Backend
from ponder.backends.registry import build_backend
from ponder.config import LaneConfig, PonderConfig
from ponder.policy import Plan, plan_request
from ponder.routing import build_router
from ponder.routing.policy import RoutingPolicy
from ponder.strategies import get_strategy
from ponder.strategies.base import StrategyRequest, StrategyResult
from ponder.strategies.single import result_of_single
from ponder.thinking import control
from ponder.errors import ContextOverflow
from ponder.types import CancelToken, Message, Sampling, ThinkingBudget, Timings, Usage

SUMMARY_INSTRUCTION = (
    "Summarize the reasoning the user gives you in one short sentence, saying what it has worked out so far. "
    "Do not solve the problem yourself."
)


@dataclass
class Outcome:
    """Everything a response or a ledger line needs about one request."""

    id: str
    created: int
    plan: Plan
    model: str
    results: list[StrategyResult]
    usage: Usage
    cost_usd: float
    timings: Timings
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ChoiceEvent:
    """A streamed controller event tagged with its choice index."""

    index: int
    event: control.Event


class Ponder:
    def __init__(
        self,
        config: PonderConfig,
        *,
        backends: dict[str, Backend] | None = None,
        backend_factory: Callable[[LaneConfig], Backend] = build_backend,
        policy: RoutingPolicy | None = None,
    ) -> None:
        self.config = config
        self._backends: dict[str, Backend] = dict(backends or {})
        self._engines: dict[str, Backend] = {}
        self._factory = backend_factory
        self._build_lock = threading.Lock()
        #: the routing policy for requests that leave the lane open (None: the default lane)
        self.policy = policy
        self.router = None
        if policy is not None:
            policy.check_against(config)
            fast = config.lane(policy.lane_name(policy.bands[0], config))
            self.router = build_router(policy, lambda: self.backend(fast))

    # -- backends ----------------------------------------------------------
    def backend(self, lane: LaneConfig) -> Backend:
        """The lane's engine.  Lanes that differ only in policy (effort, strategy,
        prices) share one engine: the built-in fast and reasoning lanes load the
        model once."""
        b = self._backends.get(lane.name)
        if b is not None:
            return b
        key = engine_key(lane)
        with self._build_lock:
            if lane.name not in self._backends:
                if key not in self._engines:
                    self._engines[key] = self._factory(lane)
                self._backends[lane.name] = self._engines[key]
            return self._backends[lane.name]

    def cached_backend(self, lane: LaneConfig) -> Backend | None:
        """The lane's backend if it is already built (no thread hop needed)."""
        return self._backends.get(lane.name)

    def close(self) -> None:
        for b in {id(b): b for b in self._backends.values()}.values():
            b.close()

    def summarizer(self) -> tuple[Backend, LaneConfig]:
        """The engine that writes thinking summaries.

        A lane named by ``server.summary_lane``, or else a second instance of
        the first lane's model: it must not share the engine that is busy
        generating the thinking it summarizes.
        """
        name = self.config.server.summary_lane
        if name is not None:
            lane = self.config.lane(name)
            return self.backend(lane), lane
        lane = self.config.lanes[0]
        key = "__summarizer__"
        with self._build_lock:
            if key not in self._backends:
                self._backends[key] = self._factory(lane.model_copy(update={"name": key}))
        return self._backends[key], lane

    def summarize(self, thinking: str) -> tuple[str, Usage, float]:
        """A one-sentence summary of a thinking trace: (text, usage, cost)."""
        backend, lane = self.summarizer()
        gen = control.run(
            backend,
            [Message("system", SUMMARY_INSTRUCTION), Message("user", thinking[-3000:])],
            ThinkingBudget(0),
            Sampling(temperature=0.0, max_answer_tokens=48),
        )
        usage = gen.usage
        cost = lane.prices.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens)
        return gen.answer.strip().splitlines()[0] if gen.answer.strip() else "", usage, cost

    def preflight(self, plan: Plan) -> None:
        """Reject prompts that cannot fit the engine's context, before any work."""
        backend = self.backend(plan.lane)
        limit = backend.info.context_length
        if not limit or not backend.info.text_completion:
            return
        n = backend.count_tokens(backend.render_chat(plan.messages))
        if n >= limit:
            raise ContextOverflow(f"the prompt is {n} tokens; the model's context holds {limit}", param="messages")

    # -- planning ----------------------------------------------------------
    def plan(self, req: ChatCompletionRequest) -> Plan:
        return plan_request(req, self.config, policy=self.policy, router=self.router)

    @property
    def routing_blocks(self) -> bool:
        """True when planning runs a model (the llm router): call :meth:`plan` off the event loop."""
        return self.policy is not None and self.policy.router == "llm"

    def strategy_request(self, plan: Plan, cancel: CancelToken, *, seed_offset: int = 0) -> StrategyRequest:
        sampling = plan.sampling
        if sampling.seed is not None and seed_offset:
            sampling = sampling.with_seed(sampling.seed + seed_offset)
        return StrategyRequest(
            messages=plan.messages,
            budget=plan.budget,
            sampling=sampling,
            cancel=cancel,
            loop_guard=self.config.thinking.loop_guard,
            max_samples=self.config.server.max_samples,
        )

    # -- running -----------------------------------------------------------
    def run(self, plan: Plan, *, cancel: CancelToken | None = None, queue_s: float = 0.0) -> Outcome:
        """Run a plan to completion (all ``n`` choices)."""
        cancel = cancel or CancelToken()
        t0 = time.perf_counter()
        backend = self.backend(plan.lane)
        strategy = get_strategy(plan.strategy)
        results = []
        for i in range(plan.n):
            if plan.escalation is not None:
                results.append(self.run_cascade(plan, cancel, seed_offset=i))
            else:
                results.append(strategy.run(self.strategy_request(plan, cancel, seed_offset=i), backend,
                                            plan.strategy_params))
            if cancel.cancelled:
                break
        return self._outcome(plan, results, t0, queue_s)

    def run_cascade(self, plan: Plan, cancel: CancelToken, *, seed_offset: int = 0) -> StrategyResult:
        from ponder.routing.cascade import run_cascade

        esc = plan.escalation
        assert esc is not None and self.policy is not None
        return run_cascade(self.strategy_request(plan, cancel, seed_offset=seed_offset), self.backend(plan.lane),
                           self.strategy_request(esc, cancel, seed_offset=seed_offset), self.backend(esc.lane), esc,
                           self.policy.cascade, plan.lane.prices, esc.lane.prices)

    def stream(self, plan: Plan, *, cancel: CancelToken | None = None) -> Iterator[ChoiceEvent]:
        """Token events of every choice, in order; each choice ends with Finished.

        Strategies that draw several samples stream their chosen sample when
        they finish (their events are the final sample's text).
        """
        cancel = cancel or CancelToken()
        backend = self.backend(plan.lane)
        strategy = get_strategy(plan.strategy)
        for i in range(plan.n):
            request = self.strategy_request(plan, cancel, seed_offset=i)
            stream = getattr(strategy, "stream", None)
            if plan.strategy == "single" and stream is not None and plan.escalation is None:
                for ev in stream(request, backend, plan.strategy_params):
                    yield ChoiceEvent(i, ev)
            else:
                # multi-sample strategies pick their answer at the end; the
                # chosen sample is then streamed, followed by the full result
                # (a cascade decides after its fast attempt: that attempt is short and is
                # buffered; an escalated answer is the reasoning lane's chosen sample)
                result = (self.run_cascade(plan, cancel, seed_offset=i) if plan.escalation is not None
                          else strategy.run(request, backend, plan.strategy_params))
                chosen = result.chosen
                if chosen.thinking:
                    yield ChoiceEvent(i, control.ThinkingDelta(chosen.thinking, chosen.thinking_report.used))
                if chosen.answer:
                    yield ChoiceEvent(i, control.AnswerDelta(chosen.answer))
                yield ChoiceEvent(i, control.Finished(chosen))
                yield ChoiceEvent(i, StrategyDone(result))  # type: ignore[arg-type]
            if cancel.cancelled:
                return

    def finish(self, plan: Plan, finished: list, t0: float, queue_s: float = 0.0) -> Outcome:
        """Build an Outcome from streamed results (Generations or StrategyResults)."""
        results = [f if isinstance(f, StrategyResult) else result_of_single(f) for f in finished]
        return self._outcome(plan, results, t0, queue_s)

    def _outcome(self, plan: Plan, results: list[StrategyResult], t0: float, queue_s: float) -> Outcome:
        usage = plan.overhead
        for r in results:
            usage = usage + r.usage
        first = results[0].chosen.timings if results else Timings()
        timings = Timings(
            queue_s=queue_s,
            ttft_s=None if first.ttft_s is None else first.ttft_s + queue_s,
            time_to_answer_s=None if first.time_to_answer_s is None else first.time_to_answer_s + queue_s,
            total_s=time.perf_counter() - t0 + queue_s,
        )
        # each result at the plan's lane prices, except a cascade's, which priced
        # each of its attempts at its own lane (``extra["cost_usd"]``)
        prices = plan.lane.prices
        cost = prices.cost(plan.overhead.prompt_tokens, plan.overhead.completion_tokens,
                           plan.overhead.cached_prompt_tokens)
        for r in results:
            cost += r.extra["cost_usd"] if "cost_usd" in r.extra else prices.cost(
                r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.cached_prompt_tokens)
        backend = self._backends.get(plan.lane.name)
        extra = {}
        cascades = [r.extra["cascade"] for r in results if "cascade" in r.extra]
        if cascades:
            extra["cascade"] = cascades[0] if len(cascades) == 1 else cascades
        if plan.degraded:
            extra["degraded"] = plan.degraded
        return Outcome(
            id="chatcmpl-" + uuid.uuid4().hex[:24],
            created=int(time.time()),
            plan=plan,
            model=backend.info.model if backend else plan.lane.name,
            results=results,
            usage=usage,
            cost_usd=cost,
            timings=timings,
            extra=extra,
        )


def engine_key(lane: LaneConfig) -> str:
    """What makes two lanes' engines different (not their names, efforts, strategies or prices)."""
    return repr(sorted(lane.model_dump(exclude={"name", "effort", "strategy", "answer_tokens", "prices"}).items()))


@dataclass(frozen=True)
class StrategyDone:
    """Follows the Finished event of a multi-sample strategy with its full result."""

    result: StrategyResult
