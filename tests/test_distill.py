"""ponder distill: each filter on real model outputs (the extraction fixtures, collected by running both
shipped models), and an end-to-end run on the tiny model: dataset format, report, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ponder.distill import DistillConfig, deduplicate, mixed_language, similarity, verdict
from ponder.thinking.extract import extract_answer, last_stated_result
from ponder.verifiers.equivalence import Equivalence

CASES = {json.loads(line)["id"]: json.loads(line)
         for line in (Path(__file__).parent / "fixtures/extraction/cases.jsonl").read_text().splitlines()}
SAME = Equivalence("auto").same
CFG = DistillConfig(min_thinking_tokens=8)


def trace(case_id: str, *, reference: str | None = None, tokens: int = 40, stopped: str = "end",
          truncated: bool = False) -> dict:
    """A real output as distill sees it, scored against its reference (or another one)."""
    c = CASES[case_id]
    thinking, answer = c["thinking_raw"].replace("</think>", "").strip(), c["answer_raw"]
    extracted = c["expected_extracted"]
    ref = c["reference"] if reference is None else reference
    return {"thinking": thinking, "answer": answer, "extracted": extracted,
            "score": 1.0 if extracted is not None and SAME(extracted, ref) else 0.0,
            "answer_source": c["expected_source"], "answer_kind": c["kind"], "thinking_tokens": tokens,
            "truncated": truncated, "stopped": stopped, "last_stated": last_stated_result(thinking)}


def test_wrong_answers_are_dropped_first():
    t = trace("qwen-01")  # thinks 18 - (-3) = 21 for 9 * 2 + -3 (15)
    assert t["score"] == 0.0 and verdict(t, CFG, SAME) == "wrong"


def test_truncated_short_and_looping_traces_are_dropped():
    # a right answer whose thinking ends on that same result: nothing to drop
    ok = next(cid for cid, c in CASES.items() if c["expected_extracted"] is not None
              and c["thinking_raw"].strip() and SAME(c["expected_extracted"], c["reference"])
              and c["expected_source"] == "answer"
              and SAME(extract_answer(last_stated_result(c["thinking_raw"].replace("</think>", "")) or "",
                                      kind=c["kind"]) or "", c["expected_extracted"]))
    assert verdict(trace(ok), CFG, SAME) is None
    assert verdict(trace(ok, stopped="budget", truncated=True), CFG, SAME) == "truncated"
    assert verdict(trace(ok, tokens=3), CFG, SAME) == "short"
    assert verdict(trace(ok, stopped="repetition"), CFG, SAME) == "repetition"


def test_a_trace_whose_thinking_states_another_result_disagrees_with_itself():
    # smol-07: the thinking ends "0 / 1 + -1 = -1", the answer says 1; scored as if 1 were right
    t = trace("smol-07", reference="1")
    assert t["score"] == 1.0 and extract_answer(t["last_stated"], kind="number") == "-1"
    assert verdict(t, CFG, SAME) == "self_disagree"


def test_mixed_language():
    # neither shipped model produced one in the fixtures; a Qwen-style slip into Chinese mid-trace:
    assert mixed_language("First add 12 and 7. 然后我们得到 19, so the answer is 19.")
    assert not mixed_language("First add 12 and 7 to get 19.")
    assert not mixed_language("The café serves 19 crêpes.")  # accents are Latin letters
    assert not mixed_language("x = 19 (π is not involved)")   # one Greek letter is not a second language


def test_near_identical_traces_of_an_item_are_deduplicated():
    a = trace("qwen-02")
    b = dict(a, thinking=a["thinking"] + " ")
    c = trace("smol-07")
    for t in (a, b, c):
        t["dropped"] = None
    assert similarity(a["thinking"], b["thinking"]) == 1.0 and similarity(a["thinking"], c["thinking"]) < 0.5
    deduplicate([a, b, c], 0.8)
    assert [a["dropped"], b["dropped"], c["dropped"]] == [None, "duplicate", None]


@pytest.mark.model
def test_end_to_end_on_the_tiny_model_with_resume(tmp_path):
    out = tmp_path / "sft"
    cmd = [sys.executable, "-m", "ponder.cli", "distill", "--task", "chain_sum:min_terms=2,max_terms=2,max_digits=1",
           "--limit", "3", "--n", "4", "--budgets", "12,48", "--min-thinking-tokens", "4", "--answer-tokens", "16",
           "--out", str(out), "--no-progress"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * 2 * 4
    report = json.loads((out / "report.json").read_text())
    assert report["traces"] == 24 and report["kept"] + sum(report["dropped"].values()) == 24
    assert any(x["truncated"] for x in samples), "a 12-token budget cuts some trace"
    print(json.dumps({k: report[k] for k in ("traces", "kept", "dropped", "accuracy")}))
    rows = [json.loads(x) for x in (out / "dataset.jsonl").read_text().splitlines()]
    assert len(rows) == report["kept"]
    for r in rows:
        user, assistant = r["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert isinstance(assistant["content"], str) and isinstance(assistant["reasoning_content"], str)
    by = {(s["item"], s["budget"], s["i"]): s for s in samples}
    kept_thinking = {r["messages"][1]["reasoning_content"] for r in rows}
    assert not any(x["truncated"] and x["thinking"] in kept_thinking for x in samples), "no cut trace is kept"
    for r in rows:  # every kept trace was verified correct
        match = [s for s in by.values() if s["thinking"] == r["messages"][1]["reasoning_content"] and
                 s["answer"] == r["messages"][1]["content"] and s["item"] == r["item"]]
        assert match and all(s["score"] == 1.0 for s in match)
    assert "| filter | dropped |" in (out / "report.md").read_text()
    again = subprocess.run([sys.executable, "-m", "ponder.cli", "distill", "--out", str(out), "--resume",
                            "--no-progress"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len((out / "samples.jsonl").read_text().splitlines()) == 24, "resume redoes nothing already done"
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--resume" in bad.stderr

