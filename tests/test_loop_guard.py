from ponder.thinking.loop_guard import LoopGuard, text_units


def test_fires_on_repeating_trace():
    g = LoopGuard()
    trace = "First, 12 + 7. " + "Wait, let me check the sum again. " * 10
    fired_at = None
    for i, u in enumerate(text_units(trace)):
        if g.feed(u):
            fired_at = i
            break
    assert fired_at is not None
    # it fires after three repetitions of the 7-word block, not at the end
    assert fired_at < 4 + 7 * 4


def test_quiet_on_ordinary_reasoning():
    g = LoopGuard()
    trace = (
        "We need 12 plus 7. Twelve is ten plus two. Adding seven to two gives nine, "
        "so the total is ten plus nine which is nineteen. Check: 19 minus 7 is 12, correct. "
        "So the answer is 19 and nothing repeats here at all in this short explanation."
    )
    assert not g.feed_many(text_units(trace))


def test_single_token_runs_need_min_span():
    g = LoopGuard(min_span=24)
    assert not g.feed_many(["a"] * 23)
    assert g.feed("a")


def test_disabled_never_fires():
    g = LoopGuard(enabled=False)
    assert not g.feed_many(["x"] * 500)
