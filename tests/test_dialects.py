"""vLLM and SGLang raw-completion dialects: the exact bodies ponder sends for each capability (written from their
documentation), how their streamed chunks are read, and the thinking machine driving a stand-in of each."""

from __future__ import annotations

import asyncio
import json

import pytest

from ponder.backends.dialects import LlamaServerDialect, SGLangDialect, VLLMDialect, priority_fields
from ponder.types import Sampling

S = Sampling(temperature=0.7, top_p=0.9, top_k=40, seed=11)


def test_vllm_completion_bodies_per_capability():
    d = VLLMDialect("Qwen/Qwen3-8B")
    thinking = d.completion_body("<|im_start|>user\nHi", max_tokens=96, sampling=S, stop=(), n_probs=0,
                                 grammar=None, stream=True)
    assert thinking == {"model": "Qwen/Qwen3-8B", "prompt": "<|im_start|>user\nHi", "max_tokens": 96,
                        "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.7,
                        "top_p": 0.9, "top_k": 40, "min_p": 0.0, "seed": 11, "logprobs": 1}
    answer = d.completion_body("p", max_tokens=8, sampling=S, stop=("\n",), n_probs=5, grammar='root ::= "a"',
                               stream=True)
    assert answer["structured_outputs"] == {"grammar": 'root ::= "a"'}  # v0.12+: guided_grammar is gone
    assert answer["stop"] == ["\n"] and answer["logprobs"] == 5
    assert d.completion_body("p", max_tokens=8, sampling=S, stop=(), n_probs=99, grammar=None,
                             stream=False)["logprobs"] == 20  # vLLM's default --max-logprobs
    assert "stream_options" not in d.completion_body("p", max_tokens=8, sampling=S, stop=(), n_probs=0,
                                                     grammar=None, stream=False)
    assert d.score_body("p", 50)["max_tokens"] == 1 and d.score_body("p", 50)["temperature"] == 0.0
    assert VLLMDialect("m").tokenize_body("Wait,") == {"model": "m", "prompt": "Wait,", "add_special_tokens": False}
    assert priority_fields("vllm", (0, "k", 1.0)) == {"priority": 0}
    assert d.path == "/v1/completions" and not d.pins_slots


def test_sglang_completion_bodies_per_capability():
    d = SGLangDialect("m")
    body = d.completion_body("p", max_tokens=8, sampling=S, stop=(), n_probs=0, grammar='root ::= "a"',
                             stream=True)
    assert body["ebnf"] == 'root ::= "a"' and "structured_outputs" not in body
    assert body["top_k"] == 40 and body["min_p"] == 0.0 and body["logprobs"] == 1
    assert priority_fields("sglang", (0, "k", 1.0)) == {"priority": 2}
    assert d.path == "/v1/completions"


def test_llama_server_body_is_unchanged_by_the_new_dialects():
    b = LlamaServerDialect().completion_body("p", max_tokens=8, sampling=S, stop=(), n_probs=0, grammar=None,
                                             stream=True, slot=2)
    assert b["n_predict"] == 8 and b["cache_prompt"] is True and b["id_slot"] == 2 and "model" not in b
    assert b["timings_per_token"] is True  # the first piece then carries the prompt counts


def test_openai_completion_chunks_are_read_token_exact():
    d = VLLMDialect("m")
    piece, end = d.read({"choices": [{"index": 0, "text": " the", "finish_reason": None, "logprobs": {
        "tokens": [" the"], "token_logprobs": [-0.5], "top_logprobs": [{" the": -0.5, " a": -1.5}]}}]})
    assert piece.text == " the" and piece.tokens == 1 and end is None
    assert piece.logprob.logprob == -0.5 and piece.logprob.top == ((" the", -0.5), (" a", -1.5))
    # an engine that coalesced two tokens into one chunk: both counted
    piece, _ = d.read({"choices": [{"text": "ab", "logprobs": {"tokens": ["a", "b"], "token_logprobs": [-1, -2]}}]})
    assert piece.tokens == 2 and piece.logprob is None
    _, end = d.read({"choices": [{"text": "", "finish_reason": "length"}]})
    assert end.reason == "length"
    _, end = d.read({"choices": [{"text": "", "finish_reason": "stop", "stop_reason": "</answer>"}]})
    assert end.reason == "word" and end.stopping_word == "</answer>"
    _, end = d.read({"choices": [], "usage": {"prompt_tokens": 300, "completion_tokens": 7,
                                              "prompt_tokens_details": {"cached_tokens": 256}}})
    assert (end.prompt_tokens, end.cached_tokens, end.predicted) == (300, 256, 7)
    text, end = d.result({"choices": [{"text": "42", "finish_reason": "stop"}], "usage": {"prompt_tokens": 5}})
    assert text == "42" and end.reason == "stop" and end.prompt_tokens == 5


THINK = "Let me think: three plus four; count three, then four more: five, six, seven. So it is seven. "


def _reply(prompt: str) -> str:
    turn = prompt.rsplit("<|im_start|>assistant", 1)[-1]
    return "The answer is 7." if "</think>" in turn else THINK


@pytest.fixture
def template(tmp_path):
    from fake_llama import CHATML

    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps({"chat_template": CHATML, "bos_token": None,
                                "eos_token": {"content": "<|im_end|>"}}))
    return str(path)


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_an_engine_lane_thinks_exactly_the_cap_and_continues_one_text(flavor, template):
    from fake_llama import FakeLlamaServer

    from ponder.backends.base import SampleSpec
    from ponder.backends.probe import text_engine_or_none
    from ponder.config import LaneConfig
    from ponder.types import Message, ThinkingBudget

    fake = FakeLlamaServer(_reply, flavor=flavor)
    try:
        lane = LaneConfig(name="e", backend="openai", base_url=fake.url, chat_template=template)
        backend = text_engine_or_none(lane)
        assert backend is not None and backend.dialect.name == flavor and backend.info.context_length == 4096
        spec = SampleSpec((Message("user", "What is 3 + 4?"),), ThinkingBudget(40),
                          Sampling(seed=1, max_answer_tokens=32, grammar='root ::= [^\\n]+'))
        g = asyncio.run(backend.sample(spec))
        # uncapped, the first call runs to its end and its usage chunk reports the engine's counts
        whole = asyncio.run(backend.sample(SampleSpec(spec.messages, ThinkingBudget(400), spec.sampling)))
    finally:
        fake.close()
    assert (whole.usage.prompt_tokens, whole.usage.cached_prompt_tokens) == (10, 8)
    assert g.usage.thinking_tokens == 40 and g.thinking_report.truncated  # one character a token: exact
    assert g.answer.strip() == "The answer is 7."
    first, answer = fake.bodies[0], fake.bodies[1]
    assert answer["prompt"].startswith(first["prompt"])                   # the same text, continued
    assert answer["prompt"][len(first["prompt"]):].startswith(THINK[:40])  # ...with exactly what was thought
    grammar_field = "structured_outputs" if flavor == "vllm" else "ebnf"
    assert grammar_field not in first and grammar_field in answer         # the grammar only after the thinking
    assert all(b["model"] == "fake-model" for b in fake.bodies)           # the engine's model id, from /v1/models


def test_vllm_without_a_chat_template_stays_a_chat_lane():
    from fake_llama import FakeLlamaServer

    from ponder.backends.probe import text_engine_or_none
    from ponder.config import LaneConfig

    fake = FakeLlamaServer(_reply, flavor="vllm")
    try:
        assert text_engine_or_none(LaneConfig(name="e", backend="openai", base_url=fake.url)) is None
    finally:
        fake.close()


def test_judges_score_next_tokens_by_text_on_openai_engines(template):
    from fake_llama import FakeLlamaServer

    from ponder.backends.probe import text_engine_or_none
    from ponder.config import LaneConfig

    fake = FakeLlamaServer(lambda p: "Yes", flavor="vllm")
    try:
        backend = text_engine_or_none(LaneConfig(name="e", backend="openai", base_url=fake.url,
                                                 chat_template=template))
        scores = asyncio.run(backend.next_token_logprobs("Is it right?", ["Y", "N"]))
    finally:
        fake.close()
    assert scores == {"Y": -0.1, "N": float("-inf")}
    assert fake.bodies[-1]["max_tokens"] == 1 and fake.bodies[-1]["logprobs"] == 20


def test_ponder_lanes_names_the_engine_it_found(template, tmp_path):
    import subprocess
    import sys

    import yaml
    from fake_llama import FakeLlamaServer

    fake = FakeLlamaServer(_reply, flavor="sglang")
    try:
        cfg = tmp_path / "ponder.yaml"
        cfg.write_text(yaml.safe_dump({"lanes": [
            {"name": "sg", "backend": "openai", "base_url": fake.url, "chat_template": template},
            {"name": "plain", "backend": "openai", "base_url": fake.url}]}))
        p = subprocess.run([sys.executable, "-m", "ponder.cli", "lanes", "--config", str(cfg), "--json"],
                           capture_output=True, text=True, timeout=60)
    finally:
        fake.close()
    assert p.returncode == 0, p.stderr
    rows = {r["lane"]: r for r in json.loads(p.stdout)}
    assert rows["sg"]["dialect"] == "sglang" and "text_completion" in rows["sg"]["capabilities"]
    assert rows["plain"]["dialect"] is None and "text_completion" not in rows["plain"]["capabilities"]


def test_a_token_without_text_counts_with_the_next_text_and_not_at_the_end():
    from ponder.backends.dialects import Piece, TokenTally

    t = TokenTally()
    assert t.take(Piece("", 1)) is None                  # the first bytes of a split character...
    assert t.take(Piece("\u00e9", 1)).tokens == 2        # ...count with the text that completes it
    assert t.take(Piece("", 1)) is None                  # the end-of-turn token: held, and the call ends
    assert t.take(None) is None


def test_llama_server_reports_reused_prompt_tokens_not_its_cache_size():
    """From a real llama-server final chunk (fresh prompt, 373 prompt tokens, 32 generated): ``cache_n`` 0 means
    nothing was reused; ``tokens_cached`` (prompt and generated now in the slot) is not a reuse count."""
    end = LlamaServerDialect().end({"stop": True, "stop_type": "eos", "tokens_evaluated": 373, "tokens_cached": 404,
                                    "tokens_predicted": 32, "timings": {"cache_n": 0, "prompt_n": 373}})
    assert (end.prompt_tokens, end.cached_tokens, end.predicted) == (373, 0, 32)
    again = LlamaServerDialect().end({"stop": True, "tokens_evaluated": 407, "tokens_cached": 412,
                                      "timings": {"cache_n": 404, "prompt_n": 3}})
    assert again.cached_tokens == 404
