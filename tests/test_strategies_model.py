"""Strategies on the real tiny model with reasoning-gym's basic_arithmetic."""

from __future__ import annotations

import asyncio

import pytest
import reasoning_gym

from ponder.strategies import build_params, get_strategy
from ponder.strategies.base import StrategyRequest
from ponder.types import Message, Sampling, ThinkingBudget
from ponder.verifiers.programmatic import TaskVerifier

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def items():
    return reasoning_gym.create_dataset("basic_arithmetic", size=6, seed=7, min_terms=2, max_terms=2,
                                        min_digits=1, max_digits=1)


def request_for(ds, entry, seed, temperature=0.7):
    return StrategyRequest(
        messages=(Message("user", entry["question"] + " Give only the number."),),
        budget=ThinkingBudget(24), sampling=Sampling(seed=seed, temperature=temperature, max_answer_tokens=12),
        answer_kind="number", verifier=TaskVerifier(ds, entry))


def solve(name, backend, req, **params):
    s = get_strategy(name)
    return asyncio.run(s.run(req, backend, build_params(s, params)))


def test_best_of_n_with_the_task_scorer_returns_a_correct_sample_whenever_one_exists(tiny_backend, items):
    for i, entry in enumerate(items):
        r = solve("best-of-n", tiny_backend, request_for(items, entry, 100 + i), n=4, verifier="task")
        assert r.n_samples == 4
        assert r.usage.thinking_tokens == sum(s.generation.usage.thinking_tokens for s in r.samples)
        scores = [s.score for s in r.samples]
        chosen = next(s for s in r.samples if s.generation is r.chosen)
        assert chosen.score == max(scores), "best-of-n must return the highest-scored sample"


def test_adaptive_stops_before_n_max_when_samples_agree(tiny_backend, items):
    # greedy decoding makes agreement likely; on every item whose first four
    # samples agree the Beta rule must stop before n_max
    agreeing = 0
    for i, entry in enumerate(items):
        r = solve("adaptive-consistency", tiny_backend, request_for(items, entry, i, temperature=0.0),
                  n_max=8, round_size=2)
        first = [s.answer for s in r.samples[:4]]
        if None not in first and len(set(first)) == 1:
            agreeing += 1
            assert r.extra["samples_used"] == 4 < 8
    assert agreeing >= 1


def test_judge_reads_logprobs_on_embedded_engine(tiny_backend):
    from ponder.verifiers.judge import OutcomeJudge, YesNoJudge

    v = asyncio.run(OutcomeJudge(YesNoJudge(tiny_backend)).averify("What is 2 + 2?", "4", "4"))
    assert 0.0 < v.score < 1.0 and v.usage.prompt_tokens > 10
    # the score is P(Yes) / (P(Yes) + P(No)) of the next token: read both directly and compare
    # (a cached prompt sits in other KV cells and is summed in another order, so the floats differ slightly)
    from ponder.verifiers.judge import outcome_prompt

    prompt = tiny_backend.render_chat(outcome_prompt("What is 2 + 2?", "4"))
    lp = asyncio.run(tiny_backend.next_token_logprobs(prompt, ["Yes", "No"]))
    import math

    assert v.score == pytest.approx(math.exp(lp["Yes"]) / (math.exp(lp["Yes"]) + math.exp(lp["No"])), abs=0.05)
