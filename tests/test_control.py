"""Budget forcing, min thinking and the loop guard, on a scripted engine driven through the machine."""

import time

from ponder.backends.scripted import ScriptedBackend
from ponder.thinking import prompts
from ponder.thinking.machine import AnswerDelta, ThinkingDelta
from ponder.types import CancelToken, Deadline, Sampling, ThinkingBudget

from helpers import Q, sample

S = Sampling(seed=0, max_answer_tokens=20)


def long_thinking(words: int) -> str:
    return " ".join(f"step{i}" for i in range(words))


def test_hard_max_cuts_exactly_at_cap_and_still_answers():
    b = ScriptedBackend([long_thinking(200) + " </think> 19", "19"])
    g = sample(b, Q, ThinkingBudget(32), S)
    r = g.thinking_report
    assert r.used == 32 and g.usage.thinking_tokens == 32
    assert r.truncated and r.stopped == "budget"
    assert g.answer == "19"
    # the answer call saw the closed think block and the answer cue
    assert b.prompts[-1].endswith(prompts.CLOSE_THINKING + prompts.ANSWER_CUE)
    assert "step31" in g.thinking and "step32" not in g.thinking


def test_model_ending_early_is_not_truncated():
    b = ScriptedBackend(["short think </think> nineteen", "19"])
    g = sample(b, Q, ThinkingBudget(100), S)
    assert g.thinking == "short think"
    assert g.thinking_report.stopped == "end" and not g.thinking_report.truncated
    # the closing tag's token is generated and counted, never more than the cap
    assert g.usage.thinking_tokens == 3
    assert not b.prompts[-1].endswith(prompts.ANSWER_CUE)
    assert b.prompts[-1].endswith("short think" + prompts.CLOSE_THINKING)


def test_min_suppresses_early_end_with_wait():
    b = ScriptedBackend(["too short </think>", "more careful checking here now </think>", "19"])
    g = sample(b, Q, ThinkingBudget(100, min_tokens=6), S)
    r = g.thinking_report
    assert r.continuations == 1
    assert "Wait," in g.thinking
    # the continuation call saw the cue where the tag was, not the tag
    assert b.prompts[1].endswith("too short " + prompts.CONTINUE_CUE)
    assert r.used >= 6 and r.stopped == "end"
    assert g.answer == "19"


def test_min_also_applies_when_the_model_ends_its_turn_inside_the_think():
    b = ScriptedBackend(["too short", "and more words to reach it </think>", "19"])
    g = sample(b, Q, ThinkingBudget(100, min_tokens=5), S)
    assert g.thinking_report.continuations == 1 and g.answer == "19"


def test_min_never_pushes_past_cap():
    b = ScriptedBackend(["a b c </think>", "d e f g h i j k l m n o p </think>", "19"])
    g = sample(b, Q, ThinkingBudget(8, min_tokens=8), S)
    assert g.thinking_report.used <= 8


def test_loop_guard_fires_on_repeating_trace():
    trace = "Let me see. " + "Wait, I should check the sum again. " * 40 + "</think>"
    b = ScriptedBackend([trace, "19"])
    g = sample(b, Q, ThinkingBudget(1000), S)
    assert g.thinking_report.stopped == "repetition"
    assert g.thinking_report.used < 100
    assert g.answer == "19"


def test_effort_none_has_no_thinking_and_no_instruction():
    b = ScriptedBackend(["19"])
    g = sample(b, Q, ThinkingBudget(0), S)
    assert g.usage.thinking_tokens == 0 and g.thinking == ""
    assert g.thinking_report.stopped == "none"
    assert prompts.THINK_INSTRUCTION not in b.prompts[0]
    assert "<think>" not in b.prompts[0]


def test_native_reasoner_with_thinking_off_gets_empty_block():
    b = ScriptedBackend(["19"], native_reasoning=True)
    sample(b, Q, ThinkingBudget(0), S)
    assert b.prompts[0].endswith("<think>\n\n</think>\n\n")


def test_non_reasoner_is_prompted_to_think():
    b = ScriptedBackend(["ok </think>", "19"])
    sample(b, Q, ThinkingBudget(50), S)
    assert prompts.THINK_INSTRUCTION in b.prompts[0]
    assert b.prompts[0].endswith("<think>\n")


def test_events_stream_in_order():
    b = ScriptedBackend(["one two </think>", "nineteen it is"])
    events: list = []
    sample(b, Q, ThinkingBudget(50), S, events=events)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "ThinkingDelta" and kinds[-1] == "AnswerDelta"
    first_answer = kinds.index("AnswerDelta")
    assert all(k == "ThinkingDelta" for k in kinds[:first_answer])
    assert "".join(e.text for e in events if isinstance(e, AnswerDelta)) == "nineteen it is"
    used = [e.used for e in events if isinstance(e, ThinkingDelta)]
    assert used == sorted(used)


def test_answer_respects_reserved_tokens():
    b = ScriptedBackend(["t </think>", long_thinking(100)])
    g = sample(b, Q, ThinkingBudget(10), Sampling(max_answer_tokens=5))
    assert g.usage.answer_tokens == 5 and g.finish_reason == "length"


def test_cancel_stops_generation():
    cancel = CancelToken()
    b = ScriptedBackend([long_thinking(500), "19"])
    seen = []

    def on(e):
        seen.append(e)
        if len(seen) == 5:
            cancel.cancel()

    import asyncio

    from ponder.backends.base import SampleSpec

    g = asyncio.run(b.sample(SampleSpec(tuple(Q), ThinkingBudget(1000), S, cancel=cancel), on_event=on))
    assert g.finish_reason == "cancelled"
    assert g.usage.thinking_tokens <= 6
    assert g.thinking_report.stopped == "cancelled"


def test_deadline_cuts_thinking_and_still_answers():
    b = ScriptedBackend([long_thinking(400), "19"], delay_s=0.002)
    t0 = time.perf_counter()
    g = sample(b, Q, ThinkingBudget(1000), S, deadline=Deadline.after(0.15))
    assert time.perf_counter() - t0 < 2.0
    assert g.thinking_report.stopped == "deadline"
    assert 0 < g.usage.thinking_tokens < 400
    assert g.answer == "19"


def test_stop_strings_end_the_answer():
    b = ScriptedBackend(["ok </think>", "19 END and more text"])
    g = sample(b, Q, ThinkingBudget(10), Sampling(max_answer_tokens=20, stop=("END",)))
    assert g.answer == "19" and g.finish_reason == "stop"


def test_answer_inside_the_think_is_taken_from_the_thinking():
    # the model answers in its think, ends its turn, then writes only a stray tag as its "answer"
    b = ScriptedBackend(["The final answer to 0 + 5 + 7 is 12.", "</think>"])
    g = sample(b, Q, ThinkingBudget(64), S)
    assert g.answer_source == "thinking"
    assert "12" in g.answer and "</think>" not in g.answer


def test_reopened_think_in_the_answer_goes_back_to_the_thinking():
    b = ScriptedBackend(["short </think>", "<think>0 + 5 = 5</think>"])
    g = sample(b, Q, ThinkingBudget(64), S)
    assert "<think>" not in g.answer and "</think>" not in g.answer
    assert "0 + 5 = 5" in g.thinking
    assert g.answer_source == "thinking" and "5" in g.answer


# -- chat-only (hosted) backends -------------------------------------------------

def test_chat_backend_cut_at_cap_then_forced_answer():
    b = ScriptedBackend(["<think>" + long_thinking(300) + "</think> 19", "19"], text_completion=False)
    g = sample(b, Q, ThinkingBudget(20), S)
    assert g.thinking_report.used == 20 and g.thinking_report.truncated
    assert g.answer == "19"
    assert prompts.FORCED_ANSWER_INSTRUCTION in b.prompts[-1]


def test_chat_backend_reads_reported_reasoning_tokens():
    b = ScriptedBackend(["<think>a b c d</think>42"], text_completion=False, reasoning_field=True)
    g = sample(b, Q, ThinkingBudget(50), S)
    assert g.thinking == "a b c d" and g.answer == "42"
    assert g.usage.thinking_tokens == 4  # from the engine's usage
    assert g.thinking_report.stopped == "end"


def test_chat_backend_thinking_while_off_is_billed_as_answer_and_hidden():
    b = ScriptedBackend(["<think>x y z</think> 19"], text_completion=False)
    g = sample(b, Q, ThinkingBudget(0), S)
    assert g.thinking == "" and g.answer == "19"
    assert g.usage.thinking_tokens == 0
    assert g.usage.answer_tokens == 4  # the upstream billed 4: three hidden thinking units and the answer


def test_machine_rewrite_keeps_text_consistent():
    from ponder.thinking.machine import ThinkingMachine

    m = ThinkingMachine(ThinkingBudget(4), max_answer_tokens=5)
    for t in ["a", " b", " c"]:
        assert m.feed(t).kind == "continue"
    d = m.feed(" d")
    assert d.kind == "rewrite" and m.phase == "answer"
    assert m.text == "a b c d" + prompts.CLOSE_THINKING + prompts.ANSWER_CUE
    assert m.text[: d.keep] == "a b c d"


def test_structured_output_always_gets_its_answer_phase_even_after_a_stated_result():
    from ponder.thinking.machine import ThinkingMachine
    from ponder.types import ThinkingBudget

    def run(structured: bool):
        m = ThinkingMachine(ThinkingBudget(64), max_answer_tokens=32, structured=structured)
        for piece in ["12 + 7 = 19.", " The final answer is 19."]:
            m.feed(piece)
        d = m.end_of_turn()  # the model ends its turn inside the think, having stated its result
        return m, d

    plain, d = run(False)
    assert plain.phase == "done" and plain.final_answer()[1] == "thinking"  # without a grammar it ends there
    m, d = run(True)
    assert m.phase == "answer" and d.kind == "rewrite", "a grammar-bound answer needs its answer phase"
    for piece in ['{"result": ', "19}"]:
        m.feed(piece)
    m.end_of_turn()
    assert m.final_answer() == ('{"result": 19}', "answer")
