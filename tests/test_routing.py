"""Routers, calibration, policy selection, tune and the shedding state machine."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from ponder.api.request import parse_request
from ponder.backends.scripted import ScriptedBackend
from ponder.config import PonderConfig, SheddingConfig, config_from_dict
from ponder.errors import ConfigError, Overloaded
from ponder.lab.config import BenchConfig
from ponder.lab.runner import run_bench
from ponder.lab.tuning import calibrate
from ponder.routing import build_router
from ponder.lab.tuning.calibrate import Labeled
from ponder.routing.classifier import ClassifierRouter, train
from ponder.routing.heuristic import HeuristicRouter
from ponder.routing.llm import LLMRouter, parse_rating
from ponder.routing.policy import Band, RoutingPolicy, load_policy
from ponder.lab.tuning.tune import choose, load_runs, tune
from ponder.server.shedding import Shedder, degrade_budget, pressure_level
from ponder.service import Ponder
from ponder.thinking import prompts
from ponder.types import Message, ThinkingBudget

WORD_PROBLEM = ("A farmer has 3 fields. Each field has 24 rows of 15 plants. He sells 2 rows from every field. "
                "How many plants are left? Solve it step by step.")


def msgs(text):
    return [Message("user", text)]


# -- routers ----------------------------------------------------------------------------------

def test_heuristic_orders_prompts_by_need_for_thinking():
    r = HeuristicRouter()
    hi, fact, word, code = (r.score(msgs(t)).score for t in (
        "hi", "What is the capital of France?", WORD_PROBLEM, "Why does this fail?\n```python\nprint(x[3])\n```"))
    assert hi < 0.05 < fact < 0.4 < word and code > 0.5
    assert "small talk" in r.score(msgs("hi")).reason


def test_classifier_learns_from_labels_and_round_trips_through_json(tmp_path):
    easy = [f"Calculate {a} + {b}." for a in range(1, 8) for b in range(1, 4)]
    hard = [f"Calculate {a}7 - {b}3 + {a}{b} - 19." for a in range(1, 8) for b in range(1, 4)]
    model = train(easy + hard, [0] * len(easy) + [1] * len(hard))
    path = tmp_path / "clf.json"
    path.write_text(json.dumps(model))
    router = build_router(RoutingPolicy(router="classifier", router_options={"model": str(path)},
                                        bands=[Band(max_score=1.0, lane="x")]), lambda: None)
    assert isinstance(router, ClassifierRouter)
    assert router.score(msgs("Calculate 58 - 23 + 41 - 19.")).score > 0.5 > router.score(msgs("Calculate 2 + 5.")).score
    with pytest.raises(ConfigError):
        train(easy, [0] * len(easy))


def test_shipped_classifier_ranks_a_word_problem_above_small_talk():
    router = build_router(RoutingPolicy(router="classifier", bands=[Band(max_score=1.0, lane="x")]), lambda: None)
    assert router.score(msgs(WORD_PROBLEM)).score > router.score(msgs("hi")).score


def test_llm_router_parses_a_digit_and_falls_back_otherwise():
    assert parse_rating("4") == 4 and parse_rating(" 2.") == 2 and parse_rating("seven") is None
    good = LLMRouter(lambda: ScriptedBackend(["5"]))
    r = good.score(msgs("prove it"))
    assert r.score == 1.0 and "5/5" in r.reason and r.usage.answer_tokens == 1
    bad = LLMRouter(lambda: ScriptedBackend(["very hard indeed"]))
    r = bad.score(msgs("hi"))
    assert "not a digit" in r.reason and r.score == HeuristicRouter().score(msgs("hi")).score


# -- policy ---------------------------------------------------------------------------------------

def two_lanes(**extra):
    return config_from_dict({"lanes": [{"name": "reasoning"}, {"name": "fast", "effort": "none"}], **extra})


def policy(**kw):
    base = dict(router="heuristic", bands=[Band(max_score=0.4, lane="fast", effort="none"),
                                           Band(max_score=1.0, lane="reasoning", effort="medium",
                                                strategy="self-consistency", params={"n": 3})])
    base.update(kw)
    return RoutingPolicy(**base)


def plan(service, **body):
    import asyncio

    return asyncio.run(service.prepare(parse_request({"messages": [{"role": "user", "content": body.pop("q", "hi")}],
                                                      **body}).to_ponder()))


def test_auto_requests_are_routed_and_explicit_settings_win():
    s = Ponder(two_lanes(), policy=policy(), backends={"fast": ScriptedBackend(["x"]),
                                                       "reasoning": ScriptedBackend(["x"])})
    p = plan(s, model="auto")
    assert p.lane.name == "fast" and p.budget.max_tokens == 0 and p.route["band"] == 0
    p = plan(s, model="auto", q=WORD_PROBLEM)
    assert p.lane.name == "reasoning" and p.strategy == "self-consistency" and p.strategy_params.n == 3
    assert "heuristic score" in p.route["reason"]
    # explicit effort and strategy win over the band
    p = plan(s, model="auto", q=WORD_PROBLEM, reasoning_effort="low", ponder={"strategy": "single"})
    assert p.lane.name == "reasoning" and p.budget.effort == "low" and p.strategy == "single"
    # naming a lane pins it: no routing
    p = plan(s, model="fast", q=WORD_PROBLEM)
    assert p.lane.name == "fast" and "router" not in p.route


def test_policy_validation_and_missing_lanes():
    with pytest.raises(ValueError):
        RoutingPolicy(bands=[Band(max_score=0.5, lane="a")])
    with pytest.raises(ValueError):
        RoutingPolicy(bands=[Band(max_score=1.0, lane="a"), Band(max_score=0.5, lane="b")])
    with pytest.raises(ConfigError) as e:
        Ponder(PonderConfig(lanes=[{"name": "only"}]), policy=policy())
    assert "fast" in e.value.message
    # the shipped default policy falls back to the default lane
    shipped = load_policy(None)
    s = Ponder(PonderConfig(lanes=[{"name": "only"}]), policy=shipped, backends={"only": ScriptedBackend(["x"])})
    assert plan(s, model="auto").lane.name == "only" and plan(s, model="auto").budget.max_tokens == 0


def test_bad_policy_file_names_the_key(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("router: heuristic\nbands:\n  - {max_score: 1.0, lane: fast, effort: huge}\n")
    with pytest.raises(ConfigError) as e:
        load_policy(p)
    assert "bands.0" in e.value.message and "huge" in e.value.message


def test_builtin_config_shares_one_engine_between_fast_and_reasoning():
    built = []

    def factory(lane):
        built.append(lane.name)
        return ScriptedBackend(["x"])

    s = Ponder(PonderConfig(), backend_factory=factory)
    assert s.backend(s.config.lane("fast")) is s.backend(s.config.lane("reasoning"))
    assert len(built) == 1


# -- cascade ----------------------------------------------------------------------------------------

def cascade_backends(fast_answers):
    state = {"k": 0}
    lock = threading.Lock()

    def fast(prompt):
        with lock:
            a = fast_answers[state["k"] % len(fast_answers)]
            state["k"] += 1
        return a

    def reasoning(prompt):
        if prompt.endswith(prompts.CLOSE_THINKING) or prompt.endswith(prompts.ANSWER_CUE):
            return "42"
        return "careful thought </think>"

    return {"fast": ScriptedBackend(fast), "reasoning": ScriptedBackend(reasoning)}


@pytest.mark.parametrize("fast_answers, escalated", [(["7", "7"], False), (["7", "8"], True),
                                                     ([""], True)])
def test_cascade_escalates_untrusted_answers_and_reports_both_attempts(fast_answers, escalated):
    cfg = config_from_dict({"lanes": [
        {"name": "reasoning", "prices": {"input_per_1m": 0, "output_per_1m": 1000}},
        {"name": "fast", "effort": "none", "prices": {"input_per_1m": 0, "output_per_1m": 10}}]})
    s = Ponder(cfg, policy=policy(router="cascade", bands=[Band(max_score=0.5, lane="fast", effort="none"),
                                                           Band(max_score=1.0, lane="reasoning", effort="low")]),
               backends=cascade_backends(fast_answers))
    p = plan(s, model="auto", q="What is 6 * 7?", temperature=0.7, seed=1)
    assert p.escalation is not None and p.route["router"] == "cascade"
    import asyncio

    out = asyncio.run(s.ask(p))
    assert out.ok
    attempts = out.extra["cascade"]
    assert (len(attempts) == 2) == escalated
    assert out.results[0].answer == ("42" if escalated else fast_answers[0])
    fast_tokens = attempts[0]["usage"]["completion_tokens"]
    if escalated:
        esc_tokens = attempts[1]["usage"]["completion_tokens"]
        assert out.usage.completion_tokens == fast_tokens + esc_tokens
        assert out.cost_usd == pytest.approx((fast_tokens * 10 + esc_tokens * 1000) / 1e6)
    else:
        assert out.usage.completion_tokens == fast_tokens
        assert out.cost_usd == pytest.approx(fast_tokens * 10 / 1e6)


# -- calibration ------------------------------------------------------------------------------------

EXAMPLES = [
    Labeled(0.1, True, True, 5, 50), Labeled(0.2, True, True, 5, 50), Labeled(0.3, True, False, 5, 50),
    Labeled(0.6, False, True, 5, 50), Labeled(0.8, False, True, 5, 50), Labeled(0.9, False, False, 5, 50),
]


def test_threshold_for_rate_and_for_quality():
    p = calibrate.threshold_for_rate(EXAMPLES, 0.5)
    assert p.rate == 0.5 and p.threshold == 0.3
    p = calibrate.threshold_for_quality(EXAMPLES, 5 / 6)
    assert p.rate == 0.5 and p.quality == pytest.approx(5 / 6)
    with pytest.raises(ConfigError) as e:
        calibrate.threshold_for_quality(EXAMPLES, 0.95)
    assert "0.833" in e.value.message


def test_apgr_and_cpt_against_hand_computed_values():
    # q_fast = 3/6, q_strong = 4/6; escalating the top 3 scores gives 5/6 (PGR 2)
    assert calibrate.cpt(EXAMPLES, 1.0) == pytest.approx(2 / 6)
    assert calibrate.cpt(EXAMPLES, 0.5) == pytest.approx(2 / 6)
    # envelope PGR: 0 up to 1/6, 1 at 2/6, 2 from 3/6 on -> area 1/12 + 3/12 + 1 = 4/3
    assert calibrate.apgr(EXAMPLES) == pytest.approx(4 / 3)
    reversed_ex = [Labeled(1 - e.score, e.fast_correct, e.strong_correct) for e in EXAMPLES]
    assert calibrate.apgr(reversed_ex) < calibrate.apgr(EXAMPLES)


# -- policy selection from lab figures ------------------------------------------------------------------

def test_choose_cheapest_meeting_floor_and_slo_and_explains_infeasible():
    cands = {"a": {"accuracy": 0.5, "tokens": 10, "cost_usd": 0, "p95_s": 0.5},
             "b": {"accuracy": 0.8, "tokens": 100, "cost_usd": 0, "p95_s": 3.0},
             "c": {"accuracy": 0.82, "tokens": 400, "cost_usd": 0, "p95_s": 9.0}}
    assert choose(cands, None, 0.75, False)[0] == "b"
    assert choose(cands, None, None, False)[0] == "b"  # 95% of the best (0.82) = 0.779
    assert choose(cands, 1.0, None, False)[0] == "a"
    assert choose(cands, None, 0.4, False)[0] == "a"
    # ties on tokens: the more accurate wins
    tie = {"x": {"accuracy": 0.6, "tokens": 10, "cost_usd": 0, "p95_s": 1},
           "y": {"accuracy": 0.7, "tokens": 10, "cost_usd": 0, "p95_s": 1}}
    assert choose(tie, None, 0.5, False)[0] == "y"
    key, _, why = choose(cands, 5.0, 0.9, False)
    assert key == "b" and "no configuration reaches" in why
    with pytest.raises(ConfigError) as e:
        choose(cands, 0.1, None, False)
    assert e.value.param == "--latency-slo" and "0.50 s" in e.value.message


def mixed_run(tmp_path):
    """A scripted lab run where thinking fixes the long sums and the fast lane gets the short ones."""
    data = tmp_path / "mixed.jsonl"
    rows = [{"question": f"Calculate {i} + 1.", "answer": str(i + 1)} for i in range(6)]
    rows += [{"question": f"Calculate {i}1 + 22 - 13 + 4{i} - 17.", "answer": str(i * 10 + 1 + 22 - 13 + 40 + i - 17)}
             for i in range(1, 7)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    answers = {r["question"]: r["answer"] for r in rows}

    def respond(prompt):
        q = next(q for q in answers if q in prompt)
        hard = q.count("+") + q.count("-") > 1
        if "<think>" in prompt and not (prompt.endswith(prompts.CLOSE_THINKING) or prompt.endswith(prompts.ANSWER_CUE)):
            return "working it out step by step </think>"
        thought = prompt.endswith(prompts.CLOSE_THINKING) or prompt.endswith(prompts.ANSWER_CUE)
        return answers[q] if (thought or not hard) else "0"

    out = tmp_path / "run"
    run_bench(BenchConfig(data=str(data), models=["reasoning"], budgets=[0, 32], strategies=["single"],
                          answer_kind="number", limit=50), out, backends={"reasoning": ScriptedBackend(respond)},
              progress=False)
    return out


def test_tune_writes_a_policy_that_thinks_only_on_the_hard_band(tmp_path):
    out = mixed_run(tmp_path)
    pol = tune([out], bands=2, config=two_lanes())
    assert [b.budget for b in pol.bands] == [0, 32]
    assert pol.bands[0].measured["accuracy"] == 1.0 and pol.bands[1].measured["accuracy"] == 1.0
    assert pol.bands[0].lane == "reasoning"
    assert "alternatives" in pol.bands[1].measured
    # it loads back and serves
    path = tmp_path / "policy.yaml"
    path.write_text(pol.to_yaml())
    s = Ponder(two_lanes(), policy=load_policy(path), backends={"reasoning": ScriptedBackend(["x"]),
                                                                 "fast": ScriptedBackend(["x"])})
    assert plan(s, model="auto", q="Calculate 3 + 1.").budget.max_tokens == 0
    assert plan(s, model="auto", q="Calculate 51 + 22 - 13 + 45 - 17.").budget.max_tokens == 32
    with pytest.raises(ConfigError) as e:
        tune([out], bands=2, latency_slo_s=1e-9)
    assert e.value.param == "--latency-slo"
    assert len(load_runs([out])) == 12


# -- shedding ------------------------------------------------------------------------------------------

def test_pressure_levels_and_degrading_budgets():
    cfg = SheddingConfig(queue_marks=[2, 4], thinking_marks=[1000, 5000], floor="low")
    assert pressure_level(cfg, 0, 0) == (0, "")
    assert pressure_level(cfg, 2, 0)[0] == 1 and pressure_level(cfg, 5, 0)[0] == 2
    assert pressure_level(cfg, 0, 1000)[0] == 1 and "thinking tokens" in pressure_level(cfg, 0, 1200)[1]
    table = PonderConfig().thinking.effort_table()
    high = ThinkingBudget(table.caps["high"], effort="high")
    assert degrade_budget(high, 1, table, "low").effort == "medium"
    assert degrade_budget(high, 2, table, "low").effort == "low"
    assert degrade_budget(high, 5, table, "low").effort == "low"  # never below the floor
    low = ThinkingBudget(table.caps["low"], effort="low")
    assert degrade_budget(low, 2, table, "low") is None
    assert degrade_budget(ThinkingBudget(0), 3, table, "low") is None
    explicit = ThinkingBudget(table.caps["high"])
    d = degrade_budget(explicit, 1, table, "low")
    assert d is not None and d.max_tokens == table.caps["medium"]


def test_shedder_degrades_new_requests_and_rejects_past_the_ceiling():
    cfg = two_lanes()
    s = Ponder(cfg, backends={"reasoning": ScriptedBackend(["x"]), "fast": ScriptedBackend(["x"])})
    table = cfg.thinking.effort_table()
    shed = Shedder(SheddingConfig(queue_marks=[100], thinking_marks=[1], hard_thinking_tokens=table.caps["high"] + 1),
                   table)
    first, reserved = shed.admit(plan(s, model="reasoning", reasoning_effort="high"), waiting=0)
    assert first.degraded is None and reserved == first.budget.max_tokens
    second, r2 = shed.admit(plan(s, model="reasoning", reasoning_effort="high"), waiting=0)
    assert second.degraded["from"] == "high" and second.degraded["to"] == "medium"
    assert second.budget.max_tokens == table.caps["medium"]
    with pytest.raises(Overloaded):
        shed.admit(plan(s, model="reasoning", reasoning_effort="high"), waiting=0)
    shed.release(reserved)
    shed.release(r2)
    assert shed.thinking_in_flight == 0
    again, _ = shed.admit(plan(s, model="reasoning", reasoning_effort="high"), waiting=0)
    assert again.degraded is None


def test_tune_says_when_it_writes_fewer_bands_than_asked(tmp_path):
    out = mixed_run(tmp_path)
    pol = tune([out], bands=4, config=two_lanes())
    assert pol.source["bands_requested"] == 4
    assert len(pol.bands) == 2 and pol.source["bands_merged"] == 2  # the easy quarters all chose the fast lane
    r = subprocess.run([sys.executable, "-m", "ponder.cli", "tune", str(out), "--bands", "4", "--out",
                        str(tmp_path / "p.yaml")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "asked for 4 bands, wrote 2: 2 neighbouring band(s) chose the same configuration" in r.stderr
