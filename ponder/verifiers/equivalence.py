"""When are two answers the same answer?

Used to group samples for voting.  Cheap checks first (normalized strings,
numbers within a tolerance, choice letters); math-verify only when those
disagree and both sides look mathematical.  math-verify's own timeouts use
SIGALRM, which fails outside the main thread, so it runs with its timeouts
off inside a one-worker process pool and ponder bounds the wall time itself.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import re
import threading
import unicodedata
from dataclasses import dataclass

from ponder.thinking.extract import extract_choice, normalize_number

_NUM = re.compile(r"^-?\d+(?:\.\d+)?(?:/\d+)?$")
_MATHY = re.compile(r"[\\^_{}]|\d")


def normalize_text(s: str) -> str:
    s = unicodedata.normalize("NFKC", s).strip().lower()
    s = re.sub(r"^\$+|\$+$", "", s).strip()
    s = re.sub(r"\s+", " ", s)
    s = s.rstrip(".").strip()
    return s


def as_number(s: str) -> float | None:
    t = normalize_number(normalize_text(s).replace(" ", ""))
    if not _NUM.match(t):
        return None
    if "/" in t:
        a, b = t.split("/")
        return float(a) / float(b) if float(b) else None
    return float(t)


class _MathPool:
    """A lazily started single-process pool for math-verify (restarted on hang)."""

    def __init__(self) -> None:
        self._pool: cf.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def run(self, a: str, b: str, timeout_s: float) -> bool | None:
        with self._lock:
            if self._pool is None:
                self._pool = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            pool = self._pool
        fut = pool.submit(_math_verify_equal, a, b)
        try:
            return fut.result(timeout=timeout_s)
        except cf.TimeoutError:
            with self._lock:
                if self._pool is pool:
                    procs = list((getattr(pool, "_processes", None) or {}).values())
                    pool.shutdown(wait=False, cancel_futures=True)
                    for p in procs:
                        p.kill()
                    self._pool = None
            return None
        except Exception:
            return None


    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            procs = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                p.kill()


_MATH = _MathPool()


def shutdown_pool() -> None:
    """Stop the math-verify worker (the gateway's lifespan hook and the CLI call this on exit)."""
    _MATH.shutdown()


def _math_verify_equal(a: str, b: str) -> bool:
    import logging

    # with its own timeouts off, math-verify warns on every call; the pool bounds time instead
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from math_verify import parse, verify

    pa = parse(a if "$" in a or "\\" in a else f"${a}$", parsing_timeout=None)
    pb = parse(b if "$" in b or "\\" in b else f"${b}$", parsing_timeout=None)
    if not pa or not pb:
        return False
    return bool(verify(pa, pb, timeout_seconds=None))


@dataclass(frozen=True)
class Equivalence:
    """``kind``: auto | math | numeric | string | choice."""

    kind: str = "auto"
    tolerance: float = 1e-6
    math_timeout_s: float = 5.0

    def same(self, a: str | None, b: str | None) -> bool:
        if a is None or b is None:
            return False
        if self.kind == "choice":
            ca, cb = extract_choice(a), extract_choice(b)
            return ca is not None and ca == cb
        na, nb = normalize_text(a), normalize_text(b)
        if na == nb:
            return True
        if self.kind == "string":
            return False
        xa, xb = as_number(a), as_number(b)
        if xa is not None and xb is not None:
            return abs(xa - xb) <= self.tolerance * max(1.0, abs(xa), abs(xb))
        if self.kind == "numeric":
            return False
        if self.kind == "math" or (_MATHY.search(a) and _MATHY.search(b)):
            return bool(_MATH.run(a, b, self.math_timeout_s))
        return False

    def group(self, answers: list[str | None]) -> list[int | None]:
        """Group index per answer (None for no answer); groups numbered in order of first appearance."""
        reps: list[str] = []
        out: list[int | None] = []
        for ans in answers:
            if ans is None:
                out.append(None)
                continue
            for gi, rep in enumerate(reps):
                if self.same(ans, rep):
                    out.append(gi)
                    break
            else:
                reps.append(ans)
                out.append(len(reps) - 1)
        return out
