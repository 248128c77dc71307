"""One interface for every router: messages in, a difficulty score and a reason out.

A router only judges difficulty (score in [0, 1]: how likely thinking pays
for this prompt).  Turning a score into a lane, effort and strategy is the
policy's job (:mod:`ponder.routing.policy`), so the same router can serve
any set of lanes, and ``ponder tune`` can re-cut the score bands from lab
results without retraining anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from ponder.types import Message, Usage


@dataclass(frozen=True)
class RouteScore:
    score: float
    reason: str
    router: str
    #: tokens a router spent deciding (the llm router asks a model)
    usage: Usage = field(default_factory=Usage)
    extra: dict[str, Any] = field(default_factory=dict)


class Router(Protocol):
    name: str

    def score(self, messages: Sequence[Message]) -> RouteScore: ...


def last_user_text(messages: Sequence[Message]) -> str:
    users = [m.content for m in messages if m.role == "user"]
    return users[-1] if users else ""
