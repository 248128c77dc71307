"""Run candidate code against tests in a sandboxed subprocess.

The child gets a fresh temporary working directory, a wall-clock timeout, CPU
and address-space limits (``setrlimit``), no inherited environment secrets,
and no network: it runs in a new network namespace when the OS allows
(``unshare -n``), and with proxies unset and ``socket`` disabled otherwise.
Failing output becomes feedback for verify-retry.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass

from ponder.verifiers.base import Verdict

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)

_GUARD = textwrap.dedent(
    """
    import socket as _s
    def _no_net(*a, **k):
        raise OSError("network access is disabled in ponder's sandbox")
    _s.socket = _no_net
    _s.create_connection = _no_net
    """
)


def extract_code(text: str) -> str:
    """The last fenced Python block, or the text itself."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


def _limits(cpu_s: int, mem_mb: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
        os.setsid()

    return apply


@dataclass
class CodeVerifier:
    """``tests`` is Python code (asserts) run after the candidate's code."""

    tests: str
    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 512
    name: str = "code"

    def verify(self, question: str, answer: str, extracted: str | None) -> Verdict:
        code = extract_code(answer)
        with tempfile.TemporaryDirectory(prefix="ponder-code-") as tmp:
            path = os.path.join(tmp, "candidate.py")
            with open(path, "w") as fh:
                fh.write(_GUARD + "\n" + code + "\n\n# --- tests ---\n" + self.tests + "\n")
            cmd = [sys.executable, "-I", path]
            if shutil.which("unshare") and os.geteuid() == 0:
                cmd = ["unshare", "-n", "--"] + cmd
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
            try:
                p = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=self.timeout_s,
                                   preexec_fn=_limits(self.cpu_s, self.memory_mb))
            except subprocess.TimeoutExpired:
                return Verdict(score=0.0, passed=False, feedback=f"the code did not finish within {self.timeout_s:g} s")
            if p.returncode != 0 and "unshare" in cmd[0] and "Operation not permitted" in p.stderr:
                # no namespace here: the socket guard alone keeps the network off
                p = subprocess.run(cmd[3:], cwd=tmp, env=env, capture_output=True, text=True, timeout=self.timeout_s,
                                   preexec_fn=_limits(self.cpu_s, self.memory_mb))
        if p.returncode == 0:
            return Verdict(score=1.0, passed=True)
        tail = (p.stderr or p.stdout).strip().splitlines()[-12:]
        return Verdict(score=0.0, passed=False, feedback="the tests failed:\n" + "\n".join(tail))
