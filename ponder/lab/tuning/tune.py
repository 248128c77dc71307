"""``ponder tune``: from lab runs to a routing policy.

Items of the runs are scored by the router and cut into equal-count bands
by score.  In each band, every configuration the runs measured is a
candidate; the band gets the cheapest one (mean completion tokens, or
dollars when lanes have prices) whose accuracy in that band reaches the
quality floor and whose p95 time to answer is within the latency SLO.  The
floor is ``--min-accuracy`` when given, else 95% of the best accuracy any
candidate reaches in the band.  The measured figures are written next to
each band so the policy explains itself.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ponder.config import PonderConfig
from ponder.errors import ConfigError
from ponder.lab.config import BenchConfig
from ponder.lab.metrics import percentile, wilson_interval
from ponder.lab.results import dedupe
from ponder.lab.runner import RUN, load_items, read_samples
from ponder.routing.policy import Band, RoutingPolicy
from ponder.strategies import count_param
from ponder.types import Message


@dataclass
class RunItem:
    id: str
    prompt: str
    lines: dict[str, dict]  # config key -> sample line


def load_runs(dirs: Sequence[str | Path]) -> list[RunItem]:
    """Items of lab runs with their prompts (rebuilt from run.json) and logged results."""
    out: dict[str, RunItem] = {}
    for d in dirs:
        d = Path(d)
        if not (d / RUN).exists():
            raise ConfigError(f"{d} is not a ponder bench run (no {RUN})", param="RUN_DIR")
        cfg = BenchConfig.from_dict(json.loads((d / RUN).read_text())["config"])
        items = {it.id: it for it in load_items(cfg, lambda m: None)}
        for r in dedupe(read_samples(d)):
            it = items.get(r["item"])
            if it is None:
                continue
            ri = out.setdefault(f"{d}::{it.id}", RunItem(it.id, cfg.prompt.format(question=it.question), {}))
            ri.lines[r["config"]["key"]] = r
    if not out:
        raise ConfigError("the runs hold no finished samples", param="RUN_DIR")
    return list(out.values())


def score_items(items: list[RunItem], router) -> list[float]:
    return [router.score([Message("user", it.prompt)]).score for it in items]


def _tokens(r: dict) -> float:
    u = r.get("usage") or {}
    return float(u.get("thinking_tokens", 0) + u.get("answer_tokens", 0))


def band_figures(items: list[RunItem], key: str) -> dict[str, Any] | None:
    rs = [it.lines[key] for it in items if key in it.lines]
    if len(rs) < len(items) or not rs:
        return None  # a configuration must cover every item of the band to be compared fairly
    c = sum(bool(r.get("correct")) for r in rs)
    lat = [r.get("latency_s") or 0.0 for r in rs]
    return {"items": len(rs), "accuracy": round(c / len(rs), 4),
            "ci95": [round(x, 4) for x in wilson_interval(c, len(rs))],
            "tokens": round(sum(_tokens(r) for r in rs) / len(rs), 2),
            "cost_usd": sum(r.get("cost_usd") or 0.0 for r in rs) / len(rs),
            "p95_s": percentile(lat, 95)}


def choose(candidates: dict[str, dict], latency_slo_s: float | None, min_accuracy: float | None,
           use_cost: bool) -> tuple[str, dict, str]:
    """(key, figures, why) of the cheapest candidate meeting the constraints."""
    if not candidates:
        raise ConfigError("no configuration covers every item of a band; run the same grid on all items",
                          param="RUN_DIR")
    within = {k: f for k, f in candidates.items() if latency_slo_s is None or f["p95_s"] <= latency_slo_s}
    if not within:
        fastest = min(candidates.items(), key=lambda kv: kv[1]["p95_s"])
        raise ConfigError(f"no configuration meets the latency SLO of {latency_slo_s:g} s; the fastest, "
                          f"{fastest[0]}, has p95 {fastest[1]['p95_s']:.2f} s", param="--latency-slo")
    best = max(f["accuracy"] for f in within.values())
    floor = min_accuracy if min_accuracy is not None else 0.95 * best
    ok = {k: f for k, f in within.items() if f["accuracy"] >= floor - 1e-12}
    price = (lambda f: f["cost_usd"]) if use_cost else (lambda f: f["tokens"])
    if not ok:
        k, f = max(within.items(), key=lambda kv: (kv[1]["accuracy"], -price(kv[1])))
        return k, f, (f"no configuration reaches accuracy {floor:.2f} here; took the most accurate within the "
                      f"SLO ({f['accuracy']:.2f})")
    k, f = min(ok.items(), key=lambda kv: (price(kv[1]), -kv[1]["accuracy"], kv[1]["p95_s"]))
    rule = f"min accuracy {floor:.2f}" + ("" if min_accuracy is not None else " (95% of the band's best)")
    return k, f, f"cheapest meeting {rule}" + (f" and p95 <= {latency_slo_s:g} s" if latency_slo_s else "")


def lane_for_model(model: str, config: PonderConfig | None) -> str:
    """A lab model label -> the serving lane that runs it (its name when no config lane matches)."""
    if config is None:
        return model
    from ponder.backends.registry import kind_of

    for lane in config.lanes:
        if lane.name == model:
            return lane.name
        if model in kind_of(lane).labels(lane):
            return lane.name
    return model


def band_from_key(key: str, config: PonderConfig | None) -> Band:
    model, budget, strategy, n = key.split("|")
    kind, _, value = budget.partition("=")
    cp = count_param(strategy)
    params = {cp: int(n[2:])} if cp else {}
    fields: dict[str, Any] = {"max_score": 1.0, "lane": lane_for_model(model, config), "strategy": strategy,
                              "params": params}
    if kind == "effort":
        fields["effort"] = value
    else:
        fields["budget"] = int(value)
    return Band(**fields)


def tune(dirs: Sequence[str | Path], **kw) -> RoutingPolicy:
    """A policy from the items of lab runs (see :func:`tune_items`)."""
    policy = tune_items(load_runs(dirs), **kw)
    policy.source["runs"] = [str(d) for d in dirs]
    return policy


def tune_items(items: list[RunItem], *, router_name: str = "heuristic", router=None, bands: int = 3,
               latency_slo_s: float | None = None, min_accuracy: float | None = None,
               config: PonderConfig | None = None, router_options: dict | None = None) -> RoutingPolicy:
    if bands < 1:
        raise ConfigError("--bands must be >= 1", param="--bands")
    if router is None:
        from ponder.routing import build_router

        router = build_router(RoutingPolicy(router=router_name, router_options=router_options or {},
                                            bands=[Band(max_score=1.0, lane="x")]), lambda: None)
    scores = score_items(items, router)
    order = sorted(range(len(items)), key=lambda i: scores[i])
    requested = bands
    bands = min(bands, len(items))
    use_cost = any((r.get("cost_usd") or 0) > 0 for it in items for r in it.lines.values())
    keys = sorted({k for it in items for k in it.lines})
    out_bands: list[Band] = []
    for b in range(bands):
        idx = order[b * len(items) // bands:(b + 1) * len(items) // bands]
        members = [items[i] for i in idx]
        cands = {k: f for k in keys if (f := band_figures(members, k)) is not None}
        key, figures, why = choose(cands, latency_slo_s, min_accuracy, use_cost)
        band = band_from_key(key, config)
        upper = 1.0 if b == bands - 1 else round(scores[idx[-1]], 6)
        alternatives = {k: {"accuracy": f["accuracy"], "tokens": f["tokens"], "p95_s": f["p95_s"]}
                        for k, f in sorted(cands.items(), key=lambda kv: kv[1]["tokens"])}
        out_bands.append(band.model_copy(update={"max_score": upper, "measured": {
            "config": key, "why": why, "score_range": [round(scores[idx[0]], 4), round(scores[idx[-1]], 4)],
            **figures, "alternatives": alternatives}}))
    # merge neighbours that chose the same configuration
    merged: list[Band] = []
    for band in out_bands:
        if merged and merged[-1].measured and band.measured and merged[-1].measured["config"] == band.measured["config"]:
            merged[-1] = merged[-1].model_copy(update={"max_score": band.max_score})
        else:
            merged.append(band)
    if merged[-1].max_score != 1.0:
        merged[-1] = merged[-1].model_copy(update={"max_score": 1.0})
    return RoutingPolicy(router=router_name, router_options=router_options or {}, bands=merged, source={
        "items": len(items), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "bands_requested": requested, "bands_merged": len(out_bands) - len(merged),
        "constraints": {"latency_slo_s": latency_slo_s, "min_accuracy": min_accuracy},
        "compute": "cost_usd" if use_cost else "completion_tokens"})


def labeled_examples(items: list[RunItem], scores: list[float], fast_key: str, strong_key: str):
    """Calibration / router-evaluation examples: items both configurations answered."""
    from ponder.lab.tuning.calibrate import Labeled

    out = []
    for it, s in zip(items, scores):
        f, g = it.lines.get(fast_key), it.lines.get(strong_key)
        if f is None or g is None:
            continue
        out.append(Labeled(s, bool(f.get("correct")), bool(g.get("correct")), _tokens(f), _tokens(g)))
    if not out:
        raise ConfigError(f"no item has both {fast_key!r} and {strong_key!r}", param="--fast")
    return out


def router_training_set(items: list[RunItem], fast_key: str, strong_key: str) -> tuple[list[str], list[int]]:
    """Prompts labeled 1 where reasoning helped (strong right, fast wrong)."""
    texts, labels = [], []
    for it in items:
        f, g = it.lines.get(fast_key), it.lines.get(strong_key)
        if f is None or g is None:
            continue
        texts.append(it.prompt)
        labels.append(int(bool(g.get("correct")) and not bool(f.get("correct"))))
    return texts, labels


def default_fast_strong(items: list[RunItem]) -> tuple[str, str]:
    """Fast: the cheapest configuration; strong: the most accurate (ties: cheaper)."""
    stats: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for it in items:
        for k, r in it.lines.items():
            s = stats[k]
            s[0] += 1
            s[1] += bool(r.get("correct"))
            s[2] += _tokens(r)
    full = {k: v for k, v in stats.items() if v[0] == max(x[0] for x in stats.values())}
    fast = min(full, key=lambda k: full[k][2] / full[k][0])
    strong = max(full, key=lambda k: (full[k][1] / full[k][0], -full[k][2]))
    return fast, strong
