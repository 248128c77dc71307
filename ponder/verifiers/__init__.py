"""Verifiers and scorers: answer equivalence, task scorers, code execution, model judges."""

from ponder.verifiers.base import Verdict, Verifier

__all__ = ["Verdict", "Verifier"]
