"""Routing on a mixed workload: the tuned policy against all-reasoning (and all-fast).

The workload is the lab's `mixed` suite (easy one-digit sums, hard multi-term
sums), run once with no thinking (fast) and with a 128-token think
(reasoning).  Items are split in two halves by index: the policy (and the
classifier) are tuned on one half and measured on the other, so the figures
are out of sample; the two halves swap roles (2-fold) and the figures add up
over all items.  A policy is replayed from the logged results: each test
item gets the configuration of the band its router score falls in.

Target: >= 95% of all-reasoning accuracy at <= 50% of its tokens.

    .venv/bin/python bench/routing.py [--run runs/mixed] [--model qwen2.5-coder-0.5b]
    .venv/bin/python bench/routing.py --write-default-classifier   # refresh the shipped classifier
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ponder.errors import PonderError
from ponder.lab.config import BenchConfig, build_bench_config
from ponder.lab.runner import run_bench
from ponder.lab.tuning import calibrate
from ponder.routing import classifier
from ponder.routing.classifier import ClassifierRouter
from ponder.routing.heuristic import HeuristicRouter
from ponder.lab.tuning.tune import (default_fast_strong, labeled_examples, load_runs, router_training_set, score_items,
                                 tune_items)


def replay(policy, router, items):
    """(accuracy, mean completion tokens, share sent to a thinking band) of a policy on logged items."""
    correct = tokens = thinking = 0
    for it, s in zip(items, score_items(items, router)):
        _, band = policy.band_for(s)
        line = it.lines[band.measured["config"]]
        correct += bool(line["correct"])
        tokens += line["usage"]["thinking_tokens"] + line["usage"]["answer_tokens"]
        thinking += bool(band.budget)
    n = len(items)
    return correct / n, tokens / n, thinking / n


def fixed(items, key):
    n = len(items)
    return (sum(bool(it.lines[key]["correct"]) for it in items) / n,
            sum(it.lines[key]["usage"]["thinking_tokens"] + it.lines[key]["usage"]["answer_tokens"] for it in items) / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/mixed")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--write-default-classifier", action="store_true")
    args = ap.parse_args()
    run = Path(args.run)
    try:
        if (run / "run.json").exists():
            made = json.loads((run / "run.json").read_text())
            models = (made.get("config") or {}).get("models") or []
            if models and args.model not in models:
                sys.exit(f"error: {run} holds a run of {', '.join(models)}, not {args.model}; give --model "
                         f"{models[0]} to use it, or --run a new directory")
            if not (run / "results.json").exists():
                print(f"{run} holds an unfinished run: resuming it", file=sys.stderr)
                run_bench(BenchConfig(), run, resume=True)
        else:
            run_bench(build_bench_config({"suite": "mixed", "models": args.model, "limit": args.limit}), run)
        items = load_runs([run])
    except PonderError as exc:
        sys.exit(f"error: {exc.param + ': ' if exc.param else ''}{exc.message}")
    fast, strong = default_fast_strong(items)
    print(f"{len(items)} items from {run}; fast = {fast}; reasoning = {strong}; 2-fold: tuned on one half, "
          f"measured on the other")
    totals: dict[str, list[float]] = {}
    for fold in (0, 1):
        train, test = items[fold::2], items[1 - fold::2]
        texts, labels = router_training_set(train, fast, strong)
        clf = ClassifierRouter(classifier.train(texts, labels))
        for name, router in (("heuristic", HeuristicRouter()), ("classifier", clf)):
            policy = tune_items(train, router=router, router_name=name, bands=2)
            acc, tok, share = replay(policy, router, test)
            ex = labeled_examples(test, score_items(test, router), fast, strong)
            t = totals.setdefault(f"tuned policy ({name})", [0.0, 0.0, 0.0, 0.0])
            for i, v in enumerate((acc, tok, share, calibrate.apgr(ex))):
                t[i] += v * len(test) / len(items)
    rows = [(label, *vals) for label, vals in totals.items()]
    test = items
    acc_s, tok_s = fixed(test, strong)
    acc_f, tok_f = fixed(test, fast)
    print(f"{'':28} {'accuracy':>9} {'tokens/q':>9} {'thinking share':>15} {'APGR*':>6}")
    print(f"{'all-reasoning':28} {acc_s:>9.3f} {tok_s:>9.1f} {1.0:>15.2f} {'':>6}")
    print(f"{'all-fast':28} {acc_f:>9.3f} {tok_f:>9.1f} {0.0:>15.2f} {'':>6}")
    for label, acc, tok, share, ap_ in rows:
        print(f"{label:28} {acc:>9.3f} {tok:>9.1f} {share:>15.2f} {ap_:>6.2f}")
    for label, acc, tok, _, _ in rows:
        ra = acc / acc_s if acc_s else float("nan")
        rt = tok / tok_s if tok_s else float("nan")
        ok = "met" if ra >= 0.95 and rt <= 0.5 else "NOT met"
        print(f"{label}: {ra:.1%} of all-reasoning accuracy at {rt:.1%} of its tokens (target >= 95% at <= 50%: {ok})")

    print("* APGR can exceed 1 when routing beats all-reasoning (the fast lane is right where reasoning is wrong)")
    if args.write_default_classifier:
        texts, labels = router_training_set(items, fast, strong)
        model = classifier.train(texts, labels)
        model["training"]["source"] = f"ponder bench --suite mixed --models {args.model} (bench/routing.py)"
        classifier.save(model, classifier.DEFAULT_MODEL)
        print(f"wrote {classifier.DEFAULT_MODEL} ({model['training']})")


if __name__ == "__main__":
    main()
