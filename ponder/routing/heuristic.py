"""The heuristic router: a hand-weighted logistic score over cheap features.

Weights (documented, deliberately simple; tune the policy's bands, not these):

=====================  ======  ==============================================
feature                weight  why
=====================  ======  ==============================================
bias                   -2.2    most traffic does not need thinking
log(1 + words)          0.35   longer prompts carry more constraints
log(1 + numbers)        0.9    quantities to combine: arithmetic, word problems
log(1 + math symbols)   0.6    equations and operators
code present            1.2    code and stack traces: debugging pays off
log(1 + reasoning w.)   1.1    prove / solve / debug / step / how many ...
log(1 + questions)      0.2    several questions
log(1 + list parts)     0.5    multi-part questions
small talk             -3.0    greetings and thanks never need thinking
=====================  ======  ==============================================

"hi" scores 0.01, "What is the capital of France?" 0.20, "What is 2+2?" 0.46,
a word problem with several quantities 0.88, a stack trace question 0.90.
About 50 microseconds per request.
"""

from __future__ import annotations

import math
from typing import Sequence

from ponder.routing.base import RouteScore, last_user_text
from ponder.routing.features import Features, extract
from ponder.types import Message

WEIGHTS = {
    "log_words": 0.35,
    "log_numbers": 0.9,
    "log_math_symbols": 0.6,
    "code": 1.2,
    "log_reasoning_words": 1.1,
    "log_questions": 0.2,
    "log_parts": 0.5,
    "small_talk": -3.0,
}
BIAS = -2.2


def heuristic_score(features: Features) -> tuple[float, list[tuple[str, float]]]:
    contributions = [(name, WEIGHTS[name] * x) for name, x in zip(Features.NAMES, features.vector())]
    z = BIAS + sum(c for _, c in contributions)
    return 1.0 / (1.0 + math.exp(-z)), contributions


class HeuristicRouter:
    name = "heuristic"

    def score(self, messages: Sequence[Message]) -> RouteScore:
        f = extract(last_user_text(messages))
        s, contributions = heuristic_score(f)
        top = sorted((c for c in contributions if abs(c[1]) >= 0.3), key=lambda c: -abs(c[1]))[:3]
        why = ", ".join(f"{name.removeprefix('log_').replace('_', ' ')} {value:+.1f}" for name, value in top)
        return RouteScore(s, f"heuristic score {s:.2f} ({why or 'no strong signal'})", self.name,
                          extra={"features": f.__dict__})
