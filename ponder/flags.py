"""Answer flags: what went wrong with an answer that still came back as a 200.

A reasoning trace can end badly in ways no status code shows: the model gave
up, its final answer is not the result its own thinking reached, it was cut
at its budget, it looped, or it never left its think and ponder took the
answer from there.  Every answer of every strategy on every backend passes
through :func:`detect`; each flag is reported in ``ponder.flags``, counted in
``ponder_flags_total{lane,flag}``, written to the ledger, and may trigger the
lane's guard action (:mod:`ponder.guard`).

Detectors register with :func:`detector` (name, what it means) like
strategies and reasoning formats; the README's flag table is this registry.
Their precision and recall are measured on labelled real outputs of the
shipped models (``tests/test_flags.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from ponder.thinking.extract import (answer_like, bare_statement, extract_answer, extract_answer_line,
                                    extract_boxed, last_stated_result, strip_tags)
from ponder.thinking.loop_guard import text_units
from ponder.types import Generation


@dataclass(frozen=True)
class Flag:
    """One thing detected about an answer, with what shows it (values, where)."""

    name: str
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"flag": self.name, **self.detail}


@dataclass(frozen=True)
class Detector:
    name: str
    description: str
    check: Callable[[Generation, str], Flag | None]


DETECTORS: dict[str, Detector] = {}


def detector(name: str, description: str):
    def deco(fn: Callable[[Generation, str], Flag | None]) -> Callable:
        DETECTORS[name] = Detector(name, description, fn)
        return fn
    return deco


def detect(g: Generation, kind: str = "auto") -> list[Flag]:
    """Every flag the generation earns, in registry order."""
    out = []
    for d in DETECTORS.values():
        f = d.check(g, kind)
        if f is not None:
            out.append(f)
    return out


# ---------------------------------------------------------------------------
# detectors
# ---------------------------------------------------------------------------

#: giving up in words: refusals, "cannot be determined", "not enough information", "I don't know"
_GIVE_UP = re.compile(
    r"\b(?:i\s*(?:can\s?not|can't|cannot|am unable to|'m unable to|am not able to|'m not able to|"
    r"don't have|do not have|don't know|do not know|have no (?:way|idea|access))|"
    r"(?:can\s?not|can't|cannot|impossible to|unable to|no way to|not possible to)\s+"
    r"(?:be\s+)?(?:determine|determined|know|known|predict|predicted|answer|answered|tell|say|provide|"
    r"calculate|calculated|find|access|guess)|"
    r"not enough information|insufficient information|(?:information|data) (?:is|are) (?:not available|missing)|"
    r"(?:i|we)\s+(?:do not|don't)\s+(?:currently\s+)?(?:have|know)|"
    r"(?:i'm|i am) (?:not sure|sorry|afraid)|as an ai\b|unknowable|no one (?:can|knows))",
    re.IGNORECASE)


@detector("give_up", "the answer refuses or doubts in words (\"I cannot determine...\", \"not enough "
                     "information\"), or is empty or a bare answer statement after the model thought")
def _give_up(g: Generation, kind: str) -> Flag | None:
    answer = strip_tags(g.answer or "").strip()
    if not answer:
        return Flag("give_up", {"why": "empty answer"}) if g.thinking_report.used or g.thinking else None
    if bare_statement(answer):
        return Flag("give_up", {"why": "an answer statement without a value"})
    m = _GIVE_UP.search(answer)
    if m:
        return Flag("give_up", {"why": "gave up in words", "phrase": m.group(0)})
    return None


@detector("disagreement", "the answer is not the last result the thinking stated (both values given)")
def _disagreement(g: Generation, kind: str) -> Flag | None:
    if g.answer_source != "answer" or not g.thinking or g.thinking_report.truncated:
        return None  # a trace cut at its budget states intermediate results, not its conclusion
    if g.thinking_report.stopped not in ("end", "none"):
        return None
    stated = _conclusion(g.thinking)
    if stated is None or not answer_like(g.answer):
        return None
    kind = "number" if kind in ("auto", "number") else kind
    thought, answered = extract_answer(stated, kind=kind), extract_answer(g.answer, kind=kind)
    if thought is None or answered is None or _same(thought, answered):
        return None
    return Flag("disagreement", {"answer": answered, "thinking": thought})


@detector("truncated", "thinking was cut at its budget, or the answer at its token limit")
def _truncated(g: Generation, kind: str) -> Flag | None:
    if g.finish_reason == "length":
        return Flag("truncated", {"where": "answer"})
    if g.thinking_report.truncated or g.thinking_report.stopped == "budget":
        return Flag("truncated", {"where": "thinking", "used": g.thinking_report.used})
    return None


@detector("repetition", "the trace or the answer repeats itself (the loop guard fired, or a block repeats)")
def _repetition(g: Generation, kind: str) -> Flag | None:
    if g.thinking_report.stopped == "repetition":
        return Flag("repetition", {"where": "thinking", "by": "loop guard"})
    if g.answer and (_loops(g.answer) or _repeated_line(g.answer)):
        return Flag("repetition", {"where": "answer"})
    # the loop guard watched the thinking as it was generated; a block repeated earlier in it is still a loop
    if g.thinking and _repeated_line(g.thinking):
        return Flag("repetition", {"where": "thinking"})
    return None


@detector("answer_from_thinking", "the model ended its turn inside its thinking; the answer was taken from there")
def _from_thinking(g: Generation, kind: str) -> Flag | None:
    return Flag("answer_from_thinking") if g.answer_source == "thinking" else None


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _same(a: str, b: str) -> bool:
    from ponder.verifiers.equivalence import Equivalence

    return Equivalence("auto").same(a, b)


#: a sentence that ends in a result: "... = 57.", "... is 8.", "... equals 43 legs."
_ENDS_IN_RESULT = re.compile(r"(?:=|\bis|\bequals|\bare|\bwas)\s*(?:exactly\s+|about\s+|approximately\s+)?"
                             r"\$?-?\d[\d,./]*(?:\s*[%°\w]+){0,2}\W*$", re.IGNORECASE)


CONCLUSION_CHARS = 600


def _conclusion(thinking: str) -> str | None:
    """The result the thinking concluded with: a boxed value, an answer statement, or a sentence ending in one.

    A trace whose last numbered sentence restates the question ("a number between 1 and 100", "144 / 12 + 3")
    concluded nothing, and so cannot disagree with the answer.
    """
    # a conclusion is where the trace ends: its tail is enough (and keeps the check cheap on long traces)
    stated = last_stated_result(thinking[-CONCLUSION_CHARS:])
    if stated is None:
        return None
    if extract_boxed(stated) or extract_answer_line(stated) or _ENDS_IN_RESULT.search(stated):
        return stated
    return None


def _loops(text: str, max_period: int = 48, repeats: int = 3, min_span: int = 24) -> bool:
    """The loop guard's test, once on the whole text: does it end in one block of units repeated?"""
    units = text_units(text)
    n = len(units)
    for period in range(1, max_period + 1):
        reps = max(repeats, -(-min_span // period))
        span = period * reps
        if period * repeats > n:
            break
        if span <= n and units[n - span:] == units[n - period:] * reps:
            return True
    return False


def _repeated_line(text: str, times: int = 3, min_chars: int = 16) -> bool:
    """A line of some length that occurs ``times`` times or more (a loop that ended before the tail)."""
    counts: dict[str, int] = {}
    for line in strip_tags(text).splitlines():
        key = " ".join(line.split()).lower()
        if len(key) >= min_chars:
            counts[key] = counts.get(key, 0) + 1
            if counts[key] >= times:
                return True
    return False
