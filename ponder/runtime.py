"""What a run needs from whoever starts it, handed over explicitly.

:class:`RunDeps` is built by the service (or by a test) and given to each
:class:`~ponder.run.Run`: the engines, the ledger, the metrics, the answer
cache, the summarizer and how a plan becomes a strategy request.  The run
never holds the service, so nothing in the core calls back into it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ponder.strategies.base import Meter, Sink, StrategyRequest
from ponder.strategies.sampling import Counter
from ponder.summaries import summarize, summary_lane
from ponder.types import CancelToken, Deadline, Usage


@dataclass
class RunDeps:
    config: Any
    #: :class:`ponder.backends.pool.EnginePool`
    engines: Any
    ledger: Any
    answer_cache: Any
    #: tool results by (tool, arguments), shared by the service's requests
    tool_cache: Any = None
    metrics: Any = None
    #: the routing policy's cascade settings (None without a cascade policy)
    cascade: Any = None
    #: runs in flight (the service flushes their spend to the ledger)
    running: set = field(default_factory=set)
    #: OpenTelemetry traces (:class:`ponder.telemetry.Telemetry`; None: off, and free)
    telemetry: Any = None

    def strategy_request(self, plan: Any, cancel: CancelToken, *, seed_offset: int = 0,
                         deadline: Deadline | None = None, meter: Meter | None = None,
                         sink: Sink | None = None) -> StrategyRequest:
        """The strategy's view of a plan: one choice's conversation, budget, sampling, limits and prompt."""
        return strategy_request(plan, self.config, self.tool_cache, cancel, seed_offset=seed_offset,
                                deadline=deadline, meter=meter, sink=sink)

    async def summarize(self, thinking: str, *, cancel: CancelToken | None = None,
                        tokens: int = 0) -> tuple[str, Usage, float]:
        return await summarize(self.engines, summary_lane(self.config), thinking, cancel=cancel, tokens=tokens)


def strategy_request(plan: Any, config: Any, tool_cache: Any, cancel: CancelToken, *, seed_offset: int = 0,
                     deadline: Deadline | None = None, meter: Meter | None = None,
                     sink: Sink | None = None) -> StrategyRequest:
    sampling = plan.sampling
    if sampling.seed is not None and seed_offset:
        sampling = sampling.with_seed(sampling.seed + seed_offset)
    return StrategyRequest(
        messages=plan.messages,
        budget=plan.budget,
        sampling=sampling,
        cancel=cancel,
        loop_guard=config.thinking.loop_guard,
        max_samples=config.server.max_samples,
        deadline=deadline,
        answer_grace_s=config.server.answer_grace_s,
        meter=meter or Meter(),
        sink=sink,
        tools=toolbox_of(plan, tool_cache),
        response_format=plan.response_format,
        client_tools=plan.client_tools,
        tool_choice=plan.tool_choice,
        counter=Counter(),
        prompt=plan.prompt,
        early_exit=plan.early_exit,
        sched=(plan.priority, plan.sched_key, plan.sched_weight),
    )


def toolbox_of(plan: Any, tool_cache: Any) -> Any:
    """A fresh toolbox for the plan's built-in tools (None when it has none)."""
    if not plan.tools:
        return None
    from ponder.tools import toolbox_for

    return toolbox_for(plan.lane.tools, plan.tools, tool_cache)
