"""The service: summaries that summarize, start-up validation, preflight against the context."""

from __future__ import annotations

import asyncio

import pytest

from ponder.backends.scripted import ScriptedBackend
from ponder.config import config_from_dict
from ponder.errors import ConfigError, ContextOverflow
from ponder.request import PonderRequest
from ponder.service import Ponder
from ponder.summaries import MAX_COPIED_SHARE, copied_share
from ponder.types import Message

TRACE = ("First I add the tens: ten plus ten is twenty. Then the units: two plus seven is nine. "
         "So twelve plus seventeen is twenty nine, and I should double check the carry.")


def test_copied_share_counts_words_in_long_shared_runs():
    assert copied_share("It is adding the tens and then the units.", TRACE) == 0.0
    copied = "Then the units: two plus seven is nine."
    assert copied_share(copied, TRACE) == 1.0
    half = "The reasoning notes that two plus seven is nine and moves on to checking."
    assert 0.2 < copied_share(half, TRACE) < 0.7


def service_with(summary_text: str) -> Ponder:
    cfg = config_from_dict({"lanes": [{"name": "default"}], "ledger": {"url": "off"}})
    return Ponder(cfg, backends={"default": ScriptedBackend([summary_text])})


def test_a_summary_that_copies_the_trace_is_replaced_by_a_progress_line():
    text, usage, _ = asyncio.run(service_with("Then the units: two plus seven is nine.").summarize(TRACE, tokens=40))
    assert text == "Thinking… (40 tokens so far)"
    assert usage.completion_tokens > 0  # the rejected summary was still generated and is still billed


def test_a_real_summary_passes():
    text, _, _ = asyncio.run(service_with("It has added the tens and is now checking the carry.").summarize(TRACE))
    assert text == "It has added the tens and is now checking the carry."
    assert copied_share(text, TRACE) <= MAX_COPIED_SHARE


def test_validate_names_the_key_of_a_bad_lane_strategy():
    cfg = config_from_dict({"lanes": [{"name": "a", "strategy": "beam"}, {"name": "b", "strategy": "nope"}],
                            "ledger": {"url": "off"}})
    with pytest.raises(ConfigError) as e:
        Ponder(cfg).validate()
    assert e.value.param == "lanes.1.strategy" and "nope" in e.value.message


def test_validate_rejects_text_only_strategies_on_an_upstream_lane():
    cfg = config_from_dict({"lanes": [{"name": "up", "backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                                       "strategy": "mcts"}], "ledger": {"url": "off"}})
    with pytest.raises(ConfigError) as e:
        Ponder(cfg).validate()
    assert e.value.param == "lanes.0.strategy" and "text_completion" in e.value.message


def test_prepare_clamps_the_budget_to_the_context_or_refuses():
    class Small(ScriptedBackend):
        pass

    b = Small(["x"])
    b.info = b.info.__class__(**{**b.info.__dict__, "context_length": 300})
    s = Ponder(config_from_dict({"lanes": [{"name": "a"}], "ledger": {"url": "off"}}), backends={"a": b})
    hi = (Message("user", "hi"),)
    plan = s.prepare_sync(PonderRequest(hi, max_thinking_tokens=5000, max_answer_tokens=50))
    assert plan.budget.max_tokens + plan.sampling.max_answer_tokens <= 300
    assert plan.clamped["max_thinking_tokens"]["from"] == 5000
    strict = Ponder(config_from_dict({"lanes": [{"name": "a"}], "ledger": {"url": "off"},
                                      "server": {"budget_overflow": "reject"}}), backends={"a": b})
    with pytest.raises(ContextOverflow) as e:
        strict.prepare_sync(PonderRequest(hi, max_thinking_tokens=5000))
    assert e.value.param == "max_thinking_tokens"


def test_a_single_request_above_the_hard_thinking_ceiling_is_refused_not_admitted():
    """The ceiling bounds one request too: admitted, 100,000 thinking tokens under a 1,000 ceiling would keep every
    other request out (each is refused while the sum is over) for as long as it runs."""
    from ponder.errors import InvalidRequest
    from ponder.planning import plan_request
    from ponder.server.shedding import Shedder

    cfg = config_from_dict({"lanes": [{"name": "a"}], "ledger": {"url": "off"},
                            "server": {"shedding": {"hard_thinking_tokens": 1000, "thinking_marks": [10 ** 6]}},
                            "thinking": {"max_budget": 200_000}})
    shedder = Shedder(cfg.server.shedding, cfg.thinking.effort_table())
    hi = (Message("user", "hi"),)
    with pytest.raises(InvalidRequest) as e:
        shedder.admit(plan_request(PonderRequest(hi, max_thinking_tokens=100_000), cfg), waiting=0)
    assert e.value.code == "request_too_expensive" and "1,000" in e.value.message
    assert shedder.thinking_in_flight == 0  # nothing reserved
    _, tokens = shedder.admit(plan_request(PonderRequest(hi, max_thinking_tokens=600), cfg), waiting=0)
    assert tokens == 600 == shedder.thinking_in_flight
