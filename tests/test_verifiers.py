import concurrent.futures as cf

import pytest

from ponder.verifiers.base import safe_verify
from ponder.verifiers.code_exec import CodeVerifier, extract_code
from ponder.verifiers.equivalence import Equivalence
from ponder.verifiers.programmatic import CallableVerifier, ReferenceVerifier, TaskVerifier


@pytest.mark.parametrize("a, b, same", [
    ("19", "19.0", True), ("1,000", "1000", True), ("Paris", "paris.", True), ("1/2", "0.5", True),
    (r"\frac{1}{2}", "0.5", True), ("x^2+1", "1+x^2", True), ("7", "8", False), ("cat", "dog", False),
])
def test_equivalence(a, b, same):
    assert Equivalence().same(a, b) is same


def test_math_verify_works_from_threads():
    eq = Equivalence(kind="math")
    with cf.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: eq.same(r"\frac{2}{4}", r"\frac{1}{2}"), range(4)))
    assert results == [True] * 4


def test_choice_and_string_kinds():
    assert Equivalence(kind="choice").same("Answer: (B)", "b")
    assert not Equivalence(kind="string").same("0.5", "1/2")


def test_reference_and_callable():
    assert ReferenceVerifier("19").verify("q", "It is 19", "19").passed
    assert not ReferenceVerifier("19").verify("q", "It is 91", "91").passed


def test_callable_gets_extracted_then_full_answer_and_its_threshold_decides():
    seen = []
    v = CallableVerifier(lambda e, f: seen.append((e, f)) or 0.75, threshold=0.7)
    got = v.verify("q", "the full answer: 3", "3")
    assert seen == [("3", "the full answer: 3")]  # the argument order scorers are written against
    assert (got.score, got.passed, got.feedback) == (0.75, True, "")
    strict = CallableVerifier(lambda e, f: 0.75).verify("q", "a", "a")  # the default threshold is 1.0
    assert (strict.passed, strict.feedback) == (False, "the checker scored this answer 0.75")
    assert CallableVerifier(lambda e, f: False).verify("q", "a", "a").score == 0.0  # a bool is a 0/1 score


def test_safe_verify_catches_crash_and_bad_scores():
    import asyncio

    v = asyncio.run(safe_verify(CallableVerifier(lambda e, f: 1 / 0), "q", "a", "a"))
    assert v.error and "ZeroDivisionError" in v.error
    assert asyncio.run(safe_verify(CallableVerifier(lambda e, f: 3.0), "q", "a", "a")).error


def test_task_verifier_counts_only_full_credit():
    import reasoning_gym

    ds = reasoning_gym.create_dataset("basic_arithmetic", size=1, seed=1, min_terms=2, max_terms=2)
    entry = ds[0]
    assert TaskVerifier(ds, entry).verify(entry["question"], entry["answer"], entry["answer"]).passed
    assert not TaskVerifier(ds, entry).verify(entry["question"], "nope", "nope").passed


def test_code_verifier_pass_fail_timeout_and_no_network():
    ok = CodeVerifier("assert add(2, 3) == 5").verify("", "```python\ndef add(a, b):\n    return a + b\n```", None)
    assert ok.passed
    bad = CodeVerifier("assert add(2, 3) == 5").verify("", "def add(a, b):\n    return a - b\n", None)
    assert not bad.passed and "AssertionError" in bad.feedback
    slow = CodeVerifier("pass", timeout_s=1).verify("", "while True: pass", None)
    assert not slow.passed and "did not finish" in slow.feedback
    net = CodeVerifier("pass").verify("", "import socket\nsocket.create_connection(('127.0.0.1', 9))", None)
    assert not net.passed and ("network" in net.feedback or "Errno" in net.feedback)


def test_extract_code_takes_last_block():
    assert extract_code("x\n```python\na=1\n```\n```python\nb=2\n```") == "b=2\n"
