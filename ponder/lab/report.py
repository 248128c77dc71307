"""What people read and look at: the terminal table, two plots, report.md and report.html."""

from __future__ import annotations

import html
from pathlib import Path

from ponder.lab.results import compute_of, fmt

TABLE_COLUMNS = ("configuration", "acc", "95% CI", "think", "answer", "samples", "p50 s", "p95 s", "$/query",
                 "$/correct", "from think", "unparsed")


def table_rows(results: dict) -> list[list[str]]:
    rows = []
    rec = results["recommendation"].get("key")
    front = set(results["pareto"]["frontier"])
    for c in results["configurations"]:
        m = c["metrics"]
        mark = ("*" if c["key"] == rec else "") + ("^" if c["key"] in front else "")
        rows.append([
            f"{c['key']}{(' ' + mark) if mark else ''}",
            fmt(m["accuracy"]),
            f"{fmt(m['ci95'][0])}-{fmt(m['ci95'][1])}",
            fmt(m["thinking_tokens"]["mean"], ".1f"),
            fmt(m["answer_tokens"]["mean"], ".1f"),
            fmt(m["samples_per_query"], ".1f"),
            fmt(m["latency_s"]["p50"]),
            fmt(m["latency_s"]["p95"]),
            fmt(m["cost_usd"]["per_query"], ".6f"),
            fmt(m["cost_usd"]["per_correct"], ".6f"),
            _share(m, "from_thinking"),
            _share(m, "unparseable"),
        ])
    return rows


def _share(m: dict, key: str) -> str:
    """Answers of a configuration taken from the thinking / with nothing to extract, as 'count/items'."""
    a = m.get("answers")
    if not a:
        return "-"
    return f"{a[key]}/{m['items'] - m['errors']}"


def text_table(results: dict) -> str:
    rows = table_rows(results)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(TABLE_COLUMNS)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    out = [line(TABLE_COLUMNS), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out.append("")
    out.append("^ on the accuracy/compute Pareto frontier   * recommended: " + results["recommendation"]["reason"])
    for cur in results["curves"]:
        if cur["knee"]:
            out.append(f"knee of {cur['model']} / {cur['strategy']}: {cur['knee']}")
    if results.get("partial"):
        out.append("PARTIAL: the run did not finish; figures cover the configurations logged so far")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, ax, path: Path) -> None:
    """The common finish of every ponder plot: grid, legend, tight layout, written and closed."""
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)


def plot_accuracy_vs_tokens(results: dict, path: Path) -> dict:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    cs = {c["key"]: c for c in results["configurations"]}
    for cur in results["curves"]:
        pts = cur["points"]
        xs = [max(p["tokens"], 1.0) for p in pts]
        ys = [p["accuracy"] for p in pts]
        err = [[p["accuracy"] - cs[p["key"]]["metrics"]["ci95"][0] for p in pts],
               [cs[p["key"]]["metrics"]["ci95"][1] - p["accuracy"] for p in pts]]
        bars = ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, alpha=0.85,
                           label=f"{cur['model']} / {cur['strategy']}")
        color = bars[0].get_color()
        front = [p for p in pts if p["key"] in set(cur.get("frontier", []))]
        ax.plot([max(p["tokens"], 1.0) for p in front], [p["accuracy"] for p in front], "-", color=color, alpha=0.7)
        for p, x, y in zip(pts, xs, ys):
            label = p["budget"].replace("think=", "t") + (f" n{p['n']}" if p["n"] > 1 else "")
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 5), fontsize=7, color=color)
        if cur["knee"]:
            k = next(p for p in pts if p["key"] == cur["knee"])
            ax.scatter([max(k["tokens"], 1.0)], [k["accuracy"]], s=160, facecolors="none", edgecolors=color,
                       linewidths=1.5)
    ax.set_xscale("log")
    from matplotlib.ticker import ScalarFormatter

    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("completion tokens per query (thinking + answer, log scale)")
    ax.set_ylabel("accuracy (full credit), 95% CI")
    ax.set_ylim(-0.02, 1.02)
    knees = any(cur["knee"] for cur in results["curves"])
    ax.set_title("Accuracy vs compute (lines: each strategy's best points" + ("; circled: knee)" if knees else ")"))
    drawn = {"title": ax.get_title(), "xscale": ax.get_xscale()}
    save_figure(fig, ax, path)
    return drawn


def plot_pareto(results: dict, path: Path) -> dict:
    plt = pyplot()
    axis = results["pareto"]["axis"]
    cs = results["configurations"]
    front = results["pareto"]["frontier"]

    def x_of(c):
        return compute_of(c, axis)

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    strategies = sorted({c["strategy"] for c in cs})
    for s in strategies:
        pts = [c for c in cs if c["strategy"] == s]
        ax.scatter([x_of(c) for c in pts], [c["metrics"]["accuracy"] for c in pts], label=s, alpha=0.8)
    fc = [next(c for c in cs if c["key"] == k) for k in front]
    ax.plot([x_of(c) for c in fc], [c["metrics"]["accuracy"] for c in fc], "k--", lw=1, marker="D", ms=4,
            mfc="none", label="Pareto frontier")
    for c in fc:
        ax.annotate(f"{c['budget']} {c['strategy']} n{c['n']}", (x_of(c), c["metrics"]["accuracy"]),
                    textcoords="offset points", xytext=(4, -10), fontsize=7)
    rec = results["recommendation"].get("key")
    if rec:
        c = next(c for c in cs if c["key"] == rec)
        ax.scatter([x_of(c)], [c["metrics"]["accuracy"]], marker="*", s=220, color="gold", edgecolors="k",
                   zorder=5, label="recommended")
    if all(x_of(c) > 0 for c in cs):
        ax.set_xscale("log")  # as in the accuracy-vs-tokens plot
    ax.set_xlabel(("cost per query (USD)" if axis == "cost_usd" else "completion tokens per query (no prices set)")
                  + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("accuracy (full credit)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Accuracy vs cost")
    drawn = {"title": ax.get_title(), "xscale": ax.get_xscale(),
             "legend": [t for t in ax.get_legend_handles_labels()[1]], "frontier_points": len(fc)}
    save_figure(fig, ax, path)
    return drawn


# ---------------------------------------------------------------------------
# report files
# ---------------------------------------------------------------------------


def _matched_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    mc = results["matched_compute"]
    head = ["strategy"] + [f"<= {lvl:g} tok" for lvl in mc["levels"]]
    rows = [[name] + [fmt(v) for v in vals] for name, vals in mc["strategies"].items()]
    return head, rows


def _task_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    tasks = sorted({t for c in results["configurations"] for t in c["metrics"]["by_task"]})
    head = ["configuration"] + tasks
    rows = [[c["key"]] + [fmt(c["metrics"]["by_task"].get(t, {}).get("accuracy")) for t in tasks]
            for c in results["configurations"]]
    return head, rows


def _md_cell(text: str) -> str:
    """A table cell: configuration keys hold '|', which would split the row in every Markdown renderer."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(_md_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _sampling_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    ks = sorted({int(k) for c in results["configurations"] for k in c["metrics"].get("pass_at_k", {})})
    head = ["configuration"] + [f"pass@{k}" for k in ks] + [f"maj@{k}" for k in ks]
    rows = []
    for c in results["configurations"]:
        m = c["metrics"]
        if not m.get("pass_at_k"):
            continue
        rows.append([c["key"]] + [fmt(m["pass_at_k"].get(str(k))) for k in ks]
                    + [fmt(m["maj_at_k"].get(str(k))) for k in ks])
    return head, rows


def write_markdown(results: dict, path: Path) -> None:
    head = list(TABLE_COLUMNS)
    parts = [
        "# ponder lab report", "",
        f"`{results.get('command') or ''}`  ", f"ponder {results['ponder_version']}, {results['created']}, "
        f"{results['items']['count']} items, wall {fmt(results.get('wall_s'), '.0f')} s"
        + (" — **partial run**" if results.get("partial") else ""), "",
        "![accuracy vs tokens](accuracy_vs_tokens.png)", "", "![pareto](pareto.png)", "",
        "## Configurations", "", _md_table(head, table_rows(results)), "",
        f"^ Pareto frontier, * recommended: {results['recommendation']['reason']}", "",
        "## Accuracy at matched compute", "", "Best accuracy each strategy reaches within a token allowance.", "",
        _md_table(*_matched_rows(results)), "",
    ]
    sh, sr = _sampling_rows(results)
    if sr:
        parts += ["## pass@k and maj@k (independent draws, unbiased estimators)", "", _md_table(sh, sr), ""]
    parts += ["## By task and difficulty", "", _md_table(*_task_rows(results)), ""]
    knees = [f"- {c['model']} / {c['strategy']}: {c['knee']}" for c in results["curves"] if c["knee"]]
    if knees:
        parts += ["## Knees", "", *knees, ""]
    path.write_text("\n".join(parts), encoding="utf-8")


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def write_html(results: dict, path: Path) -> None:
    sh, sr = _sampling_rows(results)
    body = [
        "<h1>ponder lab report</h1>",
        f"<p><code>{html.escape(results.get('command') or '')}</code><br>ponder {results['ponder_version']}, "
        f"{html.escape(results['created'])}, {results['items']['count']} items"
        + (" — <b>partial run</b>" if results.get("partial") else "") + "</p>",
        '<img src="accuracy_vs_tokens.png" alt="accuracy vs tokens"> <img src="pareto.png" alt="pareto">',
        "<h2>Configurations</h2>", _html_table(list(TABLE_COLUMNS), table_rows(results)),
        f"<p>^ Pareto frontier, * recommended: {html.escape(results['recommendation']['reason'])}</p>",
        "<h2>Accuracy at matched compute</h2>", _html_table(*_matched_rows(results)),
    ]
    if sr:
        body += ["<h2>pass@k and maj@k</h2>", _html_table(sh, sr)]
    body += ["<h2>By task and difficulty</h2>", _html_table(*_task_rows(results))]
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:first-child,"
             "th:first-child{text-align:left}img{max-width:48%}")
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>ponder lab report</title>"
                    f"<style>{style}</style></head><body>{''.join(body)}</body></html>", encoding="utf-8")


def write_all(results: dict, out: Path) -> list[Path]:
    paths = [out / "accuracy_vs_tokens.png", out / "pareto.png", out / "report.md", out / "report.html"]
    if results["configurations"]:
        plot_accuracy_vs_tokens(results, paths[0])
        plot_pareto(results, paths[1])
    write_markdown(results, paths[2])
    write_html(results, paths[3])
    return [p for p in paths if p.exists()]
