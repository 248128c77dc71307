"""The llm router: the fast lane's model rates the difficulty of the request.

A strict format (one digit, 1-5) with greedy decoding and a handful of
tokens; anything else falls back to the heuristic router (and says so in
the reason).  The rating's tokens are counted in the route's usage.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from ponder.backends.base import Backend, SampleSpec
from ponder.routing.base import RouteScore, last_user_text
from ponder.routing.heuristic import HeuristicRouter
from ponder.types import Message, Sampling, ThinkingBudget

RATING_INSTRUCTION = (
    "Rate how much careful step-by-step reasoning the user's request needs, from 1 (none: greetings, "
    "simple facts) to 5 (a lot: multi-step math, proofs, debugging). Reply with one digit only."
)
_DIGIT = re.compile(r"\b([1-5])\b")


def parse_rating(text: str) -> int | None:
    m = _DIGIT.search(text.strip()[:8])
    return int(m.group(1)) if m else None


class LLMRouter:
    name = "llm"

    def __init__(self, backend: Callable[[], Backend]) -> None:
        self._backend = backend
        self._fallback = HeuristicRouter()

    def score(self, messages: Sequence[Message]) -> RouteScore:
        """Synchronous scoring (no event loop running: the lab's router evaluation)."""
        import asyncio

        return asyncio.run(self.ascore(messages))

    async def ascore(self, messages: Sequence[Message]) -> RouteScore:
        import asyncio

        text = last_user_text(messages)
        try:
            backend = await asyncio.to_thread(self._backend)
            gen = await backend.sample(SampleSpec(
                (Message("system", RATING_INSTRUCTION), Message("user", text[-2000:])),
                ThinkingBudget(0), Sampling(temperature=0.0, max_answer_tokens=3)))
        except Exception as exc:  # a broken rater must not fail the request
            fb = self._fallback.score(messages)
            return RouteScore(fb.score, f"llm rater failed ({type(exc).__name__}); {fb.reason}", self.name)
        rating = parse_rating(gen.answer)
        if rating is None:
            fb = self._fallback.score(messages)
            return RouteScore(fb.score, f"llm rater said {gen.answer[:20]!r}, not a digit 1-5; {fb.reason}",
                              self.name, usage=gen.usage)
        s = (rating - 1) / 4
        return RouteScore(s, f"llm rated difficulty {rating}/5", self.name, usage=gen.usage)
