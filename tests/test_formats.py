from ponder.thinking.formats import get_format

split_thinking = get_format("think").split


def ThinkSplitter(**kw):
    return get_format("think").splitter(**kw)


def test_split_whole_text():
    assert split_thinking("<think>a b</think>\n\nanswer") == ("a b", "answer")
    assert split_thinking("already open </think> 42") == ("already open", "42")
    assert split_thinking("plain answer") == ("", "plain answer")


def _run(deltas, **kw):
    s = ThinkSplitter(**kw)
    out = []
    for d in deltas:
        out += s.feed(d)
    out += s.flush()
    joined = {"thinking": "", "answer": ""}
    for kind, text in out:
        joined[kind] += text
    return joined


def test_stream_split_with_tags_cut_across_deltas():
    got = _run(["<th", "ink>step ", "one</th", "ink>", "\n\nThe ", "answer"])
    assert got == {"thinking": "step one", "answer": "The answer"}


def test_stream_without_tags_is_all_answer():
    assert _run(["Hello", " there"]) == {"thinking": "", "answer": "Hello there"}


def test_stream_started_in_thinking():
    assert _run(["x y", "</think>", "z"], started_in_thinking=True) == {"thinking": "x y", "answer": "z"}


def test_never_leaks_partial_close_tag_into_thinking():
    s = ThinkSplitter(started_in_thinking=True)
    pieces = s.feed("abc</thi")
    assert pieces == [("thinking", "abc")]


# -- every registered format, on text fixtures (whole texts and every two-way cut of the stream) -------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from ponder.thinking.formats import FORMATS, detect_format  # noqa: E402

CASES = [json.loads(line) for line in (Path(__file__).parent / "fixtures" / "formats" / "cases.jsonl")
         .read_text().splitlines() if line.strip()]


def test_every_registered_format_has_fixtures():
    assert {c["format"] for c in CASES} == set(FORMATS) == {"think", "harmony"}


@pytest.mark.parametrize("case", CASES, ids=[f"{c['format']}: {c['source']}" for c in CASES])
def test_whole_text_split(case):
    fmt = get_format(case["format"])
    if case.get("started_in_thinking"):
        s = fmt.splitter(started_in_thinking=True)
        pieces = s.feed(case["text"]) + s.flush()
        got = ("".join(t for k, t in pieces if k == "thinking").strip(),
               "".join(t for k, t in pieces if k == "answer").strip())
    else:
        got = fmt.split(case["text"])
    assert got == (case["thinking"], case["answer"])


@pytest.mark.parametrize("case", CASES, ids=[f"{c['format']}: {c['source']}" for c in CASES])
def test_a_stream_cut_anywhere_splits_like_the_whole_text_and_never_leaks_a_marker(case):
    fmt = get_format(case["format"])
    text = case["text"]
    for cut in range(1, len(text)):
        s = fmt.splitter(started_in_thinking=bool(case.get("started_in_thinking")))
        pieces = s.feed(text[:cut]) + s.feed(text[cut:]) + s.flush()
        thinking = "".join(t for k, t in pieces if k == "thinking")
        answer = "".join(t for k, t in pieces if k == "answer")
        assert (thinking.strip(), answer.strip()) == (case["thinking"], case["answer"]), cut
        for piece in (thinking, answer):
            assert fmt.close not in piece and fmt.open not in piece and "<|message|>" not in piece


def test_writers_round_trip_through_their_own_parser():
    for fmt in FORMATS.values():
        assert fmt.split(fmt.block("  a step  ") + "the answer") == ("a step", "the answer")
        assert fmt.split(fmt.open_text + "cut here" + fmt.close_text + "42") == ("cut here", "42")
        assert fmt.split(fmt.empty_block + "hi") == ("", "hi")


def test_formats_are_detected_from_chat_templates():
    assert detect_format("{% if m.reasoning %}<think>{{ m.reasoning }}</think>{% endif %}").name == "think"
    assert detect_format("<|start|>assistant<|channel|>final<|message|>{{ content }}<|end|>").name == "harmony"
    assert detect_format("<|im_start|>{{ role }}\n{{ content }}<|im_end|>") is None


def test_an_upstream_lane_in_harmony_gets_thinking_and_answer_apart():
    """gpt-oss served without a reasoning parser streams channels in ``content``; the lane's format splits them."""
    from ponder.backends.deltas import DeltaParser, parse_message

    text = CASES[4]["text"]
    p = DeltaParser("harmony")
    pieces = [pc for i in range(0, len(text), 7) for pc in p.feed({"content": text[i:i + 7]})] + p.flush()
    assert "".join(pc.text for pc in pieces if pc.kind == "thinking").strip() == CASES[4]["thinking"]
    assert "".join(pc.text for pc in pieces if pc.kind == "answer").strip() == CASES[4]["answer"]
    assert sum(pc.tokens for pc in pieces) == -(-len(text) // 7)  # every delta's token is billed once
    assert parse_message({"content": text}, "harmony") == (CASES[4]["thinking"], CASES[4]["answer"])
    # the same text read as think tags is all answer: the lane's setting is what separates them
    assert parse_message({"content": text})[0] == ""
