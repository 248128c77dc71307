"""What a run tells its adapter, and what it ends with.

A :class:`~ponder.run.Run` puts :data:`RunEvent` objects on its queue while
it works (live deltas, summaries, the end of each choice) and finishes with
an :class:`Outcome`: everything a response, a ledger row and the metrics need.
API adapters (chat completions, the CLI) read these and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ponder.errors import PonderError
from ponder.strategies.base import StrategyResult
from ponder.types import Timings, TokenLogprob, Usage

if TYPE_CHECKING:
    from ponder.planning import Plan


@dataclass(frozen=True)
class Delta:
    """Text of a choice as it is generated (or, for multi-sample strategies, the chosen sample at the end)."""

    index: int
    kind: str  # "thinking" | "answer"
    text: str
    used: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class SummaryEvent:
    index: int
    text: str
    thinking_tokens: int


@dataclass(frozen=True)
class ChoiceEnd:
    index: int
    result: StrategyResult


@dataclass(frozen=True)
class Ended:
    outcome: "Outcome"


RunEvent = Delta | SummaryEvent | ChoiceEnd | Ended


@dataclass
class Attempt:
    """One try of the request on one lane."""

    lane: str
    status: int
    usage: Usage
    cost_usd: float
    seconds: float
    error: str | None = None

    def to_dict(self) -> dict:
        d = {"lane": self.lane, "status": self.status, "usage": self.usage.to_openai(),
             "cost_usd": round(self.cost_usd, 10), "seconds": round(self.seconds, 4)}
        if self.error:
            d["error"] = self.error
        return d


@dataclass
class Outcome:
    """Everything a response, a ledger row and the metrics need about one request."""

    id: str
    created: int
    plan: "Plan"
    model: str
    results: list[StrategyResult]
    usage: Usage
    cost_usd: float
    timings: Timings
    status: int = 200
    error: PonderError | None = None
    attempts: list[Attempt] = field(default_factory=list)
    #: why the strategy stopped early ("deadline", "cancelled"), if it did
    stopped: str | None = None
    key: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200

    @property
    def lane(self) -> str:
        return self.attempts[-1].lane if self.attempts else self.plan.lane.name




def answer_and_calls(result: StrategyResult, plan: Any, salt: str = "") -> tuple[str | None, list[dict]]:
    """The answer as content, and the client-tool calls in it (none unless the request has client tools).

    Call ids are derived from ``salt`` (the request id) and the call's place, so a streamed call and the
    final body name it alike.  With ``parallel_tool_calls`` off only the first call is returned.
    """
    if not plan.client_tools:
        return result.answer, []
    from ponder.tools.client import split_calls

    content, calls = split_calls(result.answer, [t["function"]["name"] for t in plan.client_tools], salt=salt)
    return content, calls if plan.parallel_tool_calls else calls[:1]


def outcome_extra(plan: "Plan", results: list[StrategyResult], attempts: list[Attempt], summaries: Usage,
                  summaries_cost: float, n_summaries: int, cache_info: dict | None, status: int,
                  stopped: str | None, *, first_lane: str) -> dict[str, Any]:
    """The response's ``ponder`` fields beyond the thinking report: what OpenAI has no field for."""
    extra: dict[str, Any] = {"flags": flags_of(results)}
    guards = [dict(r.extra["guard"], **({"choice": i} if len(results) > 1 else {}))
              for i, r in enumerate(results) if "guard" in r.extra]
    if guards:
        extra["guard"] = guards[0] if len(guards) == 1 else guards
    if n_summaries:
        extra["summaries"] = {"count": n_summaries, "prompt_tokens": summaries.prompt_tokens,
                              "completion_tokens": summaries.completion_tokens, "cost_usd": round(summaries_cost, 10)}
    cascades = [r.extra["cascade"] for r in results if "cascade" in r.extra]
    if cascades:
        extra["cascade"] = cascades[0] if len(cascades) == 1 else cascades
    if plan.degraded:
        extra["degraded"] = plan.degraded
    if cache_info is not None:
        extra["cache"] = cache_info
    if plan.clamped:
        extra["clamped"] = plan.clamped
    if len(attempts) > 1 or (attempts and attempts[-1].lane != first_lane):
        extra["attempts"] = [a.to_dict() for a in attempts]
    if stopped and status == 200:
        extra["stopped"] = stopped
    return extra


def flags_of(results: list[StrategyResult]) -> list[dict]:
    """The flags of the answers returned (see ponder.flags); with ``choice`` when there are several."""
    if len(results) == 1:
        return list(results[0].extra.get("flags") or [])
    return [dict(f, choice=i) for i, r in enumerate(results) for f in r.extra.get("flags") or []]


def guard_records(extra: dict) -> list[dict]:
    """The guard records of an outcome's ``extra`` (one per choice that had one), as a list."""
    guards = extra.get("guard")
    return guards if isinstance(guards, list) else [guards] if guards else []


def all_flags(extra: dict) -> list[str]:
    """Every flag raised while answering: the returned answers' and those of answers a guard action replaced."""
    found = [f["flag"] for f in extra.get("flags") or []]
    found += [f["flag"] for g in guard_records(extra) for f in g.get("flags_before") or []]
    return sorted(set(found))


def ledger_row(request_id: str, key: str | None, created: int, plan: "Plan", cancelled: bool, *,
               status: str | None = None, outcome: Outcome | None = None) -> dict:
    """A request's ledger row: opened as ``running`` at admission, completed from its outcome."""
    plan = outcome.plan if outcome else plan
    row: dict[str, Any] = {
        "id": request_id, "key": key, "lane": outcome.lane if outcome else plan.lane.name,
        "model": outcome.model if outcome else (plan.lane.model or plan.lane.upstream_model or plan.lane.name),
        "strategy": plan.strategy, "started": created,
    }
    if outcome is None:
        row.update(status=status, usage=Usage().to_dict(), cost_usd=0.0)
        return row
    first = outcome.results[0].chosen.thinking_report if outcome.results else None
    row.update(
        status="ok" if outcome.status == 200 else ("cancelled" if outcome.status in (499, 503) and cancelled
                                                   else "error"),
        http_status=outcome.status, usage=outcome.usage.to_dict(), cost_usd=outcome.cost_usd,
        timings=outcome.timings.to_dict(), samples=sum(r.n_samples for r in outcome.results),
        thinking={"budget": plan.budget.max_tokens, "used": first.used, "stopped": first.stopped} if first else None,
        error=outcome.error.message if outcome.error else None,
        attempts=[a.to_dict() for a in outcome.attempts] if len(outcome.attempts) > 1 else None,
        flags=all_flags(outcome.extra) or None,
        guard=outcome.extra.get("guard"),
    )
    return row
