"""``ponder bench compare A B``: what changed between two runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ponder.errors import ConfigError
from ponder.lab.results import SCHEMA, fmt


def load_results(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise ConfigError(f"{path}: no results.json (is it a `ponder bench --out` directory?)", param="RUN")
    try:
        data = json.loads(p.read_text())
    except ValueError as exc:
        raise ConfigError(f"{p}: not JSON ({exc})", param="RUN") from None
    if data.get("schema") != SCHEMA:
        raise ConfigError(f"{p}: schema {data.get('schema')!r}, this ponder reads {SCHEMA!r}", param="RUN")
    return data


def _two_proportion_p(c1: int, n1: int, c2: int, n2: int) -> float | None:
    """Two-sided p-value of a difference in accuracy (pooled z-test)."""
    if not n1 or not n2:
        return None
    p = (c1 + c2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = abs(c1 / n1 - c2 / n2) / se
    return math.erfc(z / math.sqrt(2))


def _match_key(c: dict, single_model: bool) -> str:
    return f"{c['budget']}|{c['strategy']}|n={c['n']}" if single_model else c["key"]


def compare(a: dict, b: dict) -> dict:
    single = len({c["model"] for c in a["configurations"]}) == 1 and len({c["model"] for c in b["configurations"]}) == 1
    ma = {_match_key(c, single): c for c in a["configurations"]}
    mb = {_match_key(c, single): c for c in b["configurations"]}
    rows = []
    for k in [k for k in ma if k in mb]:
        x, y = ma[k]["metrics"], mb[k]["metrics"]
        ta, tb = x["completion_tokens"]["mean"] or 0.0, y["completion_tokens"]["mean"] or 0.0
        rows.append({
            "config": k, "accuracy_a": x["accuracy"], "accuracy_b": y["accuracy"],
            "delta_accuracy": (y["accuracy"] or 0) - (x["accuracy"] or 0),
            "p_value": _two_proportion_p(x["correct"], x["items"], y["correct"], y["items"]),
            "tokens_a": ta, "tokens_b": tb, "tokens_ratio": (tb / ta) if ta else None,
            "p95_a": x["latency_s"]["p95"], "p95_b": y["latency_s"]["p95"],
        })
    warnings = []
    ia, ib = a.get("items") or {}, b.get("items") or {}
    if ia.get("set_sha256") and ib.get("set_sha256") and ia["set_sha256"] != ib["set_sha256"] or \
            ia.get("count") != ib.get("count") or ia.get("by_task") != ib.get("by_task"):
        warnings.append(f"the runs cover different items (A: {ia.get('count')} items, B: {ib.get('count')}; "
                        f"tasks or references differ): accuracy differences mix the change with the item sets")
    return {"matched_by": "budget|strategy|n" if single else "key", "rows": rows, "warnings": warnings,
            "only_a": [k for k in ma if k not in mb], "only_b": [k for k in mb if k not in ma]}


def compare_table(diff: dict, a_name: str, b_name: str) -> str:
    head = f"{'configuration':40} {'acc A':>6} {'acc B':>6} {'Δ acc':>7} {'p':>6} {'tok A':>8} {'tok B':>8} " \
           f"{'B/A':>6} {'p95 A':>6} {'p95 B':>6}"
    out = [f"A = {a_name}", f"B = {b_name}"] + [f"WARNING: {w}" for w in diff.get("warnings", [])] + \
        [head, "-" * len(head)]
    for r in diff["rows"]:
        out.append(f"{r['config'][:40]:40} {fmt(r['accuracy_a']):>6} {fmt(r['accuracy_b']):>6} "
                   f"{r['delta_accuracy']:>+7.2f} {fmt(r['p_value']):>6} {fmt(r['tokens_a'], '.1f'):>8} "
                   f"{fmt(r['tokens_b'], '.1f'):>8} {fmt(r['tokens_ratio']):>6} {fmt(r['p95_a']):>6} "
                   f"{fmt(r['p95_b']):>6}")
    if not diff["rows"]:
        out.append("(no configurations in common)")
    for side, keys in (("A", diff["only_a"]), ("B", diff["only_b"])):
        if keys:
            out.append(f"only in {side}: {', '.join(keys)}")
    out.append("p: two-sided two-proportion z-test on accuracy; small item counts rarely reach p < 0.05.")
    return "\n".join(out)
