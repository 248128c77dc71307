"""The service every entry point holds: engines, policy, ledger, metrics — and runs.

:class:`Ponder` owns the engines (:class:`~ponder.backends.pool.EnginePool`),
prepares requests — :meth:`Ponder.prepare` plans through
:mod:`ponder.planning`, builds the lane's engine and fits the request to its
context, in one call that cannot be done out of order — and starts a
:class:`~ponder.run.Run` per request, handing it what it needs
(:class:`~ponder.runtime.RunDeps`).  It keeps no per-request state.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Callable

from ponder.backends.base import CONTROL_SLACK, Backend
from ponder.backends.pool import EnginePool
from ponder.backends.registry import build_backend, lane_has, unprobed
from ponder.config import LaneConfig, PonderConfig
from ponder.errors import ConfigError, ContextOverflow, InvalidRequest, PonderError
from ponder.ledger import Ledger, open_ledger
from ponder.planning import Plan, _plan, is_auto, plan_request
from ponder.request import PonderRequest
from ponder.routing import build_router
from ponder.routing.policy import RoutingPolicy
from ponder.run import Run
from ponder.runtime import RunDeps, toolbox_of
from ponder.telemetry import build_telemetry
from ponder.types import Message, ThinkingBudget, Usage


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
        from ponder.cache import AnswerCache
        from ponder.tools import ToolCache

        self.config = config
        self.engines = EnginePool(backends, backend_factory)
        #: the routing policy for requests that leave the lane open (None: the default lane)
        self.policy = policy
        self.router = None
        self.metrics = metrics
        self._flusher: asyncio.Task | None = None
        #: what every run gets: ledger, answer cache (memory, or Redis shared by replicas), tool-result cache
        self.deps = RunDeps(config=config, engines=self.engines,
                            ledger=ledger if ledger is not None else open_ledger(config.ledger),
                            answer_cache=AnswerCache(config.cache, config.state.url), tool_cache=ToolCache(),
                            cascade=policy.cascade if policy is not None else None,
                            telemetry=build_telemetry(config))
        if policy is not None:
            policy.check_against(config)
            fast = config.lane(policy.lane_name(policy.bands[0], config))
            self.router = build_router(policy, lambda: self.engines.get(fast))

    @property
    def ledger(self) -> Ledger:
        return self.deps.ledger

    @property
    def running(self) -> set:
        """Runs in flight (their spend is flushed to the ledger every ``ledger.flush_interval_s``)."""
        return self.deps.running

    # -- engines -------------------------------------------------------------------------
    def backend(self, lane: LaneConfig) -> Backend:
        """The lane's engine (built on first use; loading a model takes seconds: call off the event loop)."""
        return self.engines.get(lane)

    async def backend_async(self, lane: LaneConfig) -> Backend:
        return await self.engines.get_async(lane)

    def cached_backend(self, lane: LaneConfig) -> Backend | None:
        return self.engines.cached(lane)

    def backends(self) -> list[Backend]:
        return self.engines.all()

    async def aclose(self) -> None:
        """Close engines, HTTP clients, the math-verify pool and the ledger (the lifespan hook calls this)."""
        if self._flusher is not None:
            self._flusher.cancel()
        await self.engines.aclose()
        from ponder.verifiers.equivalence import shutdown_pool

        shutdown_pool()
        await self.deps.answer_cache.aclose()
        self.ledger.close()
        if self.deps.telemetry is not None:
            self.deps.telemetry.shutdown()  # flushes the spans still batched

    def close(self) -> None:
        """Synchronous close (CLI)."""
        asyncio.run(self.aclose())

    # -- preparing a request -------------------------------------------------------------
    async def prepare(self, req: PonderRequest) -> Plan:
        """Route, plan, build the lane's engine and fit the request to its context: the one way in.

        The prompt is rendered and tokenized here, once, and carried on the
        plan to every sample that uses it.
        """
        for lane in unprobed(self.config.lanes):  # an upstream's capabilities decide what may be planned on it
            await self.engines.get_async(lane)
        score = None
        if self.policy is not None and self.policy.router == "llm" and self.router is not None \
                and is_auto(self.config, req.lane or req.model):
            score = await self.router.ascore(list(req.messages))
        plan = plan_request(req, self.config, policy=self.policy, router=self.router, score=score)
        backend = await self.engines.get_async(plan.lane)
        escalation = await self.engines.get_async(plan.escalation.lane) if plan.escalation is not None else None
        retry = _guard_retry(plan)
        guard_engine = await self.engines.get_async(retry.lane) if retry is not None else None
        return self._fit_guard(self._fit(plan, backend, escalation), guard_engine)

    def prepare_sync(self, req: PonderRequest) -> Plan:
        """:meth:`prepare` for synchronous callers (the lab, distillation, tests): no llm router."""
        self.probe()
        plan = plan_request(req, self.config, policy=self.policy, router=self.router)
        escalation = self.engines.get(plan.escalation.lane) if plan.escalation is not None else None
        retry = _guard_retry(plan)
        guard_engine = self.engines.get(retry.lane) if retry is not None else None
        return self._fit_guard(self._fit(plan, self.engines.get(plan.lane), escalation), guard_engine)

    def _fit_guard(self, plan: Plan, engine: Backend | None) -> Plan:
        """The guard's escalation is fitted (prompt rendered, budget clamped) like the request itself."""
        retry = _guard_retry(plan)
        if retry is None or engine is None:
            return plan
        return replace(plan, guard=replace(plan.guard, retry=self._fit(retry, engine, None)))

    def _fit(self, plan: Plan, backend: Backend, escalation: Backend | None) -> Plan:
        """Fit the request to the engine's context before any work: clamp the budget or refuse.

        Counts the prompt with the engine's tokenizer (bounded: a prompt whose
        characters cannot possibly fit is refused without tokenizing it), then
        checks prompt + thinking cap + answer tokens against the context.
        """
        if plan.tools and not lane_has(plan.lane, "builtin_tools"):
            raise InvalidRequest(f"built-in tools ({', '.join(plan.tools)}) run inside the thinking, which needs an "
                                 f"engine that can pause and continue it; lane {plan.lane.name!r} cannot (use OpenAI "
                                 f"`tools` there)", param="ponder.tools")
        limit = backend.info.context_length
        if limit:
            chars = sum(len(m.content) for m in plan.messages)
            if chars > limit * 64:
                raise ContextOverflow(f"the prompt is {chars:,} characters, far beyond the model's context of "
                                      f"{limit} tokens", param="messages")
        prompt = backend.prepare_prompt(plan.messages, plan.budget, _tools_note(plan, self.deps.tool_cache))
        plan = replace(plan, prompt=prompt)
        if not limit or not backend.info.text_completion:
            return plan
        if prompt.n_tokens >= limit:
            raise ContextOverflow(f"the prompt is {prompt.n_tokens} tokens; the model's context holds {limit}",
                                  param="messages")
        plan = self._clamp(plan, prompt.n_tokens, limit)
        if escalation is not None and escalation.info.context_length:
            plan = replace(plan, escalation=self._clamp(plan.escalation, prompt.n_tokens,
                                                        escalation.info.context_length))
        return plan

    def _clamp(self, plan: Plan, prompt: int, limit: int) -> Plan:
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

    def probe(self) -> None:
        """Build the engines of lanes that learn their capabilities from them (start-up; blocking)."""
        for lane in unprobed(self.config.lanes):
            self.engines.get(lane)

    def validate(self) -> None:
        """Plan every lane at every effort tier, every policy band, and every lane's strategy once, at start-up.

        A misspelled strategy, bad strategy parameters or an effort cap above
        ``max_budget`` is an error naming the config key, not a 400 blamed on
        the first client.
        """
        self.probe()
        probe = (Message("user", "probe"),)
        for i, lane in enumerate(self.config.lanes):
            if lane.tools.enabled and not lane_has(lane, "builtin_tools"):
                raise ConfigError(f"lanes.{i} ({lane.name}): built-in tools run inside the thinking and need an "
                                  f"engine that can pause and continue it (backend: llama_cpp)",
                                  param=f"lanes.{i}.tools.enabled")
            try:
                plan_request(PonderRequest(probe, model=lane.name), self.config)
            except PonderError as exc:
                raise ConfigError(f"lanes.{i} ({lane.name}): {exc.message}", param=f"lanes.{i}.{_key(exc)}") from None
            for effort in self.config.thinking.efforts:
                try:
                    plan_request(PonderRequest(probe, model=lane.name, effort=effort), self.config)
                except PonderError as exc:
                    raise ConfigError(f"thinking.efforts.{effort}: {exc.message}",
                                      param=f"thinking.efforts.{effort}") from None
        for j, band in enumerate(self.policy.bands if self.policy is not None else ()):
            lane = self.config.lane(self.policy.lane_name(band, self.config))
            try:
                _plan(PonderRequest(probe), self.config, lane, band, {})
            except PonderError as exc:
                raise ConfigError(f"policy bands.{j} ({band.label()}): {exc.message}",
                                  param=f"policy.bands.{j}") from None

    # -- running -------------------------------------------------------------------------
    def strategy_request(self, plan: Plan, cancel, **kw):
        """The strategy's view of a plan (the lab and distillation run strategies directly)."""
        return self.deps.strategy_request(plan, cancel, **kw)

    def run(self, plan: Plan, **kw) -> Run:
        if self._flusher is None or self._flusher.done():
            try:
                self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
            except RuntimeError:  # no loop (a synchronous caller): nothing to flush in the background
                pass
        self.deps.metrics = self.metrics
        return Run(self.deps, plan, **kw)

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

    async def summarize(self, thinking: str, **kw) -> tuple[str, Usage, float]:
        return await self.deps.summarize(thinking, **kw)


def _guard_retry(plan: Plan) -> Plan | None:
    return plan.guard.retry if plan.guard is not None else None


def _tools_note(plan: Plan, tool_cache) -> str | None:
    from ponder.tools.client import system_note

    return system_note(toolbox_of(plan, tool_cache), plan.client_tools, plan.tool_choice)


def _key(exc: PonderError) -> str:
    p = exc.param or ""
    if p.startswith("ponder.params"):
        return "params" + p.removeprefix("ponder.params")
    if p == "ponder.strategy":
        return "strategy"
    return p or "strategy"
