"""``ponder bench``: run the lab, compare runs, audit thinking traces."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ponder.errors import ConfigError


class BenchGroup(click.Group):
    """``ponder bench`` and its subcommands; ``routers`` lives with the routing code and is mounted on use."""

    LAZY = {"routers": "ponder.lab.tuning.cli:routers_cmd"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, name: str):
        if name in self.LAZY:
            import importlib

            module, _, attr = self.LAZY[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group("bench", cls=BenchGroup, invoke_without_command=True)
@click.option("--suite", type=str, help="A named suite: smoke (minutes) or standard (a broader mix).")
@click.option("--task", "tasks", multiple=True, metavar="NAME[:k=v,...]",
              help="A reasoning-gym family with difficulty knobs, e.g. basic_arithmetic:min_terms=3; repeatable.")
@click.option("--data", type=str, metavar="FILE.jsonl", help="GSM8K/MATH-style JSONL items.")
@click.option("--question-field", default="question", show_default=True, help="JSONL field holding the question.")
@click.option("--answer-field", default="answer", show_default=True,
              help="JSONL field holding the reference (GSM8K '####' and MATH \\boxed{} are understood).")
@click.option("--id-field", default=None, help="JSONL field holding a unique id (default: file:line).")
@click.option("--difficulty-field", default=None, help="JSONL field to break results down by.")
@click.option("--scorer", default=None, metavar="MODULE:FN",
              help="Custom scorer fn(prediction, expected, item) -> float; full credit is 1.0.")
@click.option("--on-bad-line", type=click.Choice(["skip", "stop"]), default="skip", show_default=True,
              help="An unreadable JSONL line: warn with its number and skip, or stop.")
@click.option("--models", default=None, metavar="A,B",
              help="Model names or GGUF paths (smollm2, qwen2.5-coder-0.5b), or lane names of --config.")
@click.option("--config", "config_path", default=None, type=click.Path(),
              help="ponder YAML: lanes (engines, prices) to evaluate.")
@click.option("--efforts", default=None, metavar="none,low,...", help="Effort tiers to sweep.")
@click.option("--budgets", default=None, metavar="0,64,256", help="Thinking-token caps to sweep.")
@click.option("--strategies", default=None, metavar="single,self-consistency,...", help="Strategies to sweep.")
@click.option("--early-exit", "early_exit", default=None, metavar="32x2,64x2",
              help="Early exit by probing, swept besides none: probe every N thinking tokens, stop after K agree.")
@click.option("--tools", default=None, metavar="python,calculator,python+calculator",
              help="Built-in tools to sweep besides no tools (each entry is one configuration; + joins tools).")
@click.option("--n", "ns", default=None, metavar="1,2,4,8",
              help="Sample counts for sampling strategies (drawn once at the largest N, subsampled for the rest).")
@click.option("--param", "params", multiple=True, metavar="STRATEGY.KEY=VALUE",
              help="A strategy parameter, e.g. best-of-n.verifier=task; repeatable.")
@click.option("--limit", type=int, default=None, help="Items per task (or from --data).")
@click.option("--seed", type=int, default=None, help="Seed of item generation and sampling (default 0).")
@click.option("--concurrency", type=int, default=None, help="Items in flight at once (engines serialize anyway).")
@click.option("--temperature", type=float, default=None, help="Sampling temperature (default 0.7).")
@click.option("--answer-tokens", type=int, default=None, help="Answer tokens after thinking (default 32).")
@click.option("--answer-kind", type=click.Choice(["auto", "number", "choice", "text"]), default=None,
              help="How final answers are extracted.")
@click.option("--latency-slo", type=float, default=None, metavar="SECONDS",
              help="Recommend only configurations whose p95 time to answer is within this.")
@click.option("--min-accuracy", type=float, default=None, help="Recommend only configurations at or above this.")
@click.option("--out", "out_dir", default=None, type=click.Path(), help="Run directory (default runs/<timestamp>).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out from its samples.jsonl.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--list-tasks", is_flag=True, help="List the reasoning-gym families and suites, then exit.")
@click.pass_context
def bench_cmd(ctx: click.Context, **opts) -> None:
    """Measure accuracy against compute for models x budgets x strategies x N.

    \b
    ponder bench --suite smoke --out runs/smoke
    ponder bench --task basic_arithmetic:min_terms=3 --budgets 0,64,256 \\
                 --strategies single,self-consistency --n 2,4,8 --limit 30
    ponder bench --resume --out runs/smoke
    ponder bench compare runs/a runs/b
    ponder bench audit runs/smoke

    Writes results.json (schema: docs/lab-results.md), samples.jsonl,
    accuracy_vs_tokens.png, pareto.png, report.md and report.html.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ponder.lab.tasks import SUITES, task_names

    if opts["list_tasks"]:
        for name, s in SUITES.items():
            click.echo(f"suite {name}: {s.description}")
        click.echo("reasoning-gym families: " + ", ".join(task_names()))
        return
    run(opts)


def run(opts: dict) -> None:
    import time

    from ponder.lab.report import text_table, write_all
    from ponder.lab.results import build_results
    from ponder.lab.runner import RUN, run_bench

    out = Path(opts["out_dir"] or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    if opts["resume"] and not opts["out_dir"]:
        raise ConfigError("--resume needs the --out directory of the run to continue", param="--resume")
    from ponder.lab.config import build_bench_config

    cfg = build_bench_config(opts) if not opts["resume"] else None
    if cfg is not None:
        cfg.validate()
    outcome = run_bench(cfg, out, resume=opts["resume"], progress=not opts["no_progress"])
    run_meta = json.loads((out / RUN).read_text())
    stored = run_meta["config"]
    results = build_results(outcome.lines, run=run_meta, items=len(outcome.items), wall_s=outcome.wall_s,
                            partial=outcome.interrupted,
                            latency_slo_s=opts["latency_slo"] if opts["latency_slo"] is not None
                            else stored.get("latency_slo_s"),
                            min_accuracy=opts["min_accuracy"] if opts["min_accuracy"] is not None
                            else stored.get("min_accuracy"))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    paths = write_all(results, out)
    click.echo(text_table(results))
    errors = sum(c["metrics"]["errors"] for c in results["configurations"])
    if errors:
        click.echo(f"{errors} sample(s) had errors (engine or scorer); see 'error' in samples.jsonl", err=True)
    click.echo(f"\nwrote {out / 'results.json'}, {out / 'samples.jsonl'}, " + ", ".join(str(p) for p in paths))
    if outcome.interrupted:
        sys.exit(130)




@bench_cmd.command("compare")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the difference as JSON.")
def compare_cmd(a: str, b: str, as_json: bool) -> None:
    """Print the difference between two runs (directories or results.json files)."""
    from ponder.lab.compare import compare, compare_table, load_results

    diff = compare(load_results(a), load_results(b))
    click.echo(json.dumps(diff, indent=2) if as_json else compare_table(diff, a, b))


@bench_cmd.command("audit")
@click.argument("run_dir", metavar="RUN", type=click.Path())
@click.option("--limit", type=int, default=20, show_default=True, help="Traces to audit.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the perturbations.")
def audit_cmd(run_dir: str, limit: int, seed: int) -> None:
    """Perturb saved thinking traces and measure how often the answer changes.

    Each trace gets three perturbations (delete a step, corrupt a number,
    contradict a step); the model answers again from the perturbed trace.
    Writes RUN/audit.json.
    """
    from tqdm import tqdm

    from ponder.lab.audit import audit_table, run_audit

    if limit < 1:
        raise ConfigError("--limit must be >= 1", param="--limit")
    bar = tqdm(total=None, desc="audit", unit="trace", file=sys.stderr)

    def progress(i: int, n: int) -> None:
        bar.total = n
        bar.n = i
        bar.refresh()

    try:
        result = run_audit(Path(run_dir), limit=limit, seed=seed, progress=progress)
    finally:
        bar.close()
    click.echo(audit_table(result))
    click.echo(f"\nwrote {Path(run_dir) / 'audit.json'}")


@bench_cmd.command("tune")
@click.option("--task", "tasks", multiple=True, required=True, metavar="NAME[:knob=v,...]",
              help="reasoning-gym families to tune on (repeatable).")
@click.option("--model", "model", default="smollm2", show_default=True, help="Model name or GGUF path.")
@click.option("--budget", type=int, default=192, show_default=True, help="Thinking budget of every configuration.")
@click.option("--n", "n", type=int, default=8, show_default=True, help="Samples of the full-compute baseline.")
@click.option("--limit", type=int, default=12, show_default=True, help="Items per family and split.")
@click.option("--dev-seed", type=int, default=1, show_default=True)
@click.option("--test-seed", type=int, default=1_000_001, show_default=True,
              help="reasoning-gym seeds item i from seed + i: keep the splits far apart (overlaps are refused).")
@click.option("--temperature", type=float, default=0.7, show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Directory for the four lab runs.")
@click.option("--write-policy", "policy_path", default=None, type=click.Path(exists=True),
              help="Write the chosen parameters into this routing policy's bands.")
@click.option("--no-progress", is_flag=True)
def tune_cmd(tasks, model, budget, n, limit, dev_seed, test_seed, temperature, out_dir, policy_path,
             no_progress) -> None:
    """Tune stopping rules on dev items, report them on held-out test items.

    Adaptive-consistency's threshold and round size, deepconf-online's
    warm-up and keep share, and early exit's probe interval and agreement are
    chosen per model on dev (the fewest tokens at accuracy within the 95%
    interval of full compute), then measured on test items of another seed —
    their hashes checked disjoint.  Both splits are printed and written to
    OUT/tuned.json.
    """
    from ponder.lab.config import BenchConfig
    from ponder.lab.tuning.stopping import tune_stopping, write_policy

    base = BenchConfig(tasks=list(tasks), models=[model], budgets=[budget], limit=limit, temperature=temperature,
                       answer_kind="number", concurrency=4)
    base.validate()
    report = tune_stopping(base, Path(out_dir), dev_seed=dev_seed, test_seed=test_seed, n=n,
                           progress=not no_progress, announce=lambda m: click.echo(m, err=True))
    for name, r in report["strategies"].items():
        for split in ("dev", "test"):
            s = r.get(split)
            if s is None:
                click.echo(f"{name:22s} {split:4s} no variant within the baseline's interval: full compute kept")
                continue
            click.echo(f"{name:22s} {split:4s} {str(r['params']):44s} acc {s['accuracy']:.2f} "
                       f"(baseline {s['baseline_accuracy']:.2f} [{s['baseline_ci95'][0]:.2f}, "
                       f"{s['baseline_ci95'][1]:.2f}])  tokens {s['tokens']:.0f} = {s['ratio_to_baseline']}x")
    if policy_path:
        write_policy(report, Path(policy_path))
        click.echo(f"wrote the chosen parameters into {policy_path}", err=True)
