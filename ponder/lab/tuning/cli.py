"""``ponder tune`` and ``ponder bench routers``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ponder.errors import ConfigError


@click.command("tune")
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path())
@click.option("--latency-slo", type=float, default=None, metavar="SECONDS",
              help="Only configurations whose p95 time to answer is within this.")
@click.option("--min-accuracy", type=float, default=None,
              help="Quality floor per band (default: 95% of the band's best accuracy).")
@click.option("--router", type=click.Choice(["heuristic", "classifier"]), default="heuristic", show_default=True,
              help="The router whose score bands the policy cuts.")
@click.option("--bands", type=int, default=3, show_default=True, help="Score bands (equal item counts).")
@click.option("--train-router", "train_path", default=None, type=click.Path(), metavar="FILE.json",
              help="Train the classifier router on these runs (label: reasoning helped) and write it here; "
                   "the policy then uses it.")
@click.option("--fast", "fast_key", default=None, help="Fast configuration key for labels (default: the cheapest).")
@click.option("--strong", "strong_key", default=None,
              help="Reasoning configuration key for labels (default: the most accurate).")
@click.option("--config", "config_path", default=None, type=click.Path(),
              help="Serving config whose lanes the policy names (default: the built-in fast/reasoning lanes).")
@click.option("--out", "out_path", default="policy.yaml", show_default=True, type=click.Path())
def tune_cmd(run_dirs, latency_slo, min_accuracy, router, bands, train_path, fast_key, strong_key, config_path,
             out_path) -> None:
    """Write a routing policy from lab runs.

    Items are cut into score bands by the router; each band gets the cheapest
    (lane, budget, strategy, N) that meets the quality floor and the latency
    SLO, with the measured figures written next to it.  Serve it with
    `ponder serve --policy policy.yaml`.
    """
    from ponder.config import load_config
    from ponder.routing import classifier
    from ponder.lab.tuning.tune import default_fast_strong, load_runs, router_training_set, tune_items

    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise ConfigError("--min-accuracy is a share in [0, 1]", param="--min-accuracy")
    config = load_config(config_path)
    options = {}
    items = load_runs(run_dirs)
    if train_path:
        f, s = default_fast_strong(items)
        texts, labels = router_training_set(items, fast_key or f, strong_key or s)
        model = classifier.train(texts, labels)
        classifier.save(model, train_path)
        t = model["training"]
        click.echo(f"trained the classifier on {t['examples']} prompts ({t['positives']} where reasoning helped; "
                   f"fast {fast_key or f}, strong {strong_key or s}); train accuracy {t['train_accuracy']:.2f}; "
                   f"wrote {train_path}", err=True)
        router, options = "classifier", {"model": str(Path(train_path).resolve())}
    policy = tune_items(items, router_name=router, bands=bands, latency_slo_s=latency_slo,
                        min_accuracy=min_accuracy, config=config, router_options=options)
    policy.source["runs"] = [str(d) for d in run_dirs]
    Path(out_path).write_text("# written by `ponder tune`; serve with: ponder serve --policy "
                              f"{out_path}\n" + policy.to_yaml())
    asked, merged = policy.source.get("bands_requested"), policy.source.get("bands_merged", 0)
    if asked is not None and len(policy.bands) != asked:
        why = f"{merged} neighbouring band(s) chose the same configuration and were merged" if merged else \
            f"only {policy.source.get('items')} item(s) to cut"
        click.echo(f"asked for {asked} bands, wrote {len(policy.bands)}: {why}", err=True)
    for i, b in enumerate(policy.bands):
        m = b.measured or {}
        click.echo(f"band {i}: score <= {b.max_score:.3f} -> {b.label()} {b.params or ''}  "
                   f"[{m.get('config')}: accuracy {m.get('accuracy')}, {m.get('tokens')} tokens, "
                   f"p95 {m.get('p95_s', 0):.2f} s; {m.get('why')}]")
    click.echo(f"wrote {out_path}")


@click.command("routers")
@click.argument("run_dirs", metavar="[RUN_DIR...]", nargs=-1, type=click.Path())
@click.option("--fast", "fast_key", default=None, help="Fast configuration key (default: the cheapest).")
@click.option("--strong", "strong_key", default=None, help="Reasoning configuration key (default: the most accurate).")
@click.option("--routers", "names", default="heuristic,classifier", show_default=True,
              help="Routers to evaluate (heuristic, classifier, llm).")
@click.option("--models", default=None, help="Model for the mixed workload when no RUN_DIR is given.")
@click.option("--limit", type=int, default=None, help="Items per task of the mixed workload.")
@click.option("--out", "out_dir", default="runs/routers", show_default=True, type=click.Path())
def routers_cmd(run_dirs, fast_key, strong_key, names, models, limit, out_dir) -> None:
    """Cost-quality curves of routers on a mixed workload: APGR and CPT(50/80/95%).

    Without RUN_DIR, runs the `mixed` suite (easy and hard arithmetic; no
    thinking vs a thinking budget) into OUT/run first.
    """
    from ponder.lab.tuning import evaluate
    from ponder.routing import build_router
    from ponder.routing.policy import Band, RoutingPolicy
    from ponder.lab.tuning.tune import default_fast_strong, load_runs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not run_dirs:
        from ponder.lab.config import build_bench_config
        from ponder.lab.runner import run_bench

        cfg = build_bench_config({"suite": "mixed", "models": models, "limit": limit})
        run_dir = out / "run"
        run_bench(cfg, run_dir, resume=(run_dir / "run.json").exists())
        run_dirs = (str(run_dir),)
    items = load_runs(run_dirs)
    f, s = default_fast_strong(items)
    fast_key, strong_key = fast_key or f, strong_key or s
    routers = {}
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        if name not in ("heuristic", "classifier", "llm"):
            raise ConfigError(f"unknown router {name!r}; choose heuristic, classifier, llm", param="--routers")
        if name == "llm":
            from ponder.backends.llama_cpp import LlamaCppBackend

            from ponder.backends.models import model_label

            model = fast_key.split("|")[0]
            engine = LlamaCppBackend(None if model == model_label(None) else model)
            routers[name] = build_router(RoutingPolicy(router="llm", bands=[Band(max_score=1.0, lane="x")]),
                                         lambda: engine)
        else:
            routers[name] = build_router(RoutingPolicy(router=name, bands=[Band(max_score=1.0, lane="x")]),
                                         lambda: None)
    ev = evaluate.evaluate(items, fast_key, strong_key, routers)
    (out / "routers.json").write_text(json.dumps(ev, indent=2))
    evaluate.plot(ev, out / "routers.png")
    click.echo(evaluate.table(ev))
    click.echo(f"wrote {out / 'routers.json'}, {out / 'routers.png'}")
