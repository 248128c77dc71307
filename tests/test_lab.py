"""The lab: subsampling, resume, bad input, results, compare, audit (scripted engines)."""

from __future__ import annotations

import asyncio
import json
import re
import os
import random
import signal
import threading

import pytest

from ponder.backends.scripted import ScriptedBackend
from ponder.errors import ConfigError
from ponder.lab import audit
from ponder.lab.compare import compare, compare_table
from ponder.lab.config import BenchConfig
from ponder.lab.pool import SamplePool
from ponder.lab.results import build_results, recommend, sampling_metrics
from ponder.lab.runner import SAMPLES, read_samples, run_bench
from ponder.lab.tasks import load_jsonl, load_task, JsonlSpec, parse_task_spec, reference_answer
from ponder.strategies import build_params, get_strategy
from ponder.strategies.base import StrategyRequest
from ponder.thinking import prompts
from ponder.types import Usage, Message, Sampling, ThinkingBudget


def counting_backend(answers):
    """The k-th answer phase returns answers[k % len]; counts answer calls."""
    state = {"k": 0}
    lock = threading.Lock()

    def respond(prompt: str) -> str:
        if prompt.endswith(prompts.CLOSE_THINKING) or prompt.endswith(prompts.ANSWER_CUE) or "<think>" not in prompt:
            with lock:
                a = answers[state["k"] % len(answers)]
                state["k"] += 1
            return a
        return "one step. then 2 + 2 = 4.\nso it is 4 </think>"

    b = ScriptedBackend(respond)
    b.answer_calls = state
    return b


# -- generate once, subsample -----------------------------------------------------------

def test_pool_draws_each_index_once_and_smaller_n_use_the_first_draws():
    # answers of different lengths, so each configuration's usage says which draws it used
    backend = counting_backend(["7", "the answer is 9", "7 or 7", "9", "so 9", "9", "it is 5", "9"])
    pool = SamplePool()
    req = StrategyRequest(messages=(Message("user", "q"),), budget=ThinkingBudget(0), sampling=Sampling(seed=3),
                          answer_kind="number", pool=pool)
    sc = get_strategy("self-consistency")
    r8 = asyncio.run(sc.run(req, backend, build_params(sc, {"n": 8})))
    assert backend.answer_calls["k"] == 8 and pool.fresh_draws == 8
    assert [s.answer for s in r8.samples].count("9") == 5 and r8.answer.endswith("9")  # the majority won
    r2 = asyncio.run(sc.run(req, backend, build_params(sc, {"n": 2})))
    r4 = asyncio.run(sc.run(req, backend, build_params(sc, {"n": 4})))
    single = asyncio.run(get_strategy("single").run(req, backend, build_params(get_strategy("single"), {})))
    assert backend.answer_calls["k"] == 8, "smaller N and single must replay the pool, not draw again"
    assert [s.answer for s in r4.samples] == ["7", "9", "7", "9"]
    assert [s.answer for s in r2.samples] == ["7", "9"]
    assert single.answer == "7"
    # usage is that of the samples each configuration used, as if served alone
    for r, k in ((r2, 2), (r4, 4), (r8, 8)):
        used = sum((x.generation.usage for x in r8.samples[:k]), Usage())
        assert r.usage.to_dict() == used.to_dict(), k
    assert r2.usage.answer_tokens < r4.usage.answer_tokens < r8.usage.answer_tokens


def test_pool_returns_fresh_sample_wrappers():
    pool = SamplePool()
    backend = counting_backend(["1"])
    req = StrategyRequest(messages=(Message("user", "q"),), budget=ThinkingBudget(0), sampling=Sampling(seed=0),
                          pool=pool)
    bon = get_strategy("best-of-n")

    class Half:
        name = "half"

        def verify(self, q, a, e):
            from ponder.verifiers.base import Verdict
            return Verdict(score=0.5, passed=False)

    r = asyncio.run(bon.run(StrategyRequest(**{**req.__dict__, "verifier": Half()}), backend,
                            build_params(bon, {"n": 2, "verifier": "task"})))
    assert all(s.score == 0.5 for s in r.samples)
    again = asyncio.run(get_strategy("self-consistency").run(req, backend,
                                                              build_params(get_strategy("self-consistency"), {"n": 2})))
    assert all(s.score is None for s in again.samples)


# -- datasets ---------------------------------------------------------------------------------

def test_task_spec_and_reference_parsing():
    assert parse_task_spec("basic_arithmetic:min_terms=3,max_digits=2") == (
        "basic_arithmetic", {"min_terms": 3, "max_digits": 2})
    assert reference_answer("Natalia sold 48 + 24 = 72 clips.\n#### 1,072") == "1072"
    assert reference_answer("so the answer is $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    with pytest.raises(ConfigError) as e:
        parse_task_spec("basic_arithmetic:min_terms")
    assert e.value.param == "--task"


def test_unknown_task_suggests_close_names():
    with pytest.raises(ConfigError) as e:
        load_task("basic_arithmetc", limit=2, seed=0)
    assert "basic_arithmetic" in e.value.message and e.value.param == "--task"
    with pytest.raises(ConfigError) as e:
        load_task("basic_arithmetic:no_such_knob=1", limit=2, seed=0)
    assert "no_such_knob" in e.value.message


def test_reasoning_gym_items_are_deterministic_and_scored_at_full_credit_only():
    a = load_task("basic_arithmetic:min_terms=2,max_terms=2", limit=3, seed=5)
    b = load_task("basic_arithmetic:min_terms=2,max_terms=2", limit=3, seed=5)
    assert [x.question for x in a] == [x.question for x in b]
    it = a[0]
    assert it.verifier.verify(it.question, it.expected, it.expected).score == 1.0
    assert it.verifier.verify(it.question, "nonsense", "nonsense").passed is False


def write_jsonl(tmp_path, lines):
    p = tmp_path / "data.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_jsonl_bad_lines_are_reported_with_numbers_and_skipped_or_stop(tmp_path):
    p = write_jsonl(tmp_path, ['{"question": "1+1?", "answer": "#### 2"}', "{not json", '{"question": "x"}',
                               '{"question": "2+2?", "answer": "4"}'])
    warnings = []
    items = load_jsonl(JsonlSpec(str(p)), limit=None, warn=warnings.append)
    assert [it.expected for it in items] == ["2", "4"]
    assert any(":2:" in w for w in warnings) and any(":3:" in w and "answer" in w for w in warnings)
    with pytest.raises(ConfigError) as e:
        load_jsonl(JsonlSpec(str(p), on_bad_line="stop"), limit=None)
    assert ":2:" in e.value.message and e.value.param == "--data"


def test_custom_scorer_hook(tmp_path):
    (tmp_path / "myscore.py").write_text("def score(pred, expected, item):\n    return pred.strip() == expected[::-1]\n")
    p = write_jsonl(tmp_path, ['{"question": "reverse ab", "answer": "ab"}'])
    items = load_jsonl(JsonlSpec(str(p), scorer=f"{tmp_path / 'myscore.py'}:score"), limit=None)
    assert items[0].verifier.verify("", "ba", "ba").score == 1.0
    with pytest.raises(ConfigError) as e:
        load_jsonl(JsonlSpec(str(p), scorer=f"{tmp_path / 'myscore.py'}:nope"), limit=None)
    assert e.value.param == "--scorer"


# -- the runner: resume, errors ---------------------------------------------------------------------

def data_config(tmp_path, **kw):
    p = write_jsonl(tmp_path, [json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) for i in range(4)])
    base = dict(data=str(p), models=["scripted"], budgets=[0, 8], strategies=["single", "self-consistency"], n=[2, 3],
                answer_kind="number", limit=10)
    base.update(kw)
    return BenchConfig(**base)


def test_run_writes_one_line_per_configuration_and_item(tmp_path):
    backend = counting_backend(["1", "2", "3", "4", "5"])
    out = tmp_path / "run"
    res = run_bench(data_config(tmp_path), out, backends={"scripted": backend}, progress=False)
    lines = read_samples(out)
    # 4 items x 2 budgets x (single + SC n=2 + SC n=3)
    assert len(lines) == 4 * 2 * 3 == len({(r["config"]["key"], r["item"]) for r in lines})
    # per (item, budget) only the largest N is drawn: 3 answer calls, not 1 + 2 + 3
    assert backend.answer_calls["k"] == 4 * 2 * 3
    results = build_results(res.lines, run=json.loads((out / "run.json").read_text()), items=4, wall_s=1.0,
                            partial=False)
    assert {c["key"].split("|", 1)[1] for c in results["configurations"]} == {
        "think=0|single|n=1", "think=8|single|n=1", "think=0|self-consistency|n=2", "think=0|self-consistency|n=3",
        "think=8|self-consistency|n=2", "think=8|self-consistency|n=3"}
    first = lines[0]
    for field in ("item", "prompt_sha256", "expected_sha256", "config", "thinking", "answer", "extracted", "score",
                  "usage", "latency_s"):
        assert field in first


def test_resume_after_interrupt_skips_finished_configurations(tmp_path):
    out = tmp_path / "run"
    calls = {"n": 0}

    def respond(prompt):
        calls["n"] += 1
        if calls["n"] == 15:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as a user would press it
        return "5"

    res = run_bench(data_config(tmp_path), out, backends={"scripted": ScriptedBackend(respond)}, progress=False)
    assert res.interrupted
    done = read_samples(out)
    assert 0 < len(done) < 24
    # a torn last line (a crash mid-write) is cut off on resume
    with (out / SAMPLES).open("a") as fh:
        fh.write('{"schema": 1, "item": "tor')
    backend = counting_backend(["5"])
    res2 = run_bench(BenchConfig(), out, resume=True, backends={"scripted": backend}, progress=False)
    assert not res2.interrupted
    lines = read_samples(out)
    assert len(lines) == 24 == len({(r["config"]["key"], r["item"]) for r in lines})
    assert res2.new_lines == 24 - len(done)
    assert (out / SAMPLES).read_text().endswith("\n")


def test_out_dir_with_a_run_needs_resume(tmp_path):
    out = tmp_path / "run"
    run_bench(data_config(tmp_path), out, backends={"scripted": counting_backend(["1"])}, progress=False)
    with pytest.raises(ConfigError) as e:
        run_bench(data_config(tmp_path), out, backends={"scripted": counting_backend(["1"])}, progress=False)
    assert "--resume" in e.value.message


def test_a_raising_scorer_is_an_error_line_not_a_crash(tmp_path):
    (tmp_path / "bad.py").write_text("def score(pred, expected, item):\n    raise ValueError('boom')\n")
    cfg = data_config(tmp_path, scorer=f"{tmp_path / 'bad.py'}:score", budgets=[0], strategies=["single"])
    out = tmp_path / "run"
    res = run_bench(cfg, out, backends={"scripted": counting_backend(["1"])}, progress=False)
    assert len(res.lines) == 4 and all("boom" in r["error"] for r in res.lines)
    results = build_results(res.lines, run={}, items=4, wall_s=None, partial=False)
    assert results["configurations"][0]["metrics"]["errors"] == 4
    assert results["configurations"][0]["metrics"]["accuracy"] == 0.0


def test_bad_grid_fails_before_any_work(tmp_path):
    with pytest.raises(ConfigError) as e:
        run_bench(data_config(tmp_path, budgets=[10 ** 9]), tmp_path / "r",
                  backends={"scripted": counting_backend(["1"])}, progress=False)
    assert e.value.param == "--budgets"
    with pytest.raises(ConfigError) as e:
        data_config(tmp_path, strategies=["nope"]).validate()
    assert e.value.param == "--strategies"
    with pytest.raises(ConfigError) as e:
        data_config(tmp_path, efforts=["low"]).validate()
    assert e.value.param == "--budgets"


# -- results -----------------------------------------------------------------------------------------

def line(key, item, correct, tokens=10, latency=1.0, draws=None, cost=0.0):
    model, budget, strategy, n = key.split("|")
    return {"item": item, "task": "t", "difficulty": "d", "config": {"key": key, "model": model, "budget": budget,
            "strategy": strategy, "n": int(n[2:])}, "correct": correct, "score": float(correct),
            "usage": {"prompt_tokens": 5, "cached_prompt_tokens": 0, "thinking_tokens": tokens, "answer_tokens": 0},
            "latency_s": latency, "cost_usd": cost, "n_samples": len(draws or [0]),
            "independent_draws": draws is not None, "draws": draws or []}


def test_pass_and_maj_at_k_from_logged_draws():
    # item 1: draws correct, wrong(a), wrong(a), correct -> pass@1 = 0.5; pass@2 = 1 - C(2,2)/C(4,2) = 5/6
    d1 = [{"score": 1.0, "extracted": "4"}, {"score": 0.0, "extracted": "a"}, {"score": 0.0, "extracted": "a"},
          {"score": 1.0, "extracted": "4"}]
    # item 2: all wrong, all different
    d2 = [{"score": 0.0, "extracted": str(i)} for i in range(4)]
    m = sampling_metrics([line("m|t|self-consistency|n=4", "1", True, draws=d1),
                          line("m|t|self-consistency|n=4", "2", False, draws=d2)])
    assert m["pass_at_k"]["1"] == pytest.approx((0.5 + 0) / 2)
    assert m["pass_at_k"]["2"] == pytest.approx((5 / 6 + 0) / 2)
    assert m["pass_at_k"]["4"] == pytest.approx(0.5)
    # maj@4 on item 1: a 2-2 tie between correct and "a" -> credit 1/2
    assert m["maj_at_k"]["4"] == pytest.approx(0.25)


def test_recommendation_respects_slo_and_quality_floor_and_explains_infeasible():
    lines = []
    for i in range(10):
        lines.append(line("m|think=0|single|n=1", str(i), i < 4, tokens=10, latency=0.5))
        lines.append(line("m|think=64|single|n=1", str(i), i < 7, tokens=80, latency=2.0))
        lines.append(line("m|think=256|single|n=1", str(i), i < 8, tokens=300, latency=9.0))
    r = build_results(lines, run={}, items=10, wall_s=None, partial=False)
    cs = r["configurations"]
    assert recommend(cs, "completion_tokens", 5.0, 0.6)["key"] == "m|think=64|single|n=1"
    assert recommend(cs, "completion_tokens", None, 0.75)["key"] == "m|think=256|single|n=1"
    assert recommend(cs, "completion_tokens", None, 0.3)["key"] == "m|think=0|single|n=1"
    bad = recommend(cs, "completion_tokens", 1.0, 0.9)
    assert bad["key"] is None and "no configuration meets" in bad["reason"] and "think=0" in bad["reason"]
    assert r["pareto"]["frontier"] == ["m|think=0|single|n=1", "m|think=64|single|n=1", "m|think=256|single|n=1"]
    assert r["curves"][0]["knee"] == "m|think=64|single|n=1"
    acc = next(c for c in cs if c["key"] == "m|think=64|single|n=1")["metrics"]
    assert acc["accuracy"] == 0.7 and acc["ci95"][0] < 0.7 < acc["ci95"][1]


def test_compare_matches_configurations_and_reports_deltas():
    a = build_results([line("m|think=0|single|n=1", str(i), i < 3) for i in range(10)], run={}, items=10,
                      wall_s=None, partial=False)
    b = build_results([line("m|think=0|single|n=1", str(i), i < 8, tokens=20) for i in range(10)], run={}, items=10,
                      wall_s=None, partial=False)
    d = compare(a, b)
    (row,) = d["rows"]
    assert row["delta_accuracy"] == pytest.approx(0.5) and row["tokens_ratio"] == pytest.approx(2.0)
    assert row["p_value"] < 0.05
    assert d["warnings"] == []


def test_compare_warns_when_the_runs_cover_different_items():
    a = build_results([line("m|think=0|single|n=1", str(i), True) for i in range(10)], run={}, items=10,
                      wall_s=None, partial=False)
    b = build_results([line("m|think=0|single|n=1", str(i + 5), True) for i in range(10)], run={}, items=10,
                      wall_s=None, partial=False)
    d = compare(a, b)
    assert d["rows"] and d["warnings"] and "different items" in d["warnings"][0]
    assert "WARNING: the runs cover different items" in compare_table(d, "a", "b")


# -- audit perturbations -----------------------------------------------------------------------------

def test_perturbations_change_the_trace_as_named():
    rng = random.Random(0)
    trace = "First, 12 + 7 = 19.\nThen double it: 38.\nSo the answer is 38."
    deleted = audit.delete_step(trace, rng)
    assert len(deleted.splitlines()) == 2 and all(ln in trace for ln in deleted.splitlines())
    corrupted = audit.corrupt_number(trace, random.Random(1))
    assert corrupted != trace and len(corrupted.splitlines()) == 3
    contradicted = audit.contradict_step(trace, rng)
    assert audit.CONTRADICTION in contradicted
    assert audit.corrupt_number("no numbers here", rng) is None
    assert audit.delete_step("one step only", rng) is None


def test_audit_reports_how_often_answers_follow_the_trace(tmp_path):
    out = tmp_path / "run"
    cfg = data_config(tmp_path, budgets=[8], strategies=["single"])
    run_bench(cfg, out, backends={"scripted": counting_backend(["4"])}, progress=False)

    # an engine whose answer is the last number of the trace it was handed: perfectly faithful
    def respond(prompt):
        import re
        nums = re.findall(r"\d+", prompt.rsplit("<think>", 1)[-1])
        return nums[-1] if nums else "0"

    result = audit.run_audit(out, limit=3, backends={"scripted": ScriptedBackend(respond)})
    assert result["traces"] == 3
    s = result["perturbations"]
    assert s["corrupt_number"]["traces"] == 3
    assert (out / "audit.json").exists()
    # contradicting adds no number: the faithful-to-last-number engine keeps its answer
    assert s["contradict_step"]["answer_changed"] == 0.0


# -- the report's defects, each pinned ------------------------------------------------------------

def _small_results(tmp_path):
    out = tmp_path / "run"
    res = run_bench(data_config(tmp_path, strategies=["single"], n=[1]), out,
                    backends={"scripted": counting_backend(["1", "2", "3", "4", "5"])}, progress=False)
    return build_results(res.lines, run=json.loads((out / "run.json").read_text()), items=4, wall_s=1.0,
                         partial=False), out


def test_report_tables_escape_the_pipes_in_configuration_keys(tmp_path):
    from ponder.lab.report import write_markdown

    results, out = _small_results(tmp_path)
    md = out / "check.md"
    write_markdown(results, md)
    for block in md.read_text().split("\n\n"):
        rows = [ln for ln in block.splitlines() if ln.startswith("|")]
        if not rows:
            continue
        cells = [len(re.split(r"(?<!\\)\|", ln)) for ln in rows]
        assert len(set(cells)) == 1, f"a row splits into more cells than its header: {rows}"
    assert "scripted\\|think=0\\|single\\|n=1" in md.read_text()


def test_no_knee_means_the_recommendation_does_not_claim_one_and_the_plot_draws_none(tmp_path):
    from ponder.lab.report import plot_accuracy_vs_tokens, plot_pareto

    results, out = _small_results(tmp_path)  # two budgets per curve: no knee can exist
    assert all(c["knee"] is None for c in results["curves"])
    assert not results["recommendation"]["reason"].startswith("knee")
    drawn = plot_accuracy_vs_tokens(results, out / "a.png")
    assert "knee" not in drawn["title"] and drawn["xscale"] == "log"
    p = plot_pareto(results, out / "p.png")
    assert p["xscale"] == "log", "both plots put compute on the same (log) axis"
    assert "Pareto frontier" in p["legend"] and p["frontier_points"] >= 1


def test_matched_compute_shows_a_configuration_in_its_own_column():
    from ponder.lab.results import matched_compute

    def c(key, tokens, acc):
        return {"key": key, "model": "m", "strategy": "single",
                "metrics": {"completion_tokens": {"mean": tokens}, "accuracy": acc}}

    mc = matched_compute([c("a", 144.74, 0.5), c("b", 146.26, 0.6)])
    assert mc["levels"] == [144.7, 146.3]
    assert mc["strategies"]["m / single"] == [0.5, 0.6]


def test_bench_routing_on_a_directory_of_another_model_explains_instead_of_crashing(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "run.json").write_text(json.dumps({"config": {"models": ["smollm2"]}}))
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, str(root / "bench/routing.py"), "--run", str(tmp_path), "--model",
                        "qwen2.5-coder-0.5b"], capture_output=True, text=True, timeout=120, cwd=root)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "holds a run of smollm2" in r.stderr and "--model smollm2" in r.stderr


def test_the_plan_and_a_measured_estimate_are_announced_before_the_bulk_of_the_work(tmp_path):
    said = []
    run_bench(data_config(tmp_path), tmp_path / "run", backends={"scripted": counting_backend(["1"])},
              progress=False, announce=said.append)
    planned = next(m for m in said if m.startswith("planned:"))
    assert "24 configuration results" in planned and "generations" in planned
    est = [m for m in said if m.startswith("estimate:")]
    assert len(est) == 1 and "planned tokens done" in est[0] and "--resume" in est[0]
    assert said.index(planned) < said.index(est[0])


def test_the_time_estimate_weighs_generations_by_their_planned_tokens(tmp_path):
    """Short single samples first, long ones after (per item): the estimate made after the first few
    generations lands within 25% of the time the rest really took (a count of generations would be ~50% short)."""
    def respond(prompt: str) -> str:
        if prompt.endswith(prompts.CLOSE_THINKING) or prompt.endswith(prompts.ANSWER_CUE) or "<think>" not in prompt:
            return "7"
        return " ".join(["step"] * 200)  # thinks to its cap

    lines: list[str] = []
    cfg = data_config(tmp_path, budgets=[0, 48], strategies=["self-consistency"], n=[3], answer_tokens=4,
                      concurrency=1)
    res = run_bench(cfg, tmp_path / "run", backends={"scripted": ScriptedBackend(respond, delay_s=0.01)},
                    progress=False, announce=lines.append)
    est = res.estimate
    assert est is not None and est["took_s"] > 1.0
    assert abs(est["said_s"] - est["took_s"]) / est["took_s"] <= 0.25, (est, lines)
    # what the average of the first generations said, for the same run
    assert abs(est["by_count_s"] - est["took_s"]) > abs(est["said_s"] - est["took_s"]), est
    assert any(line.startswith("the first estimate said") for line in lines)


def test_early_exit_is_a_grid_dimension_with_its_own_draws(tmp_path):
    def respond(prompt: str) -> str:
        if prompt.endswith(prompts.CLOSE_THINKING) or prompt.endswith(prompts.ANSWER_CUE):
            return "5"
        return " ".join(f"w{i}" for i in range(300))

    cfg = data_config(tmp_path, budgets=[64], strategies=["single"], n=[1], early_exit=["16x2"], answer_tokens=4)
    cfg.validate()
    run_bench(cfg, tmp_path / "run", backends={"scripted": ScriptedBackend(respond)}, progress=False)
    lines = read_samples(tmp_path / "run")
    by = {r["config"]["key"].endswith("|exit=16x2"): r for r in lines if r["item"] == lines[0]["item"]}
    assert set(by) == {True, False}
    assert by[False]["usage"]["thinking_tokens"] == 64 and by[False]["stopped"] == "budget"
    assert by[True]["stopped"] == "settled" and by[True]["draws"][0]["probe_tokens"] == 1
    assert by[True]["usage"]["thinking_tokens"] == 32 + 1
    with pytest.raises(ConfigError, match="EVERYxAGREE"):
        data_config(tmp_path, early_exit=["often"]).validate()
