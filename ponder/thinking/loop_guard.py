"""Detect a thinking trace that repeats itself.

Small and over-long reasoning traces fall into loops ("Wait, let me check
again. Wait, let me check again. ...").  Every extra token of a loop is pure
cost, so the controller stops thinking as soon as the tail of the trace is
periodic: the last ``period * repeats`` tokens consist of the same block of
``period`` tokens repeated ``repeats`` times, with enough tokens in the span
that this is not a coincidence (``min_span``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoopGuard:
    """Feed token ids (or any hashable units); ``fired`` turns true on a loop."""

    max_period: int = 64
    repeats: int = 3
    min_span: int = 24
    enabled: bool = True
    _tail: list = field(default_factory=list, repr=False)
    fired: bool = False

    def __post_init__(self) -> None:
        if self.max_period < 1 or self.repeats < 2 or self.min_span < 1:
            raise ValueError("loop guard needs max_period >= 1, repeats >= 2, min_span >= 1")

    def feed(self, unit: object) -> bool:
        """Add one unit; return True when the trace has just become a loop."""
        if not self.enabled or self.fired:
            return self.fired
        self._tail.append(unit)
        window = max(self.max_period * self.repeats, self.min_span + self.max_period)
        if len(self._tail) > window:
            del self._tail[: len(self._tail) - window]
        self.fired = self._is_periodic()
        return self.fired

    def feed_many(self, units) -> bool:
        for u in units:
            if self.feed(u):
                return True
        return False

    def _is_periodic(self) -> bool:
        tail = self._tail
        n = len(tail)
        for period in range(1, self.max_period + 1):
            # at least ``repeats`` copies, and at least ``min_span`` units
            reps = max(self.repeats, -(-self.min_span // period))
            span = period * reps
            if period * self.repeats > n:
                break
            if span > n:
                continue
            block = tail[n - period :]
            if all(tail[n - span + i] == block[i % period] for i in range(span - period)):
                return True
        return False


def text_units(text: str) -> list[str]:
    """Split text into word-ish units for backends that give no token ids."""
    return text.split()
