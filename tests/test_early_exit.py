"""Early exit by probing: a settled trace stops thinking, a hedging one does not, probes are billed."""

from __future__ import annotations

import asyncio

import pytest

from ponder.backends.scripted import ScriptedBackend
from ponder.config import config_from_dict
from ponder.errors import InvalidRequest
from ponder.request import PonderRequest
from ponder.service import Ponder
from ponder.strategies.probe import EarlyExit, hedges, settled
from ponder.thinking import prompts
from ponder.types import Message


def engine(answer: str, thinking: str = " ".join(f"w{i}" for i in range(500))):
    """Thinks forever (never closes its think); every answer phase (probe or real) answers ``answer``."""
    seen = {"prompts": []}

    def respond(prompt: str) -> str:
        seen["prompts"].append(prompt)
        if prompt.endswith(prompts.CLOSE_THINKING) or prompt.endswith(prompts.ANSWER_CUE):
            return answer
        return thinking
    b = ScriptedBackend(respond)
    b.seen = seen
    return b


def ask(backend, **kw):
    cfg = config_from_dict({"lanes": [{"name": "default", "prices": {"input_per_1m": 1.0, "output_per_1m": 10.0}}],
                            "ledger": {"url": "off"}})
    svc = Ponder(cfg, backends={"default": backend})
    plan = svc.prepare_sync(PonderRequest((Message("user", "What is 6 * 7?"),), max_thinking_tokens=200, **kw))
    return plan, asyncio.run(svc.run(plan).execute())


def test_a_settled_trace_stops_thinking_after_agreeing_probes():
    plan, out = ask(engine("The answer is 42."), early_exit={"probe_every": 16, "agree": 2, "probe_tokens": 8})
    g = out.results[0].chosen
    rep = g.thinking_report
    assert rep.stopped == "settled" and rep.used == 32 and rep.probes == 2
    assert g.answer == "The answer is 42."
    # the probes' answer tokens are thinking spent on control: in usage, priced, and said; the last probe, which
    # finished within its tokens, is the answer
    assert rep.probe_tokens == 4 and out.usage.thinking_tokens == 32 + 4 and out.usage.answer_tokens == 4
    assert out.cost_usd == pytest.approx((out.usage.input_tokens * 1.0 + out.usage.completion_tokens * 10.0) / 1e6)
    # the same request without probes thinks to its cap
    _, full = ask(engine("The answer is 42."))
    assert full.results[0].chosen.thinking_report.used == 200
    assert out.usage.thinking_tokens < full.usage.thinking_tokens


def test_a_probe_cut_at_its_tokens_is_followed_by_the_real_answer():
    b = engine("42 is the final answer here, for sure.")
    _, out = ask(b, early_exit={"probe_every": 16, "agree": 2, "probe_tokens": 4})
    rep = out.results[0].chosen.thinking_report
    assert rep.stopped == "settled" and rep.probe_tokens == 2 * 4
    assert out.results[0].chosen.answer == "42 is the final answer here, for sure."  # in full, from the thinking
    assert b.seen["prompts"][-1].endswith(prompts.CLOSE_THINKING) or b.seen["prompts"][-1].endswith(prompts.ANSWER_CUE)


def test_a_hedging_trace_is_not_stopped():
    _, out = ask(engine("Maybe 42?"), early_exit={"probe_every": 16, "agree": 2, "probe_tokens": 8})
    rep = out.results[0].chosen.thinking_report
    assert rep.stopped == "budget" and rep.used == 200 and rep.probe_tokens > 0


def test_probes_that_disagree_keep_it_thinking():
    answers = iter(["7", "8", "9", "10", "11", "12"] + ["42"] * 50)
    b = ScriptedBackend(lambda p: next(answers) if p.endswith(prompts.CLOSE_THINKING) or
                        p.endswith(prompts.ANSWER_CUE) else " ".join(f"w{i}" for i in range(500)))
    _, out = ask(b, early_exit={"probe_every": 16, "agree": 2})
    rep = out.results[0].chosen.thinking_report
    assert rep.stopped == "settled" and rep.used == 16 * 8 and rep.probes == 8  # six different probes, two 42s


def test_each_segment_thinks_on_from_the_text_so_far():
    b = engine("The answer is 42.", thinking="alpha beta gamma delta " * 100)
    ask(b, early_exit={"probe_every": 8, "agree": 2})
    thinking_calls = [p for p in b.seen["prompts"] if not (p.endswith(prompts.CLOSE_THINKING) or
                                                            p.endswith(prompts.ANSWER_CUE))]
    assert len(thinking_calls) >= 2
    # the second segment's prompt is the first one's plus the first segment's thinking, left open
    assert thinking_calls[1].startswith(thinking_calls[0]) and thinking_calls[1].rstrip().endswith("delta")


def test_the_option_is_checked_and_needs_a_text_engine():
    assert EarlyExit.of(True) == EarlyExit() and EarlyExit.of(False) is None
    with pytest.raises(InvalidRequest):
        EarlyExit.of({"probe_every": 2})
    with pytest.raises(InvalidRequest):
        EarlyExit.of({"every": 64})
    chat = ScriptedBackend(["x"], text_completion=False)
    cfg = config_from_dict({"lanes": [{"name": "up", "backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                                       "capabilities": "chat"}], "ledger": {"url": "off"}})
    with pytest.raises(InvalidRequest, match="text_completion"):
        Ponder(cfg, backends={"up": chat}).prepare_sync(PonderRequest((Message("user", "q"),), early_exit=True))


def test_hedges_and_settled():
    assert hedges("Maybe 42?") and hedges("I think it is 42") and not hedges("The answer is 42.")
    same = lambda a, b: a == b  # noqa: E731
    assert settled(["1", "42", "42"], 2, same) and not settled(["42", None, "42"], 2, same)
    assert not settled(["42"], 2, same) and settled(["42"], 1, same)
