"""The service every entry point holds: engines, policy, ledger, metrics — and runs.

:class:`Ponder` owns the backends (built lazily, one per distinct engine
setting: the built-in fast and reasoning lanes share one engine), plans
requests through :mod:`ponder.policy`, checks them against the engine's
context before any work, and starts a :class:`~ponder.run.Run` per request.
It keeps no per-request state.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import replace
from typing import Callable

from ponder.api.request import ChatCompletionRequest
from ponder.backends.base import Backend, SampleSpec
from ponder.backends.registry import build_backend
from ponder.config import LaneConfig, PonderConfig
from ponder.errors import ConfigError, ContextOverflow, InvalidRequest, PonderError
from ponder.ledger import Ledger, open_ledger
from ponder.policy import Plan, plan_request
from ponder.pricing import price
from ponder.routing import build_router
from ponder.routing.policy import RoutingPolicy
from ponder.run import Run
from ponder.strategies.base import Meter, Sink, StrategyRequest
from ponder.strategies.sampling import Counter
from ponder.types import CancelToken, Deadline, Message, Sampling, ThinkingBudget, Usage

SUMMARY_INSTRUCTION = (
    "You report on someone else's reasoning. In one short sentence of your own words, say what the reasoning "
    "below has established so far (for example: 'It has added the first two numbers and is checking the "
    "carry.'). Do not quote it and do not solve the problem."
)
#: a summary that copies more than this share of its words from the trace (in runs of 5+ words) is rejected
MAX_COPIED_SHARE = 0.3
#: room an embedded sequence needs beyond thinking and answer: the cues and the closing of a cut think
CONTROL_SLACK = 48


class Ponder:
    def __init__(
        self,
        config: PonderConfig,
        *,
        backends: dict[str, Backend] | None = None,
        backend_factory: Callable[[LaneConfig], Backend] = build_backend,
        policy: RoutingPolicy | None = None,
        ledger: Ledger | None = None,
        metrics=None,
    ) -> None:
        self.config = config
        self._backends: dict[str, Backend] = dict(backends or {})
        self._engines: dict[str, Backend] = {}
        self._factory = backend_factory
        self._build_lock = threading.Lock()
        #: the routing policy for requests that leave the lane open (None: the default lane)
        self.policy = policy
        self.router = None
        self.ledger = ledger if ledger is not None else open_ledger(config.ledger)
        self.metrics = metrics
        #: runs in flight (their spend is flushed to the ledger every ``ledger.flush_interval_s``)
        self.running: set = set()
        self._flusher: asyncio.Task | None = None
        from ponder.tools import ToolCache

        #: tool results by (tool, arguments), shared by this service's requests
        self.tool_cache = ToolCache()
        from ponder.cache import AnswerCache

        #: answers of exact repeats, in the state store (memory, or Redis shared by replicas)
        self.answer_cache = AnswerCache(config.cache, config.state.url)
        if policy is not None:
            policy.check_against(config)
            fast = config.lane(policy.lane_name(policy.bands[0], config))
            self.router = build_router(policy, lambda: self.backend(fast))

    # -- backends ----------------------------------------------------------------------
    def backend(self, lane: LaneConfig) -> Backend:
        """The lane's engine (built on first use; loading a model takes seconds: call off the event loop)."""
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

    async def backend_async(self, lane: LaneConfig) -> Backend:
        return self._backends.get(lane.name) or await asyncio.to_thread(self.backend, lane)

    def cached_backend(self, lane: LaneConfig) -> Backend | None:
        return self._backends.get(lane.name)

    def backends(self) -> list[Backend]:
        return list({id(b): b for b in self._backends.values()}.values())

    async def aclose(self) -> None:
        """Close engines, HTTP clients, the math-verify pool and the ledger (the lifespan hook calls this)."""
        if self._flusher is not None:
            self._flusher.cancel()
        for b in self.backends():
            try:
                await b.aclose()
            except Exception:  # pragma: no cover - closing must go on
                pass
        from ponder.verifiers.equivalence import shutdown_pool

        shutdown_pool()
        await self.answer_cache.aclose()
        self.ledger.close()

    def close(self) -> None:
        """Synchronous close (CLI)."""
        asyncio.run(self.aclose())

    # -- planning ----------------------------------------------------------------------
    async def plan(self, req: ChatCompletionRequest) -> Plan:
        score = None
        if self.policy is not None and self.policy.router == "llm" and self.router is not None:
            from ponder.policy import is_auto

            pinned = req.ponder.lane if req.ponder and req.ponder.lane else req.model
            if is_auto(self.config, pinned):
                score = await self.router.ascore(req.chat())
        return plan_request(req, self.config, policy=self.policy, router=self.router, score=score)

    def plan_sync(self, req: ChatCompletionRequest) -> Plan:
        """Plan without an llm router (tests, start-up validation)."""
        return plan_request(req, self.config, policy=self.policy, router=self.router)

    def preflight(self, plan: Plan) -> Plan:
        """Fit the request to the engine's context before any work: clamp the budget or refuse.

        Counts the prompt with the engine's tokenizer (bounded: a prompt whose
        characters cannot possibly fit is refused without tokenizing it), then
        checks prompt + thinking cap + answer tokens against the context.
        """
        backend = self._backends.get(plan.lane.name)
        if backend is None:
            return plan
        if plan.tools and not backend.info.text_completion:
            raise InvalidRequest(f"built-in tools ({', '.join(plan.tools)}) run inside the thinking, which needs the "
                                 f"embedded engine; lane {plan.lane.name!r} is an upstream chat API (use OpenAI "
                                 f"`tools` there)", param="ponder.tools")
        if not backend.info.text_completion or not backend.info.context_length:
            return replace(plan, prompt_tokens=backend.prompt_tokens(plan.messages, plan.budget))
        limit = backend.info.context_length
        chars = sum(len(m.content) for m in plan.messages)
        if chars > limit * 64:
            raise ContextOverflow(f"the prompt is {chars:,} characters, far beyond the model's context of {limit} "
                                  "tokens", param="messages")
        n = backend.prompt_tokens(plan.messages, plan.budget)
        if n >= limit:
            raise ContextOverflow(f"the prompt is {n} tokens; the model's context holds {limit}", param="messages")
        plan = replace(self._fit(plan, n, limit), prompt_tokens=n)
        if plan.escalation is not None:
            esc_backend = self._backends.get(plan.escalation.lane.name)
            if esc_backend is not None and esc_backend.info.context_length:
                plan = replace(plan, escalation=self._fit(plan.escalation, n, esc_backend.info.context_length))
        return plan

    def _fit(self, plan: Plan, prompt: int, limit: int) -> Plan:
        room = limit - prompt - CONTROL_SLACK
        think, answer = plan.budget.max_tokens, plan.sampling.max_answer_tokens
        if think + answer <= room:
            return plan
        clamped = dict(plan.clamped)
        if self.config.server.budget_overflow == "reject" or room < 16:
            raise ContextOverflow(
                f"the prompt ({prompt} tokens) + thinking cap ({think}) + answer tokens ({answer}) do not fit the "
                f"model's context of {limit} tokens", param="max_thinking_tokens")
        new_answer = min(answer, max(16, room // 4)) if think + 16 > room else answer
        new_think = max(0, min(think, room - new_answer))
        if new_think != think:
            clamped["max_thinking_tokens"] = {"from": think, "to": new_think, "why": "context"}
        if new_answer != answer:
            clamped["max_tokens"] = {"from": answer, "to": new_answer, "why": "context"}
        budget = ThinkingBudget(new_think, min(plan.budget.min_tokens, new_think), plan.budget.effort)
        return replace(plan, budget=budget, sampling=replace(plan.sampling, max_answer_tokens=new_answer),
                       clamped=clamped)

    def validate(self) -> None:
        """Plan every lane at every effort tier, every policy band, and every lane's strategy once, at start-up.

        A misspelled strategy, bad strategy parameters or an effort cap above
        ``max_budget`` is an error naming the config key, not a 400 blamed on
        the first client.
        """
        from ponder.api.request import parse_request

        probe = [{"role": "user", "content": "probe"}]
        for i, lane in enumerate(self.config.lanes):
            if lane.tools.enabled and lane.backend != "llama_cpp":
                raise ConfigError(f"lanes.{i} ({lane.name}): built-in tools run inside the thinking and need the "
                                  f"embedded engine (backend: llama_cpp)", param=f"lanes.{i}.tools.enabled")
            try:
                self.plan_sync(parse_request({"model": lane.name, "messages": probe}))
            except PonderError as exc:
                raise ConfigError(f"lanes.{i} ({lane.name}): {exc.message}", param=f"lanes.{i}.{_key(exc)}") from None
            for effort in self.config.thinking.efforts:
                try:
                    self.plan_sync(parse_request({"model": lane.name, "messages": probe, "reasoning_effort": effort}))
                except PonderError as exc:
                    raise ConfigError(f"thinking.efforts.{effort}: {exc.message}",
                                      param=f"thinking.efforts.{effort}") from None
        if self.policy is not None:
            from ponder.policy import _plan

            for j, band in enumerate(self.policy.bands):
                lane = self.config.lane(self.policy.lane_name(band, self.config))
                try:
                    _plan(parse_request({"messages": probe}), self.config, lane, band, {})
                except PonderError as exc:
                    raise ConfigError(f"policy bands.{j} ({band.label()}): {exc.message}",
                                      param=f"policy.bands.{j}") from None

    # -- running -----------------------------------------------------------------------
    def strategy_request(self, plan: Plan, cancel: CancelToken, *, seed_offset: int = 0,
                         deadline: Deadline | None = None, meter: Meter | None = None,
                         sink: Sink | None = None) -> StrategyRequest:
        sampling = plan.sampling
        if sampling.seed is not None and seed_offset:
            sampling = sampling.with_seed(sampling.seed + seed_offset)
        tools = None
        if plan.tools:
            from ponder.tools import toolbox_for

            tools = toolbox_for(plan.lane.tools, plan.tools, self.tool_cache)
        return StrategyRequest(
            messages=plan.messages,
            budget=plan.budget,
            sampling=sampling,
            cancel=cancel,
            loop_guard=self.config.thinking.loop_guard,
            max_samples=self.config.server.max_samples,
            deadline=deadline,
            meter=meter or Meter(),
            sink=sink,
            tools=tools,
            response_format=plan.response_format,
            client_tools=plan.client_tools,
            tool_choice=plan.tool_choice,
            counter=Counter(),
        )

    def run(self, plan: Plan, **kw) -> Run:
        if self._flusher is None or self._flusher.done():
            try:
                self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
            except RuntimeError:  # no loop (a synchronous caller): nothing to flush in the background
                pass
        return Run(self, plan, **kw)

    async def _flush_loop(self) -> None:
        """One ticker for every running request: write-ahead accounting without a task per request."""
        interval = self.config.ledger.flush_interval_s
        while True:
            await asyncio.sleep(interval)
            for run in list(self.running):
                try:
                    run.flush()
                except Exception:  # pragma: no cover - accounting trouble is logged by the ledger
                    pass

    async def ask(self, plan: Plan, **kw):
        """Run a plan to its outcome (the CLI's and the library's one-call path)."""
        return await self.run(plan, **kw).execute()

    # -- summaries ---------------------------------------------------------------------
    def summarizer_lane(self) -> LaneConfig:
        name = self.config.server.summary_lane
        return self.config.lane(name) if name is not None else self.config.lanes[0]

    async def summarize(self, thinking: str, *, cancel: CancelToken | None = None,
                        tokens: int = 0) -> tuple[str, Usage, float]:
        """A one-sentence summary of a thinking trace: (text, usage, cost).

        Runs on the summary lane's engine next to the generation it
        summarizes (batched with it on the embedded engine).  A "summary"
        that copies the trace is not a summary: it is replaced by a progress
        line, so hidden thinking never leaks through it.
        """
        lane = self.summarizer_lane()
        backend = await self.backend_async(lane)
        spec = SampleSpec((Message("system", SUMMARY_INSTRUCTION), Message("user", thinking[-3000:])),
                          ThinkingBudget(0), Sampling(temperature=0.0, max_answer_tokens=48),
                          cancel=(cancel or CancelToken()).child())
        g = await backend.sample(spec)
        text = g.answer.strip().splitlines()[0].strip() if g.answer.strip() else ""
        if not text or copied_share(text, thinking) > MAX_COPIED_SHARE:
            text = f"Thinking… ({tokens} tokens so far)" if tokens else "Thinking…"
        return text, g.usage, price(g.usage, lane.prices)


def copied_share(summary: str, trace: str, n: int = 5) -> float:
    """Share of the summary's words that sit in a run of ``n``+ consecutive words also found in the trace."""
    words = re.findall(r"\w+", summary.lower())
    if len(words) < n:
        return 0.0
    trace_words = re.findall(r"\w+", trace.lower())
    grams = {tuple(trace_words[i:i + n]) for i in range(len(trace_words) - n + 1)}
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        if tuple(words[i:i + n]) in grams:
            for j in range(i, i + n):
                covered[j] = True
    return sum(covered) / len(words)


def engine_key(lane: LaneConfig) -> str:
    """What makes two lanes' engines different (not their names, efforts, strategies, prices or fallbacks)."""
    return repr(sorted(lane.model_dump(exclude={"name", "effort", "strategy", "params", "answer_tokens", "prices",
                                                "fallbacks", "retries", "retry_backoff_s", "tools"}).items()))


def _key(exc: PonderError) -> str:
    p = exc.param or ""
    if p.startswith("ponder.params"):
        return "params" + p.removeprefix("ponder.params")
    if p == "ponder.strategy":
        return "strategy"
    return p or "strategy"
