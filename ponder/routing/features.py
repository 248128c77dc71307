"""Cheap text features of a prompt that predict whether thinking will pay.

Plain regular expressions over the last user message: no model, no
tokenizer, microseconds per request.  The heuristic router weights them by
hand; the classifier router learns on top of them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NUMBER = re.compile(r"(?<![A-Za-z])\d+(?:[.,]\d+)?")
_MATH_SYMBOL = re.compile(r"[=+\-*/^×÷√∑∫<>≤≥%]|\\frac|\\sum|\\int")
_CODE_BLOCK = re.compile(r"```|^\s{4}\S", re.M)
_CODE_HINT = re.compile(r"\b(def|class|return|import|function|const|let|var|#include|SELECT|Traceback|Exception)\b")
_REASONING_WORDS = re.compile(
    r"\b(prove|proof|solve|derive|debug|step|steps|calculate|compute|how many|how much|why|explain|"
    r"optimi[sz]e|minimi[sz]e|maximi[sz]e|probability|equation|integral|algorithm|complexity|puzzle|"
    r"if .* then|total|remaining|each|per|left|altogether)\b",
    re.I,
)
_SMALL_TALK = re.compile(r"^\s*(hi|hello|hey|thanks|thank you|good (morning|evening|night)|bye|ok|okay|yes|no)\b",
                         re.I)
_QUESTION = re.compile(r"\?")
_ENUMERATION = re.compile(r"(^|\n)\s*(\d+[.)]|[-*•]|\(?[a-d]\))\s+", re.M)


@dataclass(frozen=True)
class Features:
    words: int
    numbers: int
    math_symbols: int
    code: int
    reasoning_words: int
    questions: int
    parts: int
    small_talk: int

    def vector(self) -> list[float]:
        """Scaled for a linear model (log counts keep long prompts from dominating)."""
        return [math.log1p(self.words), math.log1p(self.numbers), math.log1p(self.math_symbols), float(self.code),
                math.log1p(self.reasoning_words), math.log1p(self.questions), math.log1p(self.parts),
                float(self.small_talk)]

    NAMES = ("log_words", "log_numbers", "log_math_symbols", "code", "log_reasoning_words", "log_questions",
             "log_parts", "small_talk")


def extract(text: str) -> Features:
    return Features(
        words=len(text.split()),
        numbers=len(_NUMBER.findall(text)),
        math_symbols=len(_MATH_SYMBOL.findall(text)),
        code=int(bool(_CODE_BLOCK.search(text) or _CODE_HINT.search(text))),
        reasoning_words=len(_REASONING_WORDS.findall(text)),
        questions=len(_QUESTION.findall(text)),
        parts=len(_ENUMERATION.findall(text)),
        small_talk=int(bool(_SMALL_TALK.match(text)) and len(text.split()) <= 6),
    )
