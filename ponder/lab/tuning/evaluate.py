"""Router evaluation on a lab run of a mixed workload (``ponder bench routers``).

For each router, every threshold gives a (share of strong calls, quality)
point; the summary is APGR (average performance-gap recovered, random = 0.5)
and CPT(x): the share of strong calls needed to recover x of the quality gap
between all-fast and all-strong.  Baselines: random routing, all-fast,
all-strong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ponder.lab.tuning import calibrate
from ponder.lab.tuning.tune import RunItem, labeled_examples, score_items

TARGETS = (0.5, 0.8, 0.95)


def evaluate(items: list[RunItem], fast_key: str, strong_key: str, routers: dict[str, Any]) -> dict:
    out: dict[str, Any] = {"fast": fast_key, "strong": strong_key, "routers": {}}
    base = None
    for name, router in routers.items():
        ex = labeled_examples(items, score_items(items, router), fast_key, strong_key)
        base = ex
        pts = calibrate.curve(ex)
        out["routers"][name] = {
            "apgr": round(calibrate.apgr(ex), 4),
            "cpt": {str(t): calibrate.cpt(ex, t) for t in TARGETS},
            "curve": [{"threshold": p.threshold if p.threshold != float("-inf") else None, "strong_share": p.rate,
                       "quality": p.quality, "tokens": p.tokens} for p in pts],
        }
    assert base is not None
    n = len(base)
    q_fast = sum(e.fast_correct for e in base) / n
    q_strong = sum(e.strong_correct for e in base) / n
    out["items"] = n
    out["all_fast"] = {"quality": q_fast, "tokens": sum(e.fast_tokens for e in base) / n}
    out["all_strong"] = {"quality": q_strong, "tokens": sum(e.strong_tokens for e in base) / n}
    out["random"] = {"apgr": 0.5, "cpt": {str(t): t for t in TARGETS}}
    out["oracle_quality"] = sum(e.fast_correct or e.strong_correct for e in base) / n
    return out


def table(ev: dict) -> str:
    lines = [f"{ev['items']} items; fast = {ev['fast']}; strong = {ev['strong']}",
             f"all-fast quality {ev['all_fast']['quality']:.2f} at {ev['all_fast']['tokens']:.1f} tokens; "
             f"all-strong {ev['all_strong']['quality']:.2f} at {ev['all_strong']['tokens']:.1f}; "
             f"oracle {ev['oracle_quality']:.2f}",
             f"{'router':12} {'APGR':>6} {'CPT(50%)':>9} {'CPT(80%)':>9} {'CPT(95%)':>9}"]

    def f(x):
        return "-" if x is None else f"{x:.2f}"

    rows = dict(ev["routers"])
    rows["random"] = ev["random"]
    for name, r in rows.items():
        lines.append(f"{name:12} {r['apgr']:>6.2f} {f(r['cpt']['0.5']):>9} {f(r['cpt']['0.8']):>9} "
                     f"{f(r['cpt']['0.95']):>9}")
    gap_items = round((ev["all_strong"]["quality"] - ev["all_fast"]["quality"]) * ev["items"])
    if 0 < gap_items < 3:
        lines.append(f"note: all-strong beats all-fast by only {gap_items} item(s); the normalized APGR and CPT "
                     "are dominated by noise on this set (more items or a harder mix)")
    if ev["all_strong"]["quality"] <= ev["all_fast"]["quality"]:
        lines.append("note: the strong configuration is no better than the fast one on this set; "
                     "APGR and CPT are not meaningful")
    lines.append("CPT(x): share of requests sent to the strong side to recover x of the quality gap (lower is better)")
    return "\n".join(lines)


def plot(ev: dict, path: Path) -> None:
    from ponder.lab.report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.6), dpi=110)
    for name, r in ev["routers"].items():
        xs = [p["strong_share"] for p in r["curve"]]
        ys = [p["quality"] for p in r["curve"]]
        ax.step(xs, ys, where="post", label=f"{name} (APGR {r['apgr']:.2f})")
    qf, qs = ev["all_fast"]["quality"], ev["all_strong"]["quality"]
    ax.plot([0, 1], [qf, qs], "k:", label="random (APGR 0.50)")
    ax.scatter([0], [qf], marker="s", color="k", zorder=5, label="all fast")
    ax.scatter([1], [qs], marker="D", color="k", zorder=5, label="all strong")
    ax.set_xlabel("share of requests sent to the reasoning side")
    ax.set_ylabel("accuracy")
    ax.set_title("Router cost-quality curves")
    save_figure(fig, ax, path)
