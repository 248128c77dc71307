"""Budget forcing, min thinking and the loop guard, on a scripted engine."""

from ponder.backends.scripted import ScriptedBackend
from ponder.thinking import control, prompts
from ponder.thinking.control import AnswerDelta, Finished, ThinkingDelta
from ponder.types import Message, Sampling, ThinkingBudget

Q = [Message("user", "What is 12 + 7?")]
S = Sampling(seed=0, max_answer_tokens=20)


def long_thinking(words: int) -> str:
    return " ".join(f"step{i}" for i in range(words))


def test_hard_max_cuts_exactly_at_cap_and_still_answers():
    b = ScriptedBackend([long_thinking(200) + " </think> 19", "19"])
    g = control.run(b, Q, ThinkingBudget(32), S)
    r = g.thinking_report
    assert r.used == 32 and g.usage.thinking_tokens == 32
    assert r.truncated and r.stopped == "budget"
    assert g.answer == "19"
    # the answer call saw the closed think block and the answer cue
    assert b.prompts[-1].endswith(prompts.CLOSE_THINKING + prompts.ANSWER_CUE)
    assert "step31" in g.thinking and "step32" not in g.thinking


def test_model_ending_early_is_not_truncated():
    b = ScriptedBackend(["short think </think> nineteen", "19"])
    g = control.run(b, Q, ThinkingBudget(100), S)
    assert g.thinking == "short think"
    assert g.thinking_report.stopped == "end" and not g.thinking_report.truncated
    # the closing tag's token is generated and counted, never more than the cap
    assert g.usage.thinking_tokens == 3
    assert not b.prompts[-1].endswith(prompts.ANSWER_CUE)


def test_min_suppresses_early_end_with_wait():
    b = ScriptedBackend(["too short </think>", "more careful checking here now </think>", "19"])
    g = control.run(b, Q, ThinkingBudget(100, min_tokens=6), S)
    r = g.thinking_report
    assert r.continuations == 1
    assert "Wait," in g.thinking
    assert r.used >= 6 and r.stopped == "end"
    assert g.answer == "19"


def test_min_never_pushes_past_cap():
    b = ScriptedBackend(["a b c </think>", "d e f g h i j k l m n o p </think>", "19"])
    g = control.run(b, Q, ThinkingBudget(8, min_tokens=8), S)
    assert g.thinking_report.used <= 8


def test_loop_guard_fires_on_repeating_trace():
    trace = "Let me see. " + "Wait, I should check the sum again. " * 40 + "</think>"
    b = ScriptedBackend([trace, "19"])
    g = control.run(b, Q, ThinkingBudget(1000), S)
    assert g.thinking_report.stopped == "repetition"
    assert g.thinking_report.used < 100
    assert g.answer == "19"


def test_effort_none_has_no_thinking_and_no_instruction():
    b = ScriptedBackend(["19"])
    g = control.run(b, Q, ThinkingBudget(0), S)
    assert g.usage.thinking_tokens == 0 and g.thinking == ""
    assert g.thinking_report.stopped == "none"
    assert prompts.THINK_INSTRUCTION not in b.prompts[0]
    assert "<think>" not in b.prompts[0]


def test_native_reasoner_with_thinking_off_gets_empty_block():
    b = ScriptedBackend(["19"], native_reasoning=True)
    control.run(b, Q, ThinkingBudget(0), S)
    assert b.prompts[0].endswith("<think>\n\n</think>\n\n")


def test_non_reasoner_is_prompted_to_think():
    b = ScriptedBackend(["ok </think>", "19"])
    control.run(b, Q, ThinkingBudget(50), S)
    assert prompts.THINK_INSTRUCTION in b.prompts[0]
    assert b.prompts[0].endswith("<think>\n")


def test_events_stream_in_order():
    b = ScriptedBackend(["one two </think>", "nineteen it is"])
    events = list(control.generate(b, Q, ThinkingBudget(50), S))
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "ThinkingDelta" and kinds[-1] == "Finished"
    first_answer = kinds.index("AnswerDelta")
    assert all(k == "ThinkingDelta" for k in kinds[:first_answer])
    assert "".join(e.text for e in events if isinstance(e, AnswerDelta)) == "nineteen it is"
    used = [e.used for e in events if isinstance(e, ThinkingDelta)]
    assert used == sorted(used)


def test_answer_respects_reserved_tokens():
    b = ScriptedBackend(["t </think>", long_thinking(100)])
    g = control.run(b, Q, ThinkingBudget(10), Sampling(max_answer_tokens=5))
    assert g.usage.answer_tokens == 5 and g.finish_reason == "length"


def test_cancel_stops_generation():
    from ponder.types import CancelToken

    cancel = CancelToken()
    b = ScriptedBackend([long_thinking(500), "19"])
    seen = 0
    for ev in control.generate(b, Q, ThinkingBudget(1000), S, cancel=cancel):
        if isinstance(ev, ThinkingDelta):
            seen += 1
            if seen == 5:
                cancel.cancel()
        if isinstance(ev, Finished):
            g = ev.generation
    assert g.finish_reason == "cancelled"
    assert g.usage.thinking_tokens <= 6


# -- chat-only (hosted) backends -------------------------------------------------

def test_chat_backend_cut_at_cap_then_forced_answer():
    b = ScriptedBackend(["<think>" + long_thinking(300) + "</think> 19", "19"], text_completion=False)
    g = control.run(b, Q, ThinkingBudget(20), S)
    assert g.thinking_report.used == 20 and g.thinking_report.truncated
    assert g.answer == "19"
    assert prompts.FORCED_ANSWER_INSTRUCTION in b.prompts[-1]


def test_chat_backend_reads_reported_reasoning_tokens():
    b = ScriptedBackend(["<think>a b c d</think>42"], text_completion=False, reasoning_field=True)
    g = control.run(b, Q, ThinkingBudget(50), S)
    assert g.thinking == "a b c d" and g.answer == "42"
    assert g.usage.thinking_tokens == 4  # from the engine's usage
    assert g.thinking_report.stopped == "end"
