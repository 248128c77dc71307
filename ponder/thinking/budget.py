"""Effort tiers and the resolution of a request's thinking budget.

An effort tier is a name for a thinking-token cap.  An explicit
``max_thinking_tokens`` always overrides the tier; ``min_thinking_tokens``
asks the controller to keep the model thinking at least that long.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.errors import BudgetError
from ponder.types import ThinkingBudget

#: Defaults follow the tiers vendors converged on (low/medium/high/max with
#: explicit caps).  ``minimal`` and ``xhigh`` are OpenAI's names for "almost
#: none" and "more than high".
DEFAULT_EFFORTS: dict[str, int] = {
    "none": 0,
    "minimal": 64,
    "low": 256,
    "medium": 1024,
    "high": 4096,
    "xhigh": 8192,
    "max": 16384,
}

#: Anything above this is almost certainly a typo (a context-sized think on a
#: gateway is configured per lane, not asked for per request).
DEFAULT_MAX_BUDGET = 131072

#: Effort tiers in descending order; load shedding walks down this list.
EFFORT_ORDER = ("max", "xhigh", "high", "medium", "low", "minimal", "none")


@dataclass(frozen=True)
class EffortTable:
    """Maps effort names to thinking caps.  Configurable per lane."""

    caps: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_EFFORTS))
    max_budget: int = DEFAULT_MAX_BUDGET

    def validate(self) -> None:
        for name, cap in self.caps.items():
            if not isinstance(cap, int) or cap < 0:
                raise BudgetError(f"effort tier {name!r} must map to a token count >= 0, got {cap!r}")
            if cap > self.max_budget:
                raise BudgetError(f"effort tier {name!r} = {cap} exceeds max_budget {self.max_budget}")

    def cap(self, effort: str, *, param: str = "effort") -> int:
        try:
            return self.caps[effort]
        except KeyError:
            names = ", ".join(self.caps)
            raise BudgetError(f"unknown effort {effort!r}; choose one of: {names}", param=param) from None


def resolve_budget(
    table: EffortTable,
    *,
    effort: str | None,
    max_thinking_tokens: int | None = None,
    min_thinking_tokens: int | None = None,
    default_effort: str = "medium",
) -> ThinkingBudget:
    """Turn the request's knobs into one :class:`ThinkingBudget`.

    Raises :class:`BudgetError` (naming the parameter) for negative, inverted
    or absurd values.
    """
    tier = effort if effort is not None else default_effort
    cap = table.cap(tier, param="reasoning_effort" if effort is not None else "effort")
    if max_thinking_tokens is not None:
        _check_count("max_thinking_tokens", max_thinking_tokens, table.max_budget)
        cap = max_thinking_tokens
    low = 0
    if min_thinking_tokens is not None:
        _check_count("min_thinking_tokens", min_thinking_tokens, table.max_budget)
        low = min_thinking_tokens
    if low > cap:
        raise BudgetError(
            f"min_thinking_tokens ({low}) is larger than the thinking cap ({cap})",
            param="min_thinking_tokens",
        )
    return ThinkingBudget(max_tokens=cap, min_tokens=low, effort=tier if max_thinking_tokens is None else None)


def _check_count(name: str, value: object, ceiling: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BudgetError(f"{name} must be an integer, got {value!r}", param=name)
    if value < 0:
        raise BudgetError(f"{name} must be >= 0, got {value}", param=name)
    if value > ceiling:
        raise BudgetError(f"{name} = {value} is above the ceiling of {ceiling} tokens", param=name)
