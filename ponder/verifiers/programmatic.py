"""Verifiers backed by code: a Python callable, or a task's own scorer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ponder.verifiers.base import Verdict
from ponder.verifiers.equivalence import Equivalence


@dataclass
class CallableVerifier:
    """Wraps ``fn(extracted_answer, full_answer) -> float | bool``."""

    fn: Callable[[str | None, str], float | bool]
    name: str = "callable"
    #: a score at or above this passes
    threshold: float = 1.0

    def verify(self, question: str, answer: str, extracted: str | None) -> Verdict:
        raw = self.fn(extracted, answer)
        score = float(raw)
        return Verdict(score=score, passed=score >= self.threshold,
                       feedback="" if score >= self.threshold else f"the checker scored this answer {score:g}")


@dataclass
class ReferenceVerifier:
    """Compares the extracted answer with a known reference (lab use)."""

    reference: str
    equivalence: Equivalence = Equivalence()
    name: str = "reference"

    def verify(self, question: str, answer: str, extracted: str | None) -> Verdict:
        ok = self.equivalence.same(extracted, self.reference)
        return Verdict(score=1.0 if ok else 0.0, passed=ok, feedback="" if ok else "the answer is not correct")


@dataclass
class TaskVerifier:
    """A reasoning-gym dataset's ``score_answer``; only a score of 1.0 passes."""

    dataset: Any
    entry: dict
    name: str = "task"

    def verify(self, question: str, answer: str, extracted: str | None) -> Verdict:
        score = float(self.dataset.score_answer(extracted if extracted is not None else answer, self.entry))
        passed = score == 1.0
        return Verdict(score=score, passed=passed,
                       feedback="" if passed else f"the task's checker gave this answer {score:g} out of 1")
