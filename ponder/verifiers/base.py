"""One interface for everything that scores a candidate answer.

A verifier returns a :class:`Verdict`: a score in [0, 1], whether it passed,
feedback a retry loop can show the model, and the tokens it spent (model
judges cost tokens, and every token is counted).  A verifier that crashes or
hangs yields ``error`` instead of taking the request down with it.

Programmatic verifiers are plain functions (``verify``); model judges are
coroutines (``averify``) because they ask an engine.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from ponder.types import Usage


@dataclass
class Verdict:
    score: float | None
    passed: bool | None = None
    feedback: str = ""
    error: str | None = None
    usage: Usage = field(default_factory=Usage)

    @classmethod
    def failed(cls, error: str) -> "Verdict":
        return cls(score=None, passed=None, error=error)


class Verifier(Protocol):
    name: str

    def verify(self, question: str, answer: str, extracted: str | None) -> Verdict:
        """Score one candidate (its full answer text and its extracted answer)."""
        ...


async def safe_verify(verifier, question: str, answer: str, extracted: str | None,
                      *, timeout_s: float = 60.0) -> Verdict:
    """Run a verifier (off the event loop when it is a plain function), turning a crash into ``verifier_error``."""
    try:
        if hasattr(verifier, "averify"):
            v = await asyncio.wait_for(verifier.averify(question, answer, extracted), timeout_s)
        else:
            v = await asyncio.wait_for(asyncio.to_thread(verifier.verify, question, answer, extracted), timeout_s)
    except asyncio.TimeoutError:
        return Verdict.failed(f"verifier_error: no verdict within {timeout_s:g}s")
    except Exception as exc:  # a user-supplied scorer may raise anything
        return Verdict.failed(f"verifier_error: {type(exc).__name__}: {exc}")
    if v.score is not None and not 0.0 <= v.score <= 1.0:
        return Verdict.failed(f"verifier_error: score {v.score!r} outside [0, 1]")
    return v
