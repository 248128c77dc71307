"""Answer flags on real outputs, and the guard actions they trigger.

``tests/fixtures/flags/outputs.jsonl`` holds 216 outputs of the two shipped
models (SmolLM2-135M, Qwen2.5-Coder-0.5B) collected by
``bench/collect_flags.py`` through ponder's own service: questions nobody can
answer and short arithmetic at thinking budgets 0/48/160, greedy and sampled.
With the 154 real outputs of the extraction suite that makes 370, each
labelled by hand for every flag in ``tests/fixtures/flags/labels.jsonl``:

* ``give_up``: the answer declines (refuses, says it cannot know, "not sure"),
  or is empty after thinking.  Nonsense that does not decline is *not*
  give-up (a verifier catches wrong answers; this flag catches refusals).
* ``disagreement``: the thinking concluded a result (a boxed value, an answer
  statement, a sentence ending "= N" / "is N") and the answer states another.
  A trace that restates the question concluded nothing.
* ``repetition``: the same block repeated (3 times or more, or the loop guard).
* ``truncated`` / ``answer_from_thinking``: how the generation ended, as
  recorded when it was generated (the extraction suite's hand-labelled source).

Precision and recall of every detector are asserted on all of them; the rare
kinds (tiny models seldom refuse in words) get scripted cases besides.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from ponder.backends.scripted import ScriptedBackend
from ponder.config import config_from_dict
from ponder.flags import DETECTORS, detect
from ponder.request import PonderRequest
from ponder.service import Ponder
from ponder.thinking import prompts
from ponder.types import Generation, Message, ThinkingReport, Timings, Usage

sys.path.insert(0, str(Path(__file__).parent))
from test_extraction_regression import CASES, replay  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "flags"
OUTPUTS = {r["id"]: r for r in map(json.loads, (FIX / "outputs.jsonl").read_text().splitlines())}
LABELS = [json.loads(line) for line in (FIX / "labels.jsonl").read_text().splitlines()]
EXTRACTION = {c["id"]: c for c in CASES}
#: the floor each detector must keep on the labelled real outputs
FLOOR = {"give_up": (0.9, 0.9), "disagreement": (0.8, 0.8), "repetition": (0.75, 0.75), "truncated": (1.0, 1.0),
         "answer_from_thinking": (0.95, 0.95)}


def generation_of(label: dict) -> Generation:
    if label["source"] == "outputs":
        r = OUTPUTS[label["id"]]
        rep = ThinkingReport(budget=r["thinking_budget"], used=r["thinking_used"], truncated=r["truncated"],
                             stopped=r["stopped"])
        return Generation(r["thinking"], r["answer"], Usage(), rep, Timings(), r["finish_reason"], r["answer_source"])
    c = EXTRACTION[label["id"]]
    thinking, answer, source = replay(c)  # through the engines' own state machine
    end = c["thinking_end"]
    rep = ThinkingReport(budget=c["thinking_budget"], used=len(thinking.split()), truncated=end == "budget",
                         stopped={"tag": "end", "eog": "end", None: "none"}.get(end, end))
    return Generation(thinking, answer, Usage(), rep, Timings(), "stop", source)


def test_every_flag_is_labelled_on_enough_real_outputs():
    assert set(FLOOR) == set(DETECTORS)
    assert len(LABELS) >= 300
    for flag in DETECTORS:
        positives = sum(flag in lab["flags"] for lab in LABELS)
        assert positives >= 4, flag  # and every label also counts as a negative for the other flags


@pytest.mark.parametrize("flag", list(FLOOR))
def test_detector_precision_and_recall_on_labelled_real_outputs(flag):
    tp = fp = fn = 0
    misses = []
    for lab in LABELS:
        got = flag in {f.name for f in detect(generation_of(lab), "number" if lab["source"] == "extraction" else "auto")}
        want = flag in lab["flags"]
        tp += got and want
        fp += got and not want
        fn += want and not got
        if got != want:
            misses.append(lab["id"])
    precision = tp / max(1, tp + fp)
    recall = tp / max(1, tp + fn)
    low_p, low_r = FLOOR[flag]
    assert precision >= low_p and recall >= low_r, (flag, precision, recall, misses)


def gen(thinking: str, answer: str, *, stopped="end", truncated=False, finish="stop", source="answer") -> Generation:
    rep = ThinkingReport(budget=256, used=len(thinking.split()), truncated=truncated, stopped=stopped)
    return Generation(thinking, answer, Usage(), rep, Timings(), finish, source)


@pytest.mark.parametrize("answer", [
    "I cannot determine the exact value from the information given.",
    "There is not enough information to answer this question.",
    "As an AI, I don't have access to your personal accounts.",
    "I'm sorry, but I can't predict future stock prices.",
    "It is impossible to know what number you are thinking of.",
    "The final answer is .",
    "",
])
def test_give_up_phrasings_are_flagged(answer):
    flags = {f.name: f for f in detect(gen("Let me think about what is asked here.", answer))}
    assert "give_up" in flags


@pytest.mark.parametrize("answer", [
    "The answer cannot be negative, so it is 5.",
    "Sorry for the long derivation: the total is 42.",
    "x = 10 - y, since y is not given.",
])
def test_answers_that_merely_mention_limits_are_not_give_up(answer):
    assert "give_up" not in {f.name for f in detect(gen("So 40 + 2 = 42.", answer))}


def test_disagreement_reports_both_values_and_ignores_a_budget_cut_trace():
    f = {x.name: x for x in detect(gen("3 + 4 = 7. So the answer is 7.", "The answer is 9."))}
    assert f["disagreement"].detail == {"answer": "9", "thinking": "7"}
    cut = detect(gen("3 + 4 = 7. Then 7 * 2 = 14", "The answer is 9.", stopped="budget", truncated=True))
    assert "disagreement" not in {x.name for x in cut} and "truncated" in {x.name for x in cut}
    assert not detect(gen("3 + 4 = 7. So the answer is 7.", "The answer is 7.0"))


# -- actions ------------------------------------------------------------------------------------------

def service(backend, **guards) -> Ponder:
    cfg = config_from_dict({"lanes": [{"name": "default", "effort": "low", "guards": guards}],
                            "ledger": {"url": "off"}})
    return Ponder(cfg, backends={"default": backend})


def answer_engine(answers: list[str], thinking: str = "Let me work it out. 3 + 4 = 7. </think>"):
    """The k-th answer phase answers answers[k] (the last repeats); every thinking phase says ``thinking``."""
    state = {"k": 0}

    def respond(prompt: str) -> str:
        if prompt.endswith(prompts.CLOSE_THINKING) or prompt.endswith(prompts.ANSWER_CUE):
            a = answers[min(state["k"], len(answers) - 1)]
            state["k"] += 1
            return a
        return thinking
    return ScriptedBackend(respond)


def ask(svc: Ponder, **kw):
    plan = svc.prepare_sync(PonderRequest((Message("user", "What is 3 + 4?"),), **kw).validate())
    return plan, asyncio.run(svc.run(plan).execute())


def test_escalate_retries_once_at_the_next_effort_tier_and_bills_both():
    engine = answer_engine(["I cannot determine this.", "The answer is 7."])
    plan, out = ask(service(engine, actions={"give_up": "escalate"}))
    assert plan.guard.retry.budget.max_tokens == 1024  # low (256) -> medium
    assert out.ok and out.results[0].answer == "The answer is 7."
    g = out.extra["guard"]
    assert g["flag"] == "give_up" and g["action"] == "escalate" and g["budget"] == 1024
    assert g["answer_before"] == "I cannot determine this."
    assert out.extra["flags"] == []  # the returned answer is clean
    assert out.results[0].n_samples == 2
    assert out.usage.answer_tokens == sum(s.generation.usage.answer_tokens for s in out.results[0].samples)


def test_a_clients_own_cap_bounds_the_escalation():
    engine = answer_engine(["I cannot determine this.", "The answer is 7."])
    plan, out = ask(service(engine, actions={"give_up": "escalate"}), max_thinking_tokens=256)
    assert plan.guard is not None and plan.guard.retry is None  # nowhere higher to go: the flag is only reported
    assert out.extra["guard"]["skipped"] and out.results[0].n_samples == 1
    # on another lane the retry keeps the client's cap
    cfg = config_from_dict({"lanes": [{"name": "a", "guards": {"actions": {"give_up": "escalate"}, "escalate_to": "b"}},
                                      {"name": "b"}], "ledger": {"url": "off"}})
    svc = Ponder(cfg, backends={"a": answer_engine(["I cannot determine this."]),
                                "b": answer_engine(["The answer is 7."])})
    plan, out = ask(svc, max_thinking_tokens=256)
    assert plan.guard.retry.lane.name == "b" and plan.guard.retry.budget.max_tokens == 256
    assert out.extra["guard"]["lane"] == "b" and out.lane == "a"


def test_vote_draws_more_samples_and_the_majority_wins():
    engine = answer_engine(["The answer is 9.", "The answer is 7.", "The answer is 7."])
    plan, out = ask(service(engine, actions={"disagreement": "vote"}, vote_samples=2))
    assert out.extra["guard"]["flag"] == "disagreement" and out.extra["guard"]["action"] == "vote"
    assert out.results[0].n_samples == 3 and "7" in out.results[0].answer
    assert out.extra["flags"] == []
    # the vote's worst case is part of the request's worst case (what quotas reserve)
    per = plan.budget.max_tokens + plan.sampling.max_answer_tokens
    assert plan.worst_case_tokens(10) == 10 + per + 2 * per


def test_no_action_configured_reports_flags_only():
    engine = answer_engine(["I cannot determine this."])
    plan, out = ask(service(engine))
    assert plan.guard is None
    assert [f["flag"] for f in out.extra["flags"]] == ["give_up"] and "guard" not in out.extra
    assert out.results[0].n_samples == 1


def test_guard_config_is_checked():
    from ponder.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown flag"):
        config_from_dict({"lanes": [{"name": "a", "guards": {"actions": {"sad": "vote"}}}]})
    with pytest.raises(ConfigError, match="unknown action"):
        config_from_dict({"lanes": [{"name": "a", "guards": {"actions": {"give_up": "retry"}}}]})
    with pytest.raises(ConfigError, match="escalate_to"):
        config_from_dict({"lanes": [{"name": "a", "guards": {"escalate_to": "b"}}]})
    cfg = config_from_dict({"lanes": [{"name": "a", "guards": {"actions": {"give_up": False}}}]})
    assert cfg.lanes[0].guards.acting() == {}  # YAML's bare `no`: no action


# -- a real gateway, the default model ----------------------------------------------------------------

def test_real_gateway_escalates_a_cut_trace_within_the_keys_limits(tmp_path):
    """SmolLM2 cut at a 4-token tier is flagged ``truncated``; the escalation is held to the key's cap, its worst
    case is reserved (a key whose per-minute tokens fit the request but not its escalation is refused), and the
    flags reach the response, the ledger's column and ``ponder_flags_total``."""
    import sqlite3

    import httpx

    from ponder.tenancy.tenancy import hash_secret
    from servers import Gateway

    keys = [{"name": "capped", "key_sha256": hash_secret("pk-capped"), "limits": {"max_thinking_tokens": 40}},
            {"name": "tight", "key_sha256": hash_secret("pk-tight"), "limits": {"tokens_per_minute": 1}}]
    ledger = tmp_path / "ledger.db"
    cfg = {"policy": "off", "ledger": {"url": f"sqlite:///{ledger}"}, "server": {"access_log": False},
           "thinking": {"efforts": {"minimal": 4, "low": 96, "medium": 256, "high": 512, "xhigh": 1024, "max": 2048}},
           "auth": {"required": True, "keys": keys},
           "lanes": [{"name": "default", "effort": "minimal", "max_sequences": 2, "n_ctx": 1024,
                      "guards": {"actions": {"truncated": "escalate"}}}]}
    g = Gateway(cfg, tmp_path)
    try:
        body = {"messages": [{"role": "user", "content": "Count the legs of 3 cows and 2 hens. Explain each step."}],
                "temperature": 0, "max_tokens": 24}
        r = httpx.post(g.url("/v1/chat/completions"), json=body, headers={"authorization": "Bearer pk-capped"},
                       timeout=120)
        assert r.status_code == 200, r.text
        p = r.json()["ponder"]
        guard = p["guard"]
        assert guard["flag"] == "truncated" and guard["action"] == "escalate"
        assert guard["budget"] == 40  # the next tier (96), held to the key's max_thinking_tokens
        assert "truncated" in {f["flag"] for f in guard["flags_before"]}
        assert p["samples"] == 2
        assert g.metric("ponder_flags_total", flag="truncated") >= 1
        assert g.metric("ponder_guard_actions_total", action="escalate") == 1
        # a key whose quota cannot hold the escalation's worst case is refused up front, never overspent
        prompt = r.json()["usage"]["prompt_tokens"]
        keys[1]["limits"]["tokens_per_minute"] = prompt + 4 + 24 + 8  # the request fits; request + escalation not
        g.stop()
        g = Gateway(cfg, tmp_path)
        r2 = httpx.post(g.url("/v1/chat/completions"), json=body, headers={"authorization": "Bearer pk-tight"},
                        timeout=120)
        assert r2.status_code == 429 and r2.json()["error"]["param"] == "tokens_per_minute", r2.text
    finally:
        g.stop()
    row = sqlite3.connect(ledger).execute("SELECT flags FROM requests WHERE key = 'capped'").fetchone()
    assert row is not None and "truncated" in (row[0] or "").split(",")
