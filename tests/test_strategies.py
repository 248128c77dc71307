"""Selection logic of every strategy on a scripted engine."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ponder.backends.scripted import ScriptedBackend
from ponder.errors import InvalidRequest
from ponder.strategies import REGISTRY, build_params, get_strategy
from ponder.strategies.base import StrategyRequest
from ponder.strategies.voting import prob_leader_ahead, tally
from ponder.strategies.base import Sample
from ponder.thinking import prompts
from ponder.types import Generation, Message, Sampling, ThinkingBudget, ThinkingReport, Timings, Usage
from ponder.verifiers.equivalence import Equivalence
from ponder.verifiers.programmatic import CallableVerifier


def answering(answers, thinking="let me add </think>"):
    """An engine whose k-th answer phase returns answers[k] (the last repeats)."""
    it = {"k": 0}
    lock = threading.Lock()

    def respond(prompt: str) -> str:
        if prompt.endswith(prompts.CLOSE_THINKING) or prompt.endswith(prompts.ANSWER_CUE):
            with lock:
                a = answers[min(it["k"], len(answers) - 1)]
                it["k"] += 1
            return a
        return thinking
    return ScriptedBackend(respond)


def req(**kw):
    base = dict(messages=(Message("user", "What is 12 + 7?"),), budget=ThinkingBudget(32), sampling=Sampling(seed=0))
    base.update(kw)
    return StrategyRequest(**base)


def run(name, backend, request=None, **params):
    s = get_strategy(name)
    return asyncio.run(s.run(request or req(), backend, build_params(s, params)))


# -- self-consistency --------------------------------------------------------------

def test_majority_wins_and_usage_counts_every_sample():
    b = answering(["19", "The answer is 19", "18", "19.0", "20"])
    r = run("self-consistency", b, n=5)
    assert r.answer == "19"
    assert r.confidence == pytest.approx(3 / 5)
    assert r.n_samples == 5
    assert r.usage.thinking_tokens == sum(s.generation.usage.thinking_tokens for s in r.samples)
    assert r.usage.answer_tokens == sum(s.generation.usage.answer_tokens for s in r.samples)
    assert "3 of 5" in r.decision


def test_tie_goes_to_first_seen_and_is_reported():
    r = run("self-consistency", answering(["18", "19", "19", "18"]), n=4)
    assert r.answer == "18" and "tie" in r.decision and r.confidence == 0.5


def test_all_different_answers():
    r = run("self-consistency", answering(["1", "2", "3"]), n=3)
    assert r.answer == "1" and r.confidence == pytest.approx(1 / 3)


def test_no_answer_extracted_anywhere():
    r = run("self-consistency", answering(["", "", ""]), n=3)
    assert r.confidence == 0.0 and "no answer" in r.decision


def test_abstentions_do_not_vote():
    r = run("self-consistency", answering(["", "7", ""]), n=3)
    assert r.answer == "7" and r.confidence == 1.0 and "2 sample(s) gave no answer" in r.decision


# -- adaptive ------------------------------------------------------------------------

def test_beta_stopping_rule_values():
    assert prob_leader_ahead(3, 0) == pytest.approx(0.9375)
    assert prob_leader_ahead(4, 0) == pytest.approx(0.96875)
    assert prob_leader_ahead(1, 1) == pytest.approx(0.5)


def test_adaptive_stops_early_when_samples_agree():
    r = run("adaptive-consistency", answering(["19"]), n_max=16, round_size=2)
    assert r.extra["samples_used"] == 4 < 16 and r.answer == "19"


def test_adaptive_uses_all_when_split():
    r = run("adaptive-consistency", answering(["1", "2"] * 10), n_max=6, round_size=2)
    assert r.extra["samples_used"] == 6


# -- best-of-n -----------------------------------------------------------------------

def by_value(scores):
    return CallableVerifier(lambda extracted, full: scores.get(extracted, 0.0))


def test_best_of_n_picks_highest_score():
    r = run("best-of-n", answering(["1", "2", "3"]), req(verifier=by_value({"2": 0.9, "3": 0.5})), n=3)
    assert r.answer == "2" and r.confidence == 0.9


def test_best_of_n_tie_keeps_first():
    r = run("best-of-n", answering(["1", "2"]), req(verifier=by_value({"1": 0.5, "2": 0.5})), n=2)
    assert r.answer == "1" and "tied" in r.decision


def test_verifier_crash_is_marked_not_raised():
    def boom(extracted, full):
        raise RuntimeError("checker crashed")
    r = run("best-of-n", answering(["1", "2"]), req(verifier=CallableVerifier(boom)), n=2)
    assert r.extra["verifier_error"] is True and "verifier_error" in r.decision


def test_weighted_best_of_n_sums_scores_per_group():
    # one confident "1" loses to two moderately scored "2"s
    r = run("weighted-best-of-n", answering(["1", "2", "2"]), req(verifier=by_value({"1": 0.9, "2": 0.5})), n=3)
    assert r.answer == "2" and r.extra["weights"] == {"g0": 0.9, "g1": 1.0}


# -- verify-retry and refine -----------------------------------------------------------

def test_verify_retry_feeds_back_and_stops_on_pass():
    b = answering(["18", "19", "20"])
    v = CallableVerifier(lambda e, f: 1.0 if e == "19" else 0.0)
    r = run("verify-retry", b, req(verifier=v), k=3)
    assert r.answer == "19" and r.extra["rounds"] == 2
    assert any("checked and it is not right" in p for p in b.prompts)


def test_refine_stops_when_critique_finds_nothing():
    def respond(prompt):
        if "Check the answer for mistakes" in prompt:
            return "NO ISSUES"
        if prompt.endswith(prompts.CLOSE_THINKING) or prompt.endswith(prompts.ANSWER_CUE):
            return "19"
        return "think </think>"
    r = run("refine", ScriptedBackend(respond), rounds=3)
    assert r.extra["rounds"] == 1 and "no issues" in r.decision


# -- search ----------------------------------------------------------------------------

class ScriptedPRM:
    """Scores a step by a keyword: 'good' steps 0.9, others 0.1."""

    def __init__(self):
        self.calls = 0

    async def score_steps(self, question, steps):
        self.calls += 1
        return (0.9 if "good" in steps[-1] else 0.1), Usage(prompt_tokens=5)


def stepping():
    it = {"k": 0}

    def respond(prompt):
        if prompt.endswith(prompts.CLOSE_THINKING) or prompt.endswith(prompts.ANSWER_CUE):
            return "19" if "good" in prompt else "18"
        it["k"] += 1
        return ("good step\n\n" if it["k"] % 2 else "bad step\n\n") if prompt.count("step") < 4 else "done </think>"
    return ScriptedBackend(respond)


@pytest.mark.parametrize("name, params", [
    ("beam", {"width": 2, "branch": 2, "max_steps": 3, "step_tokens": 8}),
    ("dvts", {"subtrees": 2, "branch": 2, "max_steps": 3, "step_tokens": 8}),
    ("mcts", {"simulations": 6, "branch": 2, "max_depth": 3, "step_tokens": 8}),
])
def test_search_follows_the_prm(name, params):
    prm = ScriptedPRM()
    r = run(name, stepping(), req(prm=prm, budget=ThinkingBudget(64)), **params)
    assert "good" in r.chosen.thinking and r.answer == "19"
    assert r.chosen.thinking_report.used <= 64
    assert r.usage.prompt_tokens >= 5 * prm.calls  # judge tokens are counted
    if name == "mcts":
        assert r.extra["tree"]["visits"] == 6


def test_search_needs_text_backend():
    b = ScriptedBackend(["x"], text_completion=False)
    with pytest.raises(InvalidRequest, match="continues raw text"):
        run("beam", b)


# -- parameters ------------------------------------------------------------------------

@pytest.mark.parametrize("name, params, param", [
    ("self-consistency", {"n": 0}, "ponder.params.n"),
    ("self-consistency", {"n": 99}, "ponder.params.n"),
    ("self-consistency", {"nn": 3}, "ponder.params"),
    ("best-of-n", {"verifier": "oracle"}, "ponder.params.verifier"),
    ("beam", {"width": 8, "branch": 4}, "ponder.params.width"),
    ("beam", {"aggregation": "mean"}, "ponder.params.aggregation"),
    ("adaptive-consistency", {"threshold": 1.5}, "ponder.params.threshold"),
])
def test_bad_params_are_clear_errors(name, params, param):
    with pytest.raises(InvalidRequest) as err:
        build_params(get_strategy(name), params, max_samples=16)
    assert err.value.param == param


def test_registry_has_every_strategy_with_its_metadata():
    assert {"single", "self-consistency", "adaptive-consistency", "best-of-n", "weighted-best-of-n",
            "refine", "verify-retry", "beam", "mcts", "dvts"} <= set(REGISTRY)
    assert REGISTRY["self-consistency"].info.count_param == "n" and REGISTRY["self-consistency"].info.pooled
    assert REGISTRY["beam"].info.needs_text and not REGISTRY["beam"].info.pooled
    assert REGISTRY["single"].info.streams_live and not REGISTRY["best-of-n"].info.streams_live


# -- voting bookkeeping ----------------------------------------------------------------

def _sample(answer):
    g = Generation("", answer or "", Usage(), ThinkingReport(0), Timings())
    return Sample(g, answer)


def test_tally_counts_and_weights():
    samples = [_sample(a) for a in ["1/2", "0.5", None, "2"]]
    t = tally(samples, Equivalence(), weights=[0.2, 0.3, 0.9, 0.4])
    assert t.counts == {0: 2, 1: 1} and t.weights == {0: pytest.approx(0.5), 1: 0.4}
    assert t.abstained == 1 and t.winner == 0 and [s.group for s in samples] == [0, 0, None, 1]


# -- confidence-aware --------------------------------------------------------------------

def _gen(answer: str, lps: list[float], top: int = 0) -> Generation:
    from ponder.types import TokenLogprob

    toks = [TokenLogprob("x", lp, tuple(("y", lp - j) for j in range(top))) for lp in lps]
    return Generation("t", answer, Usage(answer_tokens=len(lps)), ThinkingReport(0), Timings(), logprobs=toks)


def test_trace_confidence_measures_against_hand_computed_values():
    from ponder.strategies.confidence import token_confidence, trace_confidence

    g = _gen("1", [-0.1, -0.1, -2.0, -0.1], top=0)  # no alternatives: the sampled log-probability stands in
    c = trace_confidence(g, window=2, tail=2)
    assert c["mean"] == pytest.approx(-2.3 / 4)
    assert c["lowest_group"] == pytest.approx(-1.05)  # the windows average -0.1, -1.05, -1.05
    assert c["tail"] == pytest.approx(-1.05)
    # with top-k: C = -(1/k) * sum of the alternatives' log-probabilities
    t = _gen("1", [-0.5], top=3).logprobs[0]
    assert token_confidence(t) == pytest.approx(-(-0.5 - 1.5 - 2.5) / 3)


def confident_backend(answers_and_lps):
    """Scripted engine whose k-th sample answers answers[k] with the given per-token log-probabilities."""
    from ponder.types import TokenLogprob

    class B(ScriptedBackend):
        async def sample(self, spec, *, on_event=None):
            k = int(spec.sampling.seed or 0)
            ans, lps = answers_and_lps[k % len(answers_and_lps)]
            g = Generation("", ans, Usage(answer_tokens=len(lps)), ThinkingReport(0), Timings(),
                           logprobs=[TokenLogprob("x", lp) for lp in lps])
            return g
    return B(["unused"])


def test_confidence_weighting_overrules_a_shaky_majority():
    sure, shaky = [-0.05] * 8, [-3.0] * 8
    b = confident_backend([("7", sure), ("9", shaky), ("9", shaky)])
    plain = run("self-consistency", b, req(sampling=Sampling(seed=0)), n=3)
    weighted = run("confidence-weighted", b, req(sampling=Sampling(seed=0)), n=3, measure="mean", top_k=0)
    assert plain.answer == "9" and weighted.answer == "7"
    filtered = run("confidence-filtered", b, req(sampling=Sampling(seed=0)), n=3, keep=0.3, top_k=0, measure="mean")
    assert filtered.answer == "7" and filtered.extra["kept"] == 1 and filtered.n_samples == 3
    assert filtered.usage.answer_tokens == 24  # every drawn sample is billed, voting or not


def test_online_early_stopping_cuts_unconfident_traces_and_settles():
    from ponder.strategies.confidence import WindowMonitor
    from ponder.types import TokenLogprob

    m = WindowMonitor(threshold=-1.0, window=3)
    assert [m(TokenLogprob("x", lp)) for lp in (-0.1, -0.2, -0.3, -2.0, -2.0)] == [False, False, False, False, True]
    # on the scripted engine: warm-up traces are confident and agree; the vote settles without more draws
    sure = [-0.05] * 8
    b = confident_backend([("7", sure)])
    r = run("deepconf-online", b, req(sampling=Sampling(seed=0)), n_max=12, warmup=4, top_k=0, consensus=0.9)
    assert r.answer == "7" and r.extra["samples_used"] == 4 and "settled" in r.decision
