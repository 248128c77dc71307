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
    total = 0
    by_budget: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        by_budget.setdefault((p.budget, p.tools), []).append(p)
    for pts in by_budget.values():
        pooled_n = [p.n for p in pts if get_strategy(p.strategy).info.pooled]
        total += max(pooled_n) if pooled_n else 0
        for p in pts:
            info = get_strategy(p.strategy).info
            if info.fresh_after_warmup:
                total += p.n
            elif not info.pooled:
                total += info.worst_case_samples(build_params(get_strategy(p.strategy), cfg.strategy_params(p)))
    return total


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
    """Counts generations and tokens on the bar, and announces a measured time estimate once."""

    def __init__(self, state, todo: int, bar, announce: Callable[[str], None]) -> None:
        self.state, self.todo, self.bar, self.announce = state, todo, bar, announce
        self.probe_at = max(1, min(16, todo // 10))
        self.t0 = time.perf_counter()

    def on_generation(self, g: Generation) -> None:
        state = self.state
        state.generations += 1
        if state.generations == self.probe_at and self.todo > self.probe_at:
            # the estimate the plan line could not give: measured on this machine, this model, these budgets
            per = (time.perf_counter() - self.t0) / self.probe_at
            rest = per * (self.todo - self.probe_at)
            self.announce(f"estimate: about {duration(rest)} more ({per:.2f} s per generation over the first "
                          f"{self.probe_at}); Ctrl-C stops within seconds and --resume continues")
        state.tokens += g.usage.thinking_tokens + g.usage.answer_tokens
        state.from_thinking += g.answer_source == "thinking"
        self.bar.update(1)
        self.bar.set_postfix_str(f"tokens {state.tokens}, acc {state.correct / max(1, state.lines):.2f} "
                                 "(all configs)" + (f", {state.errors} errors" if state.errors else ""),
                                 refresh=False)


def plan_line(cfg: BenchConfig, n_items: int, n_configs: int, todo: int, logged: int) -> str:
    total_cfgs = n_configs * n_items
    cap = max((b for b in (cfg.budgets or [])), default=0) + cfg.answer_tokens
    return (f"planned: {total_cfgs} configuration results ({n_items} items x {n_configs} configurations), about "
            f"{todo} generations of up to {cap} tokens each still to run"
            + (f" ({logged} already logged)" if logged else "")
            + (f"; that is up to {todo * cap:,} generated tokens: a long run (--limit makes it smaller)"
               if todo * cap > 500_000 else ""))
