"""Run candidate code against tests in the sandbox (``ponder.verifiers.sandbox``).

The candidate and the tests run as one program under bubblewrap: unprivileged,
no environment, no network, a read-only system, CPU/memory/file/time limits.
Failing output becomes feedback for verify-retry.  Where no sandbox can be
made, the verdict says so (it fails) rather than running the code unconfined.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ponder.verifiers.base import Verdict
from ponder.verifiers.sandbox import Limits, Sandbox, SandboxUnavailable

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


def extract_code(text: str) -> str:
    """The last fenced Python block, or the text itself."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


@dataclass
class CodeVerifier:
    """``tests`` is Python code (asserts) run after the candidate's code."""

    tests: str
    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 512
    name: str = "code"
    isolation: str = field(default="bwrap")

    def verify(self, question: str, answer: str, extracted: str | None) -> Verdict:
        program = extract_code(answer) + "\n\n# --- tests ---\n" + self.tests + "\n"
        box = Sandbox(Limits(wall_s=self.timeout_s, cpu_s=self.cpu_s, memory_mb=self.memory_mb), self.isolation)
        try:
            p = box.run_python(program)
        except SandboxUnavailable as exc:
            return Verdict(score=0.0, passed=False, feedback=f"the code was not run: {exc}")
        if p.timed_out:
            return Verdict(score=0.0, passed=False, feedback=f"the code did not finish within {self.timeout_s:g} s")
        if p.returncode == 0:
            return Verdict(score=1.0, passed=True)
        tail = (p.stderr or p.stdout).strip().splitlines()[-12:]
        return Verdict(score=0.0, passed=False, feedback="the tests failed:\n" + "\n".join(tail))
