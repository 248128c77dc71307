"""Answer extraction against real outputs of both shipped models.

``tests/fixtures/extraction/cases.jsonl`` holds outputs collected by running
SmolLM2-135M and Qwen2.5-Coder-0.5B on reasoning-gym items (arithmetic,
chain sums, leg counting, GSM-style problems) at thinking budgets 0, 48 and
160: the prompt, what the model generated in its thinking and in its answer
phase (raw, tags and all), how its thinking ended, and — labelled by hand —
the answer a careful reader takes from it (``null`` where it states none)
and where that answer is (the answer phase or the thinking).

Each case is replayed through the same state machine the engines use, fed
in ragged pieces (tags split across pieces), so the split of thinking from
answer, the handling of stray and reopened tags and of turns ended inside
the think, and the extraction are all exercised.  Grow the file whenever a
new failure is seen.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ponder.thinking.extract import extract_answer
from ponder.thinking.machine import CLOSE, OPEN, ThinkingMachine
from ponder.types import ThinkingBudget

CASES = [json.loads(line) for line in
         (Path(__file__).parent / "fixtures" / "extraction" / "cases.jsonl").read_text().splitlines() if line.strip()]


def pieces(text: str, seed: str) -> list[str]:
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(text):
        k = rng.randint(1, 5)
        out.append(text[i:i + k])
        i += k
    return out


def replay(case: dict) -> tuple[str, str, str]:
    """(thinking, answer, source) the machine makes of a case's raw outputs."""
    budget = case["thinking_budget"]
    m = ThinkingMachine(ThinkingBudget(10 ** 6 if budget else 0), max_answer_tokens=10 ** 6)
    if budget:
        for p in pieces(case["thinking_raw"], case["id"] + "t"):
            if m.feed(p).kind != "continue" or m.phase != "thinking":
                break
        if m.phase == "thinking":
            if case["thinking_end"] == "eog":
                m.end_of_turn()
            else:  # cut by the budget or the loop guard when it was generated
                m.force_answer(case["thinking_end"] or "budget")
    if m.phase == "answer":
        for p in pieces(case["answer_raw"], case["id"] + "a"):
            if m.feed(p).kind == "stop":
                break
        m.end_of_turn()
    answer, source = m.final_answer()
    return m.thinking, answer, source


def _right(case: dict) -> bool:
    thinking, answer, source = replay(case)
    return extract_answer(answer, kind=case["kind"]) == case["expected_extracted"] and \
        (case["expected_source"] is None or source == case["expected_source"])


#: each failure kind the suite must hold enough real cases of, and the machine must get every one of right
KINDS = {
    "a model that reopens <think> in its answer": (lambda c: OPEN in c["answer_raw"], 3),
    "an answer phase that is only a tag": (lambda c: c["answer_raw"].strip() == CLOSE, 5),
    "a turn ended inside the think": (lambda c: c["thinking_end"] == "eog", 20),
    "a \\boxed answer": (lambda c: "\\boxed" in c["thinking_raw"] + c["answer_raw"], 5),
    "an answer taken from the thinking": (lambda c: c["expected_source"] == "thinking", 30),
    "no answer stated": (lambda c: c["expected_extracted"] is None, 1),
    "a negative answer": (lambda c: (c["expected_extracted"] or "").startswith("-"), 1),
    "a decimal answer": (lambda c: "." in (c["expected_extracted"] or ""), 1),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_failure_kind_is_covered_and_handled(kind):
    """Per kind: enough real cases in the suite, and the machine + extraction right on every one of them."""
    assert len(CASES) >= 100 and {c["model"] for c in CASES} == {"smollm2", "qwen2.5-coder-0.5b"}
    matches, at_least = KINDS[kind]
    cases = [c for c in CASES if matches(c)]
    assert len(cases) >= at_least, f"the suite needs {at_least}+ cases of {kind}"
    wrong = [c["id"] for c in cases if not _right(c)]
    assert not wrong, f"{kind}: {wrong}"


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_real_output(case):
    thinking, answer, source = replay(case)
    # a tag, a template token or an empty string is never an answer, and tags never reach the thinking
    for tag in (OPEN, CLOSE, "<|im_end|>", "<|im_start|>"):
        assert tag not in answer and tag not in thinking
    if case["expected_source"] is not None:
        assert source == case["expected_source"], (answer, thinking[-200:])
    assert extract_answer(answer, kind=case["kind"]) == case["expected_extracted"], (source, answer[:300])
