"""From ``samples.jsonl`` to ``results.json`` (schema: docs/lab-results.md).

Everything here is computed from the per-sample log alone, so a resumed or
interrupted run summarizes exactly what it logged, and ``results.json`` can
always be rebuilt.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import defaultdict
from typing import Any, Iterable

from ponder import __version__
from ponder.lab.metrics import knee, maj_at_k, pareto_front, pass_at_k, percentile, wilson_interval
from ponder.verifiers.equivalence import normalize_text

SCHEMA = "ponder.lab.results/1"


def dedupe(lines: Iterable[dict]) -> list[dict]:
    """First line per (configuration, item): a resumed run may have logged one twice."""
    seen, out = set(), []
    for r in lines:
        k = (r["config"]["key"], r["item"])
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _ks(n: int) -> list[int]:
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if n not in ks:
        ks.append(n)
    return ks


def _vote_key(draw: dict) -> str | None:
    """Draws vote by their normalized extracted answer; every fully correct draw shares one key."""
    if draw.get("score") == 1.0:
        return "\x00correct"
    e = draw.get("extracted")
    return None if e is None else normalize_text(str(e))


def sampling_metrics(lines: list[dict]) -> dict[str, dict[str, float]]:
    """Unbiased pass@k and maj@k from each item's independent draws (k up to the fewest draws)."""
    draws = [r["draws"] for r in lines if r.get("independent_draws") and r.get("draws")]
    if not draws or len(draws) != len(lines):
        return {}
    n_min = min(len(d) for d in draws)
    out: dict[str, dict[str, float]] = {"pass_at_k": {}, "maj_at_k": {}}
    for k in _ks(n_min):
        out["pass_at_k"][str(k)] = sum(pass_at_k(len(d), sum(x.get("score") == 1.0 for x in d), k)
                                       for d in draws) / len(draws)
        out["maj_at_k"][str(k)] = sum(maj_at_k([_vote_key(x) for x in d], "\x00correct", k) for d in draws) / len(draws)
    return out


def config_metrics(lines: list[dict]) -> dict[str, Any]:
    ok = [r for r in lines if r.get("usage")]
    n = len(lines)
    correct = sum(bool(r.get("correct")) for r in lines)
    lo, hi = wilson_interval(correct, n)
    think = [r["usage"]["thinking_tokens"] for r in ok]
    answer = [r["usage"]["answer_tokens"] for r in ok]
    completion = [a + b for a, b in zip(think, answer)]
    prompt = [r["usage"]["prompt_tokens"] for r in ok]
    latency = [r["latency_s"] for r in ok]
    cost = sum(r.get("cost_usd") or 0.0 for r in ok)
    scores = [r["score"] for r in lines if r.get("score") is not None]
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in lines:
        by_task[f"{r['task']} [{r['difficulty']}]"].append(r)
    # extraction trouble at a glance: answers taken from the thinking, answers nothing could be read from
    draws = [d for r in ok for d in (r.get("draws") or [])]
    return {
        "items": n,
        "correct": correct,
        "accuracy": correct / n if n else None,
        "ci95": [lo, hi],
        "mean_score": _mean(scores),
        "errors": sum(r.get("error") is not None for r in lines),
        "samples_per_query": _mean([r.get("n_samples", 0) for r in ok]),
        "thinking_tokens": {"mean": _mean(think), "median": _median(think)},
        "answer_tokens": {"mean": _mean(answer), "median": _median(answer)},
        "completion_tokens": {"mean": _mean(completion), "median": _median(completion)},
        "prompt_tokens": {"mean": _mean(prompt)},
        "truncated_share": _mean([float(bool(r.get("truncated"))) for r in ok]),
        "answers": {
            "from_thinking": sum(r.get("answer_source") == "thinking" for r in ok),
            "unparseable": sum(r.get("extracted") is None for r in ok),
            "samples_from_thinking": sum(d.get("answer_source") == "thinking" for d in draws),
            "samples_unparseable": sum(d.get("extracted") is None for d in draws),
            "samples": len(draws),
        },
        "latency_s": {"mean": _mean(latency), "p50": percentile(latency, 50) if latency else None,
                      "p95": percentile(latency, 95) if latency else None,
                      "p99": percentile(latency, 99) if latency else None},
        "cost_usd": {"per_query": cost / n if n else None, "per_correct": cost / correct if correct else None,
                     "total": cost},
        **sampling_metrics(lines),
        "by_task": {
            name: {"items": len(rs), "accuracy": sum(bool(r.get("correct")) for r in rs) / len(rs),
                   "ci95": list(wilson_interval(sum(bool(r.get("correct")) for r in rs), len(rs)))}
            for name, rs in sorted(by_task.items())
        },
    }


def compute_axis(configs: list[dict]) -> str:
    """Cost in dollars when any lane has prices, else completion tokens."""
    return "cost_usd" if any((c["metrics"]["cost_usd"]["total"] or 0) > 0 for c in configs) else "completion_tokens"


def compute_of(c: dict, axis: str) -> float:
    m = c["metrics"]
    if axis == "cost_usd":
        return m["cost_usd"]["per_query"] or 0.0
    return m["completion_tokens"]["mean"] or 0.0


def curves(configs: list[dict]) -> list[dict]:
    """Accuracy against tokens for each (model, strategy): all points, the strategy's own frontier, its knee.

    The knee is taken on the frontier (the best accuracy the strategy reaches
    at each compute level), where "more thinking stops paying" is read off.
    """
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for c in configs:
        groups[(c["model"], c["strategy"])].append(c)
    out = []
    for (model, strategy), cs in sorted(groups.items()):
        pts = sorted(cs, key=lambda c: (c["metrics"]["completion_tokens"]["mean"] or 0.0))
        xy = [(c["metrics"]["completion_tokens"]["mean"] or 0.0, c["metrics"]["accuracy"] or 0.0) for c in pts]
        front = pareto_front(xy)
        k = knee([xy[i] for i in front])
        out.append({
            "model": model, "strategy": strategy,
            "points": [{"key": c["key"], "budget": c["budget"], "n": c["n"], "tokens": x, "accuracy": y}
                       for c, (x, y) in zip(pts, xy)],
            "frontier": [pts[i]["key"] for i in front],
            "knee": pts[front[k]]["key"] if k is not None else None,
        })
    return out


def matched_compute(configs: list[dict], levels: int = 5) -> dict[str, Any]:
    """Best accuracy each strategy reaches within a token allowance, at a few shared allowances."""
    xs = sorted({round(c["metrics"]["completion_tokens"]["mean"] or 0.0, 1) for c in configs})
    if not xs:
        return {"levels": [], "strategies": {}}
    if len(xs) > levels:
        xs = [xs[round(i * (len(xs) - 1) / (levels - 1))] for i in range(levels)]
    table: dict[str, list[float | None]] = {}
    for c in configs:
        table.setdefault(f"{c['model']} / {c['strategy']}", [None] * len(xs))
    for name in table:
        for j, level in enumerate(xs):
            acc = [c["metrics"]["accuracy"] for c in configs
                   if f"{c['model']} / {c['strategy']}" == name
                   and round(c["metrics"]["completion_tokens"]["mean"] or 0.0, 1) <= level]
            table[name][j] = max(acc) if acc else None
    return {"levels": xs, "strategies": table}


def recommend(configs: list[dict], axis: str, latency_slo_s: float | None, min_accuracy: float | None) -> dict:
    """The cheapest configuration meeting the quality floor within the latency SLO (p95)."""
    def lat(c):
        return c["metrics"]["latency_s"]["p95"] or 0.0

    within = [c for c in configs if latency_slo_s is None or lat(c) <= latency_slo_s]
    if min_accuracy is None and latency_slo_s is None:
        # no constraints: the knee of the frontier is the usual sweet spot
        front = pareto(configs, axis)["frontier"]
        pts = [(compute_of(_by_key(configs, k), axis), _by_key(configs, k)["metrics"]["accuracy"] or 0.0)
               for k in front]
        k = knee(pts)
        if k is not None:
            return {"key": front[k], "reason": "knee of the accuracy-vs-compute frontier (no SLO or quality floor "
                                               "given)"}
        return {"key": front[-1] if front else None,
                "reason": "the most accurate point of the accuracy-vs-compute frontier (the frontier has no knee: "
                          "fewer than three points or no bend; no SLO or quality floor given)"}
    feasible = [c for c in within if min_accuracy is None or (c["metrics"]["accuracy"] or 0.0) >= min_accuracy]
    if not feasible:
        best = max(within, key=lambda c: c["metrics"]["accuracy"] or 0.0) if within else None
        why = []
        if latency_slo_s is not None:
            why.append(f"p95 latency <= {latency_slo_s:g} s")
        if min_accuracy is not None:
            why.append(f"accuracy >= {min_accuracy:g}")
        msg = f"no configuration meets {' and '.join(why)}"
        if best is not None:
            msg += f"; the most accurate within the SLO is {best['key']} at {best['metrics']['accuracy']:.3f}"
        elif latency_slo_s is not None:
            msg += "; no configuration meets the latency SLO at all"
        return {"key": None, "reason": msg}
    chosen = min(feasible, key=lambda c: (compute_of(c, axis), -(c["metrics"]["accuracy"] or 0.0), lat(c)))
    return {"key": chosen["key"], "reason": f"cheapest ({axis}) configuration meeting the constraints "
                                            f"(accuracy {chosen['metrics']['accuracy']:.3f}, p95 {lat(chosen):.2f} s)"}


def _by_key(configs: list[dict], key: str) -> dict:
    return next(c for c in configs if c["key"] == key)


def pareto(configs: list[dict], axis: str) -> dict:
    pts = [(compute_of(c, axis), c["metrics"]["accuracy"] or 0.0) for c in configs]
    return {"axis": axis, "frontier": [configs[i]["key"] for i in pareto_front(pts)]}


def _item_set_hash(lines: list[dict]) -> str:
    import hashlib

    pairs = sorted({(r["item"], r.get("expected_sha256") or "") for r in lines})
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def build_results(lines: list[dict], *, run: dict, items: int, wall_s: float | None, partial: bool,
                  latency_slo_s: float | None = None, min_accuracy: float | None = None) -> dict:
    lines = dedupe(lines)
    by_key: dict[str, list[dict]] = defaultdict(list)
    for r in lines:
        by_key[r["config"]["key"]].append(r)
    configs = []
    for key, rs in by_key.items():
        c = rs[0]["config"]
        configs.append({"key": key, "model": c["model"], "budget": c["budget"], "strategy": c["strategy"],
                        "n": c["n"], **{k: c[k] for k in ("tools", "early_exit", "variant") if c.get(k)},
                        "metrics": config_metrics(rs)})
    configs.sort(key=lambda c: (c["model"], c["strategy"], c["metrics"]["completion_tokens"]["mean"] or 0.0))
    axis = compute_axis(configs) if configs else "completion_tokens"
    tasks: dict[str, set] = defaultdict(set)
    for r in lines:
        tasks[f"{r['task']} [{r['difficulty']}]"].add(r["item"])
    return {
        "schema": SCHEMA,
        "ponder_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": run.get("command"),
        "config": run.get("config"),
        "models": run.get("models"),
        "seeds": {"base": (run.get("config") or {}).get("seed"),
                  "per_item": "base * 100003 + item index; sample i of a configuration uses per_item + i"},
        "items": {"count": items, "by_task": {k: len(v) for k, v in sorted(tasks.items())},
                  # which items (ids and reference answers): two runs compare fairly only on the same set
                  "set_sha256": _item_set_hash(lines)},
        "partial": partial,
        "wall_s": wall_s,
        "compute_axis": axis,
        "configurations": configs,
        "curves": curves(configs),
        "matched_compute": matched_compute(configs),
        "pareto": pareto(configs, axis) if configs else {"axis": axis, "frontier": []},
        "recommendation": recommend(configs, axis, latency_slo_s, min_accuracy) if configs else
        {"key": None, "reason": "no configurations finished"},
        "constraints": {"latency_slo_s": latency_slo_s, "min_accuracy": min_accuracy},
    }


def fmt(x: float | None, spec: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)
