"""Stopping rules tuned on dev items and reported on test items that tuning never saw."""

from __future__ import annotations

import json

import pytest

from ponder.backends.scripted import ScriptedBackend
from ponder.errors import ConfigError
from ponder.lab.config import BenchConfig
from ponder.lab.runner import read_samples
from ponder.lab.tuning.stopping import split_items, tune_stopping, write_policy
from ponder.thinking import prompts

TASK = "basic_arithmetic:min_terms=3,max_terms=3,min_digits=2,max_digits=2"


def base(**kw) -> BenchConfig:
    return BenchConfig(tasks=[TASK], models=["scripted"], budgets=[96], limit=4, answer_kind="number",
                       answer_tokens=4, **kw)


def test_overlapping_seeds_for_dev_and_test_are_refused():
    with pytest.raises(ConfigError, match="both the dev seed"):
        split_items(base(), 3, 3, print)
    with pytest.raises(ConfigError, match="3 item"):  # reasoning-gym seeds item i from seed + i
        split_items(base(), 1, 2, print)


def test_tuning_runs_on_dev_items_only_and_reports_both_splits(tmp_path):
    counter = {"k": 0}

    def respond(prompt: str) -> str:
        if prompt.endswith(prompts.CLOSE_THINKING) or prompt.endswith(prompts.ANSWER_CUE):
            counter["k"] += 1
            return "1"  # every sample agrees: the stopping rules can stop early and save tokens
        return " ".join(f"w{i}" for i in range(100))

    out = tmp_path / "tune"
    report = tune_stopping(base(), out, dev_seed=1, test_seed=1_000_001, n=4, progress=False, announce=lambda m: None,
                           backends={"scripted": ScriptedBackend(respond)})
    dev, test = split_items(base(), 1, 1_000_001, print)

    def seen(run: str) -> set[str]:
        return {r["prompt_sha256"] for r in read_samples(out / run)}

    assert seen("dev-stopping") | seen("dev-probe") <= dev.hashes
    assert seen("test-stopping") | seen("test-probe") <= test.hashes and not (seen("test-stopping") & dev.hashes)
    for name in ("adaptive-consistency", "deepconf-online", "early-exit"):
        r = report["strategies"][name]
        assert r["dev"] is not None and r["test"] is not None, name
        assert r["test"]["ratio_to_baseline"] is not None
    assert json.loads((out / "tuned.json").read_text())["hashes_disjoint"] is True
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrouter: heuristic\nbands:\n  - {max_score: 0.5, lane: fast, effort: none, "
                      "strategy: single}\n  - {max_score: 1.0, lane: reasoning, effort: low, "
                      "strategy: adaptive-consistency}\n")
    write_policy(report, policy)
    from ponder.routing.policy import load_policy

    bands = load_policy(str(policy)).bands
    assert bands[1].params == report["strategies"]["adaptive-consistency"]["params"]
