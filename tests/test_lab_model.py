"""The lab end to end on the real embedded model, through the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.model


def ponder(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "ponder.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab") / "run"
    p = ponder("bench", "--task", "basic_arithmetic:min_terms=2,max_terms=2,min_digits=1,max_digits=1",
               "--limit", "2", "--budgets", "0,16", "--strategies", "single,self-consistency", "--n", "2",
               "--answer-tokens", "10", "--answer-kind", "number", "--out", str(out), "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "configuration" in p.stdout and "think=16|self-consistency|n=2" in p.stdout
    return out


def test_bench_writes_every_output(run_dir):
    for name in ("results.json", "samples.jsonl", "run.json", "accuracy_vs_tokens.png", "pareto.png", "report.md",
                 "report.html"):
        assert (run_dir / name).stat().st_size > 0, name
    assert (run_dir / "accuracy_vs_tokens.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["schema"] == "ponder.lab.results/1"
    (model,) = results["models"].values()
    assert len(model["sha256"]) == 64
    assert len(results["configurations"]) == 4
    lines = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * 2 * 2
    for r in lines:
        budget = int(r["config"]["budget"].split("=")[1])
        assert r["usage"]["thinking_tokens"] <= budget * r["n_samples"]
        assert r["usage"]["answer_tokens"] <= 10 * r["n_samples"]
        assert r["correct"] == (r["score"] == 1.0)
    # self-consistency n=2 replays single's draw as its first sample
    by = {(r["item"], r["config"]["key"].split("|", 1)[1]): r for r in lines}
    for item in {r["item"] for r in lines}:
        single = by[(item, "think=16|single|n=1")]
        sc = by[(item, "think=16|self-consistency|n=2")]
        assert sc["draws"][0]["extracted"] == single["extracted"]


def test_resume_of_a_finished_run_adds_nothing(run_dir):
    before = (run_dir / "samples.jsonl").read_text()
    p = ponder("bench", "--resume", "--out", str(run_dir), "--no-progress")
    assert p.returncode == 0, p.stderr
    assert (run_dir / "samples.jsonl").read_text() == before


def test_compare_reports_what_changed_and_audit_runs(run_dir, tmp_path):
    # B is A with one configuration's accuracy flipped and its tokens doubled: compare must find exactly that
    results = json.loads((run_dir / "results.json").read_text())
    changed = results["configurations"][0]
    m = changed["metrics"]
    before_acc, before_tokens = m["accuracy"], m["completion_tokens"]["mean"]
    target = 0.0 if before_acc == 1.0 else 1.0
    m["correct"], m["accuracy"] = int(m["items"] * target), target
    m["completion_tokens"]["mean"] = before_tokens * 2
    (tmp_path / "results.json").write_text(json.dumps(results))
    p = ponder("bench", "compare", str(run_dir), str(tmp_path), "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["config"]: r for r in json.loads(p.stdout)["rows"]}
    assert len(rows) == 4
    key = f"{changed['budget']}|{changed['strategy']}|n={changed['n']}"
    assert rows[key]["delta_accuracy"] == pytest.approx(target - before_acc) != 0
    assert rows[key]["tokens_ratio"] == pytest.approx(2.0)
    assert all(r["delta_accuracy"] == 0 and r["tokens_ratio"] == pytest.approx(1.0) for k, r in rows.items() if k != key)
    p = ponder("bench", "audit", str(run_dir), "--limit", "2")
    assert p.returncode == 0, p.stderr
    audit = json.loads((run_dir / "audit.json").read_text())
    assert audit["traces"] == 2 and "delete_step" in p.stdout


@pytest.mark.parametrize("args, flag", [
    (["--task", "basic_arithmetc"], "--task"),
    (["--task", "basic_arithmetic", "--budgets", "0,x"], "--budgets"),
    (["--task", "basic_arithmetic", "--strategies", "magic"], "--strategies"),
    (["--task", "basic_arithmetic", "--models", "no-such-model"], "--models"),
    (["--data", "/nonexistent.jsonl"], "--data"),
    (["--suite", "huge"], "--suite"),
])
def test_bad_input_names_the_flag(tmp_path, args, flag):
    p = ponder("bench", *args, "--out", str(tmp_path / "r"), "--no-progress", timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.startswith(f"error: {flag}") and "Traceback" not in p.stderr


def test_ctrl_c_stops_a_real_bench_within_5_s_and_resume_finishes_it(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ponder.cli", "bench", "--task", "chain_sum:min_terms=2,max_terms=2,max_digits=1",
           "--limit", "3", "--budgets", "32", "--strategies", "single,self-consistency", "--n", "2",
           "--concurrency", "1", "--out", str(out), "--no-progress"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "samples.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None and not (log.exists() and log.read_text().count("\n") >= 1):
        time.sleep(0.2)
    assert p.poll() is None, "the run ended before it could be interrupted"
    t0 = time.time()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    stopped_in = time.time() - t0
    assert stopped_in <= 5.0, f"Ctrl-C took {stopped_in:.1f} s"
    assert p.returncode == 130 and "--resume" in err
    done = log.read_text().count("\n")
    assert 1 <= done < 6
    again = subprocess.run([sys.executable, "-m", "ponder.cli", "bench", "--resume", "--out", str(out),
                            "--no-progress"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 6 == len({(r["config"]["key"], r["item"]) for r in lines})
