"""How one engine family spells raw completions: the request body, a streamed piece, how a call ended.

:class:`LlamaServerDialect` speaks llama.cpp's ``llama-server`` native
``/completion``; vLLM's and SGLang's dialects belong here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ponder.types import Sampling, TokenLogprob


@dataclass
class Piece:
    """One streamed step of a completion: its text, tokens and their log-probability."""

    text: str
    tokens: int
    logprob: TokenLogprob | None = None


@dataclass
class CallEnd:
    """How a completion call ended, as the engine reports it."""

    reason: str = "stop"  # stop (end of turn) | length | word (a stop string) | cancelled
    stopping_word: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    predicted: int = 0


class LlamaServerDialect:
    """llama.cpp's ``llama-server``: ``/props`` for the template, native ``/completion`` and ``/tokenize``."""

    name = "llama-server"

    def completion_body(self, prompt: str, *, max_tokens: int, sampling: Sampling, stop: Sequence[str],
                        n_probs: int, grammar: str | None, stream: bool, slot: int | None = None) -> dict:
        body: dict[str, Any] = {"prompt": prompt, "n_predict": max(1, max_tokens), "stream": stream,
                                "cache_prompt": True, "temperature": sampling.temperature, "top_p": sampling.top_p,
                                "top_k": sampling.top_k, "min_p": 0.0, "stop": list(stop), "return_tokens": True}
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if n_probs:
            body["n_probs"] = n_probs
        if grammar:
            body["grammar"] = grammar
        if slot is not None:
            body["id_slot"] = slot
        return body

    def piece(self, obj: dict) -> Piece | None:
        text = obj.get("content") or ""
        tokens = len(obj.get("tokens") or ()) or (1 if text else 0)
        lp = None
        probs = obj.get("completion_probabilities") or []
        if probs and isinstance(probs[0], dict) and "logprob" in probs[0]:
            p = probs[0]
            top = tuple((t.get("token", ""), float(t.get("logprob", 0.0))) for t in p.get("top_logprobs") or ())
            lp = TokenLogprob(p.get("token", text), float(p["logprob"]), top)
        return Piece(text, tokens, lp) if (text or tokens) else None

    def end(self, obj: dict) -> CallEnd:
        t = obj.get("timings") or {}
        kind = obj.get("stop_type") or ("eos" if obj.get("stopped_eos") else "")
        reason = {"eos": "stop", "limit": "length", "word": "word"}.get(kind, "stop")
        return CallEnd(reason, obj.get("stopping_word") or None, int(obj.get("tokens_evaluated") or 0),
                       int(t.get("cache_n") or obj.get("tokens_cached") or 0), int(obj.get("tokens_predicted") or 0))


#: how an engine takes a request's scheduling class (rank 0 interactive, 1 standard, 2 batch) in its body:
#: vLLM (``--scheduling-policy priority``): ``priority``, lower first; SGLang (``--enable-priority-scheduling``):
#: ``priority``, higher first (its default order).  llama-server has no request priority.
PRIORITY_FIELDS = {"vllm": lambda rank: {"priority": rank}, "sglang": lambda rank: {"priority": 2 - rank}}


def priority_fields(mode: str, sched: tuple | None) -> dict:
    """The body fields that carry a sample's class to an engine that schedules by priority (none otherwise)."""
    if sched is None or mode not in PRIORITY_FIELDS:
        return {}
    return PRIORITY_FIELDS[mode](int(sched[0]))
