"""How much a lab run has left, and how it is shown: the plan line, the progress bar, the time estimate."""

from __future__ import annotations

import sys
import time
from typing import Callable

from ponder.lab.config import BenchConfig, Point
from ponder.strategies import build_params, get_strategy
from ponder.types import Generation


def planned_generations(cfg: BenchConfig, points: list[Point]) -> int:
    """Samples one (model, item) unit draws: one pool of the largest N per (budget, tools), plus what the
    strategies draw outside the pool (each declares its own worst case)."""
    return sum(planned_by_budget(cfg, points).values())


def planned_tokens(cfg: BenchConfig, points: list[Point], cap_of: Callable[[str], int]) -> int:
    """Tokens one unit may generate: each planned generation at its budget's thinking cap plus the answer."""
    return sum(n * (cap_of(budget) + cfg.answer_tokens) for budget, n in planned_by_budget(cfg, points).items())


def planned_by_budget(cfg: BenchConfig, points: list[Point]) -> dict[str, int]:
    """Planned generations of one unit by budget label ("think=64", "effort=low")."""
    out: dict[str, int] = {}
    by_budget: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        by_budget.setdefault((p.budget, p.tools, p.early_exit), []).append(p)
    for (budget, _, _), pts in by_budget.items():
        pooled_n = [p.n for p in pts if get_strategy(p.strategy).info.pooled]
        total = max(pooled_n) if pooled_n else 0
        for p in pts:
            info = get_strategy(p.strategy).info
            if info.fresh_after_warmup:
                total += p.n
            elif not info.pooled:
                total += info.worst_case_samples(build_params(get_strategy(p.strategy), cfg.strategy_params(p)))
        out[budget] = out.get(budget, 0) + total
    return out


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="gen", desc="bench", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1)


class Tracker:
    """Counts generations and tokens on the bar, and estimates the time left from planned tokens.

    A generation's weight is its planned tokens (its thinking cap plus the
    answer tokens), not one: a run whose first generations are short single
    samples and whose later ones are long batched ones is estimated by the
    seconds per planned token measured so far times the planned tokens left.
    The estimate is announced once measured, refreshed on the bar as the run
    goes, and :meth:`finish` says how far the first one was off.
    """

    def __init__(self, state, todo: int, bar, announce: Callable[[str], None], *, planned: int = 0,
                 answer_tokens: int = 0) -> None:
        self.state, self.todo, self.bar, self.announce = state, todo, bar, announce
        self.probe_at = max(1, min(16, todo // 10))
        self.t0 = time.perf_counter()
        #: planned tokens of the whole run, and of the generations finished so far
        self.planned, self.planned_done = planned, 0
        self.answer_tokens = answer_tokens
        self.first: tuple[float, float] | None = None  # (when, seconds left it said)
        self.by_count: float | None = None  # what seconds-per-generation would have said then
        self.left_s: float | None = None

    def estimate(self) -> float | None:
        """Seconds left: measured seconds per planned token times planned tokens left (None: nothing measured)."""
        if not self.planned or not self.planned_done:
            return None
        rate = (time.perf_counter() - self.t0) / self.planned_done
        return rate * max(0, self.planned - self.planned_done)

    def report(self) -> dict | None:
        """The first estimate and what it estimated, as measured: {"said_s", "took_s"} (None: no estimate)."""
        if self.first is None:
            return None
        at, said = self.first
        return {"said_s": round(said, 3), "took_s": round(time.perf_counter() - self.t0 - at, 3),
                "by_count_s": round(self.by_count or 0.0, 3)}

    def finish(self) -> str | None:
        """How far the first estimate was from the real duration (announced at the end of the run)."""
        rep = self.report()
        if rep is None:
            return None
        said, real = rep["said_s"], rep["took_s"]
        off = (said - real) / real * 100 if real > 0 else 0.0
        line = (f"the first estimate said {duration(said)} more; it took {duration(real)} "
                f"({off:+.0f}%)")
        self.announce(line)
        return line

    def on_generation(self, g: Generation) -> None:
        state = self.state
        state.generations += 1
        self.planned_done += g.thinking_report.budget + self.answer_tokens
        self.left_s = self.estimate()
        if state.generations >= self.probe_at and self.first is None and self.todo > self.probe_at \
                and self.left_s is not None:
            # the estimate the plan line could not give: measured on this machine, this model, these budgets
            at = time.perf_counter() - self.t0
            self.first = (at, self.left_s)
            self.by_count = at / state.generations * (self.todo - state.generations)
            self.announce(f"estimate: about {duration(self.left_s)} more ({self.planned_done:,} of "
                          f"{self.planned:,} planned tokens done); Ctrl-C stops within seconds and --resume "
                          "continues")
        state.tokens += g.usage.thinking_tokens + g.usage.answer_tokens
        state.from_thinking += g.answer_source == "thinking"
        self.bar.update(1)
        left = f", ~{duration(self.left_s)} left" if self.left_s is not None and self.first is not None else ""
        self.bar.set_postfix_str(f"tokens {state.tokens}, acc {state.correct / max(1, state.lines):.2f} "
                                 "(all configs)" + (f", {state.errors} errors" if state.errors else "") + left,
                                 refresh=False)


def plan_line(cfg: BenchConfig, n_items: int, n_configs: int, todo: int, logged: int) -> str:
    total_cfgs = n_configs * n_items
    cap = max((b for b in (cfg.budgets or [])), default=0) + cfg.answer_tokens
    return (f"planned: {total_cfgs} configuration results ({n_items} items x {n_configs} configurations), about "
            f"{todo} generations of up to {cap} tokens each still to run"
            + (f" ({logged} already logged)" if logged else "")
            + (f"; that is up to {todo * cap:,} generated tokens: a long run (--limit makes it smaller)"
               if todo * cap > 500_000 else ""))
