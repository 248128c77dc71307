"""``ponder distill``: rejection-sample reasoning traces on verifiable items into an SFT dataset.

For every (model, budget, item) it draws K traces (one batch on the embedded
engine, through the same planner and sampling code the gateway serves),
scores each answer with the item's verifier (correct only at score 1.0), then
keeps a trace only if it passes every filter, in this order:

* ``wrong``         the verifier does not accept the answer
* ``truncated``     the thinking was cut at the budget (the trace never finished its thought)
* ``short``         fewer thinking tokens than ``--min-thinking-tokens``
* ``repetition``    the loop guard stopped a repeating trace
* ``mixed_language`` letters of two scripts (say Latin and CJK) in one trace
* ``self_disagree`` the last result the thinking states is not the final answer
* ``duplicate``     near-identical to a trace already kept for the item (word 3-gram Jaccard)

Writes, under ``--out``: ``samples.jsonl`` (every trace with its verdict; the
log ``--resume`` continues), ``dataset.jsonl`` (OpenAI chat format: the
assistant turn has ``reasoning_content`` and ``content``; one JSON object per
line, readable by ``datasets.load_dataset("json", ...)``), ``report.json``
and ``report.md`` (kept and dropped per filter, thinking tokens per kept
trace, accuracy per item).
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ponder.errors import ConfigError
from ponder.lab.config import BenchConfig
from ponder.lab.tasks import Item

FILTERS = ("wrong", "truncated", "short", "repetition", "mixed_language", "self_disagree", "duplicate")
SAMPLES = "samples.jsonl"


@dataclass
class DistillConfig:
    """One flat config per run (the items and models as ``ponder bench`` takes them)."""

    bench: BenchConfig = field(default_factory=BenchConfig)
    #: traces drawn per (model, budget, item)
    k: int = 4
    min_thinking_tokens: int = 16
    #: two kept traces of one item whose word 3-gram Jaccard similarity reaches this are duplicates
    dedup_threshold: float = 0.8
    #: a trace whose minority script holds more than this share of its letters is mixed
    mixed_share: float = 0.05

    def validate(self) -> None:
        self.bench.validate()
        if not 1 <= self.k <= 64:
            raise ConfigError("--n must be between 1 and 64", param="--n")
        if self.min_thinking_tokens < 0:
            raise ConfigError("--min-thinking-tokens must be >= 0", param="--min-thinking-tokens")
        if not 0 < self.dedup_threshold <= 1:
            raise ConfigError("--dedup must be in (0, 1]", param="--dedup")


# ---------------------------------------------------------------------------
# filters
# ---------------------------------------------------------------------------


def script_of(ch: str) -> str | None:
    """A letter's script, coarsely (LATIN, CJK, CYRILLIC, ...); None for non-letters."""
    if not ch.isalpha():
        return None
    try:
        name = unicodedata.name(ch)
    except ValueError:
        return None
    first = name.split(" ")[0]
    if first in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL"):
        return "CJK"
    return first


def mixed_language(text: str, share: float = 0.05) -> bool:
    """Two scripts in one trace, the smaller one above ``share`` of the letters (and at least 3 letters)."""
    counts: dict[str, int] = {}
    for ch in text:
        s = script_of(ch)
        if s is not None:
            counts[s] = counts.get(s, 0) + 1
    if len(counts) < 2:
        return False
    total = sum(counts.values())
    minority = total - max(counts.values())
    return minority >= 3 and minority / total > share


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < 3:
        return {tuple(words)}
    return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of word 3-grams."""
    x, y = _shingles(a), _shingles(b)
    if not x and not y:
        return 1.0
    return len(x & y) / max(1, len(x | y))


def verdict(trace: dict, cfg: DistillConfig, same: Callable[[str | None, str | None], bool]) -> str | None:
    """The first filter a trace fails (before deduplication), or None when it is kept."""
    if trace["score"] != 1.0:
        return "wrong"
    if trace["truncated"] or trace["stopped"] == "budget":
        return "truncated"
    if trace["thinking_tokens"] < cfg.min_thinking_tokens:
        return "short"
    if trace["stopped"] == "repetition":
        return "repetition"
    if mixed_language(trace["thinking"] + "\n" + trace["answer"], cfg.mixed_share):
        return "mixed_language"
    stated = trace.get("last_stated")
    if stated is not None and trace["answer_source"] == "answer":
        from ponder.thinking.extract import extract_answer

        if not same(extract_answer(stated, kind=trace["answer_kind"]), trace["extracted"]):
            return "self_disagree"
    return None


def deduplicate(traces: list[dict], threshold: float) -> None:
    """Mark near-duplicates among the kept traces of one item (the first of a cluster stays)."""
    kept: list[dict] = []
    for t in traces:
        if t["dropped"] is not None:
            continue
        if any(similarity(t["thinking"], k["thinking"]) >= threshold for k in kept):
            t["dropped"] = "duplicate"
        else:
            kept.append(t)


# ---------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------


async def draw_item(service, backend, cfg: DistillConfig, lane: str, budget: int, item: Item, seed: int) -> list[dict]:
    """K scored traces of one item at one budget."""
    from ponder.request import PonderRequest
    from ponder.types import Message
    from ponder.strategies import sampling
    from ponder.thinking.extract import extract_answer, last_stated_result
    from ponder.types import CancelToken

    b = cfg.bench
    req = PonderRequest((Message("user", b.prompt.format(question=item.question)),), model=lane,
                        temperature=b.temperature, seed=seed, max_answer_tokens=b.answer_tokens,
                        max_thinking_tokens=budget)
    plan = service.prepare_sync(req.validate())
    request = replace(service.strategy_request(plan, CancelToken()), answer_kind=item.answer_kind)
    samples = await sampling.draw(request, backend, cfg.k)
    out = []
    for i, s in enumerate(samples):
        g = s.generation
        extracted = s.answer if s.answer is not None else (extract_answer(g.answer, kind=item.answer_kind)
                                                            if g.answer else None)
        v = await asyncio.to_thread(item.verifier.verify, item.question, g.answer, extracted)
        out.append({
            "item": item.id, "task": item.task, "model": lane, "budget": budget, "seed": seed, "i": i,
            "prompt": req.messages[0].content, "thinking": g.thinking, "answer": g.answer,
            "extracted": extracted, "expected": item.expected, "score": float(v.score),
            "answer_source": g.answer_source, "answer_kind": item.answer_kind,
            "thinking_tokens": g.usage.thinking_tokens, "answer_tokens": g.usage.answer_tokens,
            "truncated": bool(g.thinking_report.truncated), "stopped": g.thinking_report.stopped,
            "last_stated": last_stated_result(g.thinking) if g.thinking else None,
        })
    return out


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: dropped, redone on resume
            continue
    return rows


@dataclass
class DistillOutcome:
    out: Path
    report: dict
    interrupted: bool = False


def run_distill(cfg: DistillConfig, out: Path, *, resume: bool = False, progress: bool = True) -> DistillOutcome:
    from ponder.lab.runner import build_config, load_items
    from ponder.service import Ponder
    from ponder.verifiers.equivalence import Equivalence

    cfg.validate()
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / SAMPLES
    if log_path.exists() and not resume:
        raise ConfigError(f"{out} already holds a distillation; give --resume to continue it or another --out",
                          param="--out")
    items = load_items(cfg.bench, warn=lambda m: None)
    config = build_config(cfg.bench)
    budgets = cfg.bench.budgets or [256]
    done = {(r["model"], r["budget"], r["item"]) for r in _read(log_path)}
    seeds = {it.id: cfg.bench.seed * 100_003 + i for i, it in enumerate(items)}
    units = [(lane.name, b, it) for lane in config.lanes for b in budgets for it in items
             if (lane.name, b, it.id) not in done]
    service = Ponder(config)
    interrupted = False
    from tqdm import tqdm

    bar = tqdm(total=len(units) * cfg.k, unit="trace", desc="distill", disable=not progress)

    async def go() -> None:
        sem = asyncio.Semaphore(max(1, cfg.bench.concurrency))
        with log_path.open("a") as fh:
            async def one(lane: str, budget: int, item: Item) -> None:
                async with sem:
                    backend = await service.backend_async(config.lane(lane))
                    rows = await draw_item(service, backend, cfg, lane, budget, item, seeds[item.id])
                    for r in rows:
                        fh.write(json.dumps(r) + "\n")
                    fh.flush()
                    bar.update(len(rows))

            try:
                await asyncio.gather(*(one(*u) for u in units))
            finally:
                await service.aclose()

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    report = finish(cfg, out, Equivalence("auto").same)
    return DistillOutcome(out, report, interrupted)


def finish(cfg: DistillConfig, out: Path, same) -> dict:
    """Filter, deduplicate and write the dataset and the report from ``samples.jsonl``."""
    rows = _read(out / SAMPLES)
    by_item: dict[tuple, list[dict]] = {}
    for r in rows:
        r["dropped"] = verdict(r, cfg, same)
        by_item.setdefault((r["model"], r["item"]), []).append(r)
    for traces in by_item.values():
        traces.sort(key=lambda t: (t["budget"], t["i"]))
        deduplicate(traces, cfg.dedup_threshold)
    kept = [r for r in rows if r["dropped"] is None]
    with (out / "dataset.jsonl").open("w") as fh:
        for r in kept:
            fh.write(json.dumps({
                "messages": [{"role": "user", "content": r["prompt"]},
                             {"role": "assistant", "content": r["answer"], "reasoning_content": r["thinking"]}],
                "item": r["item"], "task": r["task"], "model": r["model"], "budget": r["budget"],
                "thinking_tokens": r["thinking_tokens"]}) + "\n")
    tokens = [r["thinking_tokens"] for r in kept]
    per_item = {f"{m}|{i}": {"traces": len(ts), "correct": sum(t["score"] == 1.0 for t in ts),
                             "kept": sum(t["dropped"] is None for t in ts)} for (m, i), ts in sorted(by_item.items())}
    report = {
        "traces": len(rows), "kept": len(kept),
        "dropped": {f: sum(r["dropped"] == f for r in rows) for f in FILTERS},
        "thinking_tokens_per_kept": {"mean": statistics.fmean(tokens) if tokens else None,
                                     "median": statistics.median(tokens) if tokens else None},
        "accuracy": (sum(r["score"] == 1.0 for r in rows) / len(rows)) if rows else None,
        "items": per_item,
        "config": {"k": cfg.k, "min_thinking_tokens": cfg.min_thinking_tokens, "dedup_threshold": cfg.dedup_threshold,
                   "mixed_share": cfg.mixed_share, "budgets": cfg.bench.budgets, "models": cfg.bench.models,
                   "tasks": cfg.bench.tasks, "data": cfg.bench.data},
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    lines = ["# Distillation report", "", f"{report['kept']} of {report['traces']} traces kept "
             f"(accuracy of all traces: {report['accuracy'] if report['accuracy'] is None else round(report['accuracy'], 3)}).",
             "", "| filter | dropped |", "|---|---:|"]
    lines += [f"| {f} | {n} |" for f, n in report["dropped"].items()]
    t = report["thinking_tokens_per_kept"]
    lines += ["", f"Thinking tokens per kept trace: mean {t['mean'] if t['mean'] is None else round(t['mean'], 1)}, "
                  f"median {t['median']}.", "", "| item | traces | correct | kept |", "|---|---:|---:|---:|"]
    lines += [f"| {k.replace('|', '&#124;')} | {v['traces']} | {v['correct']} | {v['kept']} |"
              for k, v in per_item.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return report


def describe(report: dict) -> str:
    d = ", ".join(f"{f} {n}" for f, n in report["dropped"].items() if n)
    t = report["thinking_tokens_per_kept"]
    mean = "-" if t["mean"] is None else f"{t['mean']:.0f}"
    acc = "-" if report["accuracy"] is None else f"{report['accuracy']:.2f}"
    return (f"kept {report['kept']} of {report['traces']} traces (accuracy {acc}); dropped: {d or 'none'}; "
            f"thinking tokens per kept trace: mean {mean}")


def _options_to_bench(opts: dict[str, Any]) -> BenchConfig:
    from ponder.lab.config import build_bench_config

    return build_bench_config({**opts, "strategies": "single"})


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------

import click  # noqa: E402  (the command sits with the code it runs)


@click.command("distill")
@click.option("--task", "tasks", multiple=True, metavar="FAMILY[:k=v,...]",
              help="A reasoning-gym family (repeatable), e.g. chain_sum:min_terms=3,max_terms=3.")
@click.option("--data", default=None, type=click.Path(), help="A JSONL file of items (question/answer fields).")
@click.option("--question-field", default=None, help="JSONL field holding the question (default question).")
@click.option("--answer-field", default=None, help="JSONL field holding the reference answer (default answer).")
@click.option("--id-field", default=None, help="JSONL field holding a unique id (default: the line number).")
@click.option("--models", default=None, metavar="A,B", help="Model names or GGUF paths (default smollm2).")
@click.option("--config", "config_path", default=None, type=click.Path(), help="ponder YAML whose lanes to use.")
@click.option("--n", "k", type=int, default=4, show_default=True, help="Traces drawn per item, model and budget.")
@click.option("--budgets", default=None, metavar="128,256", help="Thinking-token caps (default 256).")
@click.option("--limit", type=int, default=None, help="Items per task (or from --data).")
@click.option("--seed", type=int, default=None, help="Seed of item generation and sampling (default 0).")
@click.option("--temperature", type=float, default=None, help="Sampling temperature (default 0.7).")
@click.option("--answer-tokens", type=int, default=None, help="Answer tokens after thinking (default 32).")
@click.option("--answer-kind", type=click.Choice(["auto", "number", "choice", "text"]), default=None,
              help="How final answers are extracted.")
@click.option("--min-thinking-tokens", type=int, default=16, show_default=True,
              help="Drop traces that thought less than this.")
@click.option("--dedup", "dedup_threshold", type=float, default=0.8, show_default=True,
              help="Word 3-gram Jaccard similarity at which two traces of an item are duplicates.")
@click.option("--concurrency", type=int, default=None, help="Items in flight at once (their traces share batches).")
@click.option("--out", "out_dir", default=None, type=click.Path(), help="Output directory (default runs/distill-<time>).")
@click.option("--resume", is_flag=True, help="Continue an interrupted distillation in --out.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def distill_cmd(tasks, k, min_thinking_tokens, dedup_threshold, out_dir, resume, no_progress, **opts) -> None:
    """Rejection-sample verified reasoning traces into an SFT dataset (OpenAI chat JSONL).

    \b
    ponder distill --task chain_sum --models qwen2.5-coder-0.5b --n 8 --budgets 128 --limit 50
    ponder distill --data items.jsonl --n 4 --out runs/my-sft
    ponder distill --out runs/my-sft --resume

    Every trace is scored by the item's verifier; kept traces pass every filter
    (wrong, truncated, short, repetition, mixed_language, self_disagree,
    duplicate).  Writes dataset.jsonl, samples.jsonl, report.json, report.md.
    """
    from ponder.errors import PonderError

    out = Path(out_dir or f"runs/distill-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        if resume:
            saved = out / "distill.json"
            if not saved.exists():
                raise ConfigError(f"nothing to resume in {out} (no distill.json)", param="--resume")
            d = json.loads(saved.read_text())
            cfg = DistillConfig(BenchConfig.from_dict(d["bench"]), **{k2: v for k2, v in d.items() if k2 != "bench"})
        else:
            cfg = DistillConfig(_options_to_bench({**opts, "tasks": list(tasks) or None}), k=k,
                                min_thinking_tokens=min_thinking_tokens, dedup_threshold=dedup_threshold)
            cfg.validate()
            if (out / SAMPLES).exists():
                raise ConfigError(f"{out} already holds a distillation; give --resume to continue it or another "
                                  f"--out", param="--out")
            out.mkdir(parents=True, exist_ok=True)
            (out / "distill.json").write_text(json.dumps({
                "bench": cfg.bench.as_dict(), "k": cfg.k, "min_thinking_tokens": cfg.min_thinking_tokens,
                "dedup_threshold": cfg.dedup_threshold, "mixed_share": cfg.mixed_share}, indent=2))
        outcome = run_distill(cfg, out, resume=True, progress=not no_progress)
    except PonderError as exc:
        raise click.UsageError(f"{exc.param + ': ' if exc.param else ''}{exc.message}") from None
    click.echo(describe(outcome.report))
    click.echo(f"wrote {out / 'dataset.jsonl'}, {out / 'report.md'}")
    if outcome.interrupted:
        click.echo(f"interrupted: continue with  ponder distill --out {out} --resume", err=True)
        raise SystemExit(130)
