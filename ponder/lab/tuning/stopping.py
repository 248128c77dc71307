"""Stopping rules tuned on held-out data: ``ponder bench tune``.

The stopping parameters of adaptive-consistency (``threshold``,
``round_size``), deepconf-online (``warmup``, ``keep``) and early exit
(``probe_every``, ``agree``) decide how many tokens a request saves; set by
hand they saved 8–14% of self-consistency's tokens on Qwen2.5-Coder-0.5B.
Here they are chosen per model on *dev* items and reported on *test* items:

1. dev and test are the same task families drawn with two seeds; the item
   hashes of the two splits are checked disjoint (an overlap is an error,
   never silently tolerated: reasoning-gym seeds item i from seed + i, so
   seeds 1 and 2 share all but one item — the default test seed is far off);
2. on dev, every variant of the grid runs on the same pooled draws as the
   full-compute baseline (self-consistency at ``n`` for the stopping rules,
   ``single`` without probing for early exit);
3. each strategy keeps the variant with the fewest completion tokens whose
   dev accuracy is within the baseline's 95% interval (at or above its lower
   bound) and that spends fewer tokens than the baseline; none qualifying,
   the strategy keeps the baseline's full compute (early exit: off);
4. on test only the chosen variants and the baselines run; the report gives
   both splits, and ``--write-policy`` writes the chosen parameters into the
   bands of a routing policy the gateway reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ponder.errors import ConfigError
from ponder.lab.config import BenchConfig, parse_variant

#: the variants tried on dev (each runs on the baseline's pooled draws where the strategy is pooled)
GRID: dict[str, list[dict[str, Any]]] = {
    "adaptive-consistency": [{"threshold": t, "round_size": r, "min_samples": 2}
                             for t in (0.6, 0.75, 0.9) for r in (2, 4)],
    "deepconf-online": [{"warmup": w, "keep": k} for w in (2, 4) for k in (0.5, 0.9)],
}
EXIT_GRID = ["32x2", "32x3", "64x2"]
BASELINE = "self-consistency"


@dataclass
class Split:
    name: str
    seed: int
    hashes: set[str] = field(default_factory=set)


def split_items(cfg: BenchConfig, dev_seed: int, test_seed: int, warn: Callable[[str], None]) -> tuple[Split, Split]:
    """Dev and test item sets (by seed), checked disjoint on their question hashes."""
    from ponder.lab.inputs import load_items
    from ponder.lab.tasks import sha256_text

    dev, test = Split("dev", dev_seed), Split("test", test_seed)
    for split in (dev, test):
        # the hash the lab logs with every line (prompt_sha256): what a model was asked
        split.hashes = {sha256_text(cfg.prompt.format(question=it.question))
                        for it in load_items(replace(cfg, seed=split.seed), warn)}
    shared = dev.hashes & test.hashes
    if shared:
        raise ConfigError(f"{len(shared)} item(s) are in both the dev seed {dev_seed} and the test seed {test_seed}: "
                          "choose another --test-seed or families with more items", param="--test-seed")
    return dev, test


def valid_grid(n: int) -> dict[str, list[dict[str, Any]]]:
    """The grid's variants that make sense at ``n`` samples (a warm-up of 4 needs more than 4)."""
    from ponder.lab.config import count_param
    from ponder.strategies import build_params, get_strategy

    out: dict[str, list[dict[str, Any]]] = {}
    for s, variants in GRID.items():
        for v in variants:
            try:
                build_params(get_strategy(s), {**v, count_param(s): n}, 1024)
            except Exception:
                continue
            out.setdefault(s, []).append(v)
    return out


def configs_of(results: dict) -> list[dict]:
    return results["configurations"]


def pick(configs: list[dict], strategy: str, baseline: dict, *, exit_: bool = False) -> dict | None:
    """The cheapest variant of ``strategy`` whose accuracy is at or above the baseline's 95% lower bound."""
    lo = baseline["metrics"]["ci95"][0]
    base_tokens = baseline["metrics"]["completion_tokens"]["mean"] or 0.0
    # a variant must save tokens to be worth anything: one that spends as much or more keeps the baseline
    cands = [c for c in configs if c["strategy"] == strategy and (bool(c.get("early_exit")) if exit_ else True)
             and c["key"] != baseline["key"] and (c["metrics"]["accuracy"] or 0.0) >= lo
             and (c["metrics"]["completion_tokens"]["mean"] or 0.0) < base_tokens]
    return min(cands, key=lambda c: c["metrics"]["completion_tokens"]["mean"] or 0.0) if cands else None


def summary(c: dict, baseline: dict) -> dict:
    m, b = c["metrics"], baseline["metrics"]
    tokens, base_tokens = m["completion_tokens"]["mean"] or 0.0, b["completion_tokens"]["mean"] or 0.0
    return {"key": c["key"], "accuracy": m["accuracy"], "ci95": m["ci95"], "tokens": round(tokens, 1),
            "ratio_to_baseline": round(tokens / base_tokens, 3) if base_tokens else None,
            "baseline_accuracy": b["accuracy"], "baseline_ci95": b["ci95"], "baseline_tokens": round(base_tokens, 1)}


def _run(cfg: BenchConfig, out: Path, progress: bool, announce, backends) -> list[dict]:
    from ponder.lab.results import build_results
    from ponder.lab.runner import RUN, run_bench
    import json

    outcome = run_bench(cfg, out, progress=progress, announce=announce, backends=backends)
    meta = json.loads((out / RUN).read_text())
    return configs_of(build_results(outcome.lines, run=meta, items=len(outcome.items), wall_s=outcome.wall_s,
                                    partial=outcome.interrupted))


def tune_stopping(base: BenchConfig, out: Path, *, dev_seed: int = 1, test_seed: int = 1_000_001, n: int = 8,
                  progress: bool = True, announce: Callable[[str], None] = print, backends: dict | None = None) -> dict:
    """Tune on dev, report on test (see the module docstring); returns the report (also written as JSON)."""
    import json

    dev, test = split_items(base, dev_seed, test_seed, announce)
    stop = replace(base, strategies=[BASELINE, *GRID], n=[n], variants=valid_grid(n), early_exit=[])
    probe = replace(base, strategies=["single"], n=[1], variants={}, early_exit=list(EXIT_GRID))
    chosen: dict[str, dict] = {}
    report: dict[str, Any] = {"dev_seed": dev_seed, "test_seed": test_seed, "items": {"dev": len(dev.hashes),
                                                                                       "test": len(test.hashes)},
                              "strategies": {}}
    dev_configs = _run(replace(stop, seed=dev_seed), out / "dev-stopping", progress, announce, backends) + \
        _run(replace(probe, seed=dev_seed), out / "dev-probe", progress, announce, backends)
    base_dev = _only(dev_configs, BASELINE)
    single_dev = _only(dev_configs, "single", exit_=False)
    for strategy in GRID:
        c = pick(dev_configs, strategy, base_dev)
        chosen[strategy] = parse_variant(c["key"].rsplit("|", 1)[1]) if c else {}
        report["strategies"][strategy] = {"params": chosen[strategy],
                                          "dev": summary(c, base_dev) if c else None}
    c = pick(dev_configs, "single", single_dev, exit_=True)
    exit_label = c["key"].rsplit("|exit=", 1)[1] if c else ""
    report["strategies"]["early-exit"] = {"params": exit_label, "dev": summary(c, single_dev) if c else None}
    # test: the chosen variants and the baselines, nothing else
    t_stop = replace(stop, seed=test_seed, variants={s: [v] for s, v in chosen.items() if v},
                     strategies=[BASELINE, *[s for s in GRID if chosen[s]]])
    t_probe = replace(probe, seed=test_seed, early_exit=[exit_label] if exit_label else [])
    test_configs = _run(t_stop, out / "test-stopping", progress, announce, backends) + \
        _run(t_probe, out / "test-probe", progress, announce, backends)
    base_test, single_test = _only(test_configs, BASELINE), _only(test_configs, "single", exit_=False)
    for strategy in GRID:
        c = next((x for x in test_configs if x["strategy"] == strategy), None)
        report["strategies"][strategy]["test"] = summary(c, base_test) if c else None
    c = next((x for x in test_configs if x["strategy"] == "single" and x.get("early_exit")), None)
    report["strategies"]["early-exit"]["test"] = summary(c, single_test) if c else None
    report["hashes_disjoint"] = True
    (out / "tuned.json").write_text(json.dumps(report, indent=2))
    return report


def _only(configs: list[dict], strategy: str, *, exit_: bool | None = None) -> dict:
    for c in configs:
        if c["strategy"] == strategy and not c.get("variant") and (exit_ is None or bool(c.get("early_exit")) == exit_):
            return c
    raise ConfigError(f"the run has no plain {strategy} configuration to compare against", param="--strategies")


def write_policy(report: dict, path: Path) -> None:
    """Put the chosen parameters into the policy's bands that use each strategy (early exit on ``single`` bands)."""
    import yaml

    from ponder.routing.policy import load_policy

    load_policy(str(path))  # a policy that does not load is not rewritten
    doc = yaml.safe_load(path.read_text())
    for band in doc.get("bands", []):
        s = band.get("strategy")
        if s in GRID and report["strategies"][s]["params"]:
            band["params"] = {**band.get("params", {}), **report["strategies"][s]["params"]}
        exit_ = report["strategies"]["early-exit"]["params"]
        if s == "single" and exit_ and band.get("effort") != "none" and band.get("budget") != 0:
            every, _, agree = exit_.partition("x")
            band["early_exit"] = {"probe_every": int(every), "agree": int(agree)}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
