from ponder.thinking.split import ThinkSplitter, split_thinking


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
