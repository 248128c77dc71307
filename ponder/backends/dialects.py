"""How one engine family spells raw completions: the request body, a streamed piece, how a call ended.

:class:`LlamaServerDialect` speaks llama.cpp's ``llama-server`` native
``/completion``; :class:`VLLMDialect` and :class:`SGLangDialect` speak the
OpenAI ``/v1/completions`` endpoint with each engine's own extra fields
(their documentation: vLLM's "OpenAI-Compatible Server" extra parameters and
``structured_outputs``; SGLang's OpenAI API with ``ebnf``/``top_k``/
``min_p``).  Every dialect answers the same questions, so the driver
(:mod:`ponder.backends.text_driver`) never asks which engine it talks to:

* ``path`` and ``completion_body(...)``: one continuation of a text;
* ``read(obj)``: the piece a streamed chunk carries and, when it is the
  last, how the call ended (:class:`CallEnd`);
* ``result(obj)``: a non-streamed call's text and end;
* ``top_candidates(obj)``: the next token's alternatives (model judges, PRMs),
  by token id (llama-server) or by token text (OpenAI dialects).
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


class TokenTally:
    """Tokens that arrive without text are held and counted with the next piece of text: the first bytes of a
    character split across tokens get their text later, while the end-of-turn token (llama-server streams it as
    an empty piece) never does — held when the call ends, it is not counted, as the embedded engine does not
    count it either, so a thinking budget stays exact."""

    def __init__(self) -> None:
        self.held = 0

    def take(self, piece: "Piece | None") -> "Piece | None":
        if piece is None:
            return None
        if not piece.text:
            self.held += piece.tokens
            return None
        if self.held:
            piece, self.held = Piece(piece.text, piece.tokens + self.held, piece.logprob), 0
        return piece


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
    path = "/completion"
    #: llama-server pins a call to one of its slots (``id_slot``): its prompt cache is per slot
    pins_slots = True
    #: next-token alternatives come back with token ids
    scores_by_id = True
    #: one call prefills a prompt once for several samples (``n_cmpl`` children: ponder.backends.text_group)
    groups = True

    def __init__(self, model: str = "default") -> None:
        self.model = model  # (llama-server serves one model: its bodies do not name it)

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
        if stream:
            # the first streamed piece then says what was prefilled and reused, even if ponder closes the stream
            body["timings_per_token"] = True
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
        # timings.cache_n: prompt tokens this call reused from the slot's cache (0 is an answer, not a gap);
        # tokens_cached is the cache's size after the call (prompt and generated), not what was reused
        return CallEnd(reason, obj.get("stopping_word") or None, int(obj.get("tokens_evaluated") or 0),
                       int(t.get("cache_n") or 0), int(obj.get("tokens_predicted") or 0))

    def read(self, obj: dict) -> tuple[Piece | None, CallEnd | None]:
        return self.piece(obj), (self.end(obj) if obj.get("stop") else None)

    def counts(self, obj: dict) -> CallEnd | None:
        """The prompt counts a streamed piece carries before the call ends (``timings_per_token``)."""
        if obj.get("stop") or "timings" not in obj:
            return None
        return CallEnd("stop", None, int(obj.get("tokens_evaluated") or 0), int(obj["timings"].get("cache_n") or 0))

    def result(self, obj: dict) -> tuple[str, CallEnd]:
        return obj.get("content") or "", self.end(obj)

    def score_body(self, prompt: str, n: int) -> dict:
        body = self.completion_body(prompt, max_tokens=1, sampling=Sampling(temperature=0.0), stop=(), n_probs=n,
                                    grammar=None, stream=False)
        body["post_sampling_probs"] = False
        return body

    def top_candidates(self, obj: dict) -> dict:
        top = ((obj.get("completion_probabilities") or [{}])[0] or {}).get("top_logprobs") or []
        return {int(t["id"]): float(t["logprob"]) for t in top if "id" in t and "logprob" in t}

    def tokenize_body(self, text: str) -> dict:
        return {"content": text, "add_special": False}


class OpenAICompletionsDialect:
    """An engine's OpenAI ``/v1/completions``: streamed ``choices[0].text`` chunks, ``usage`` in the last one.

    Token counts are exact: every call asks for ``logprobs`` (at least 1), so each chunk lists its tokens
    (engines may coalesce several tokens into one chunk).  Subclasses add their engine's extra fields.
    """

    name = "openai-completions"
    path = "/v1/completions"
    pins_slots = False
    scores_by_id = False
    #: most alternatives the engine returns per token (vLLM's default ``--max-logprobs``)
    max_logprobs = 20

    def __init__(self, model: str = "default") -> None:
        self.model = model

    def completion_body(self, prompt: str, *, max_tokens: int, sampling: Sampling, stop: Sequence[str],
                        n_probs: int, grammar: str | None, stream: bool, slot: int | None = None) -> dict:
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "max_tokens": max(1, max_tokens),
                                "stream": stream, "temperature": sampling.temperature, "top_p": sampling.top_p,
                                "top_k": sampling.top_k, "min_p": 0.0,
                                "logprobs": max(1, min(n_probs, self.max_logprobs))}
        if stop:
            body["stop"] = list(stop)
        if stream:
            body["stream_options"] = {"include_usage": True}
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if grammar:
            body.update(self.grammar_fields(grammar))
        return body

    def grammar_fields(self, grammar: str) -> dict:  # pragma: no cover - each engine names its own
        raise NotImplementedError

    def read(self, obj: dict) -> tuple[Piece | None, CallEnd | None]:
        choices = obj.get("choices") or []
        piece, end = None, None
        if choices:
            c = choices[0]
            text = c.get("text") or ""
            lp = c.get("logprobs") or {}
            toks = lp.get("tokens") or []
            tokens = len(toks) or (1 if text else 0)
            logprob = None
            if len(toks) == 1 and (lp.get("token_logprobs") or [None])[0] is not None:
                tops = (lp.get("top_logprobs") or [None])[0] or {}
                logprob = TokenLogprob(toks[0], float(lp["token_logprobs"][0]),
                                       tuple(sorted(((t, float(v)) for t, v in tops.items()), key=lambda x: -x[1])))
            if text or tokens:
                piece = Piece(text, tokens, logprob)
            if c.get("finish_reason"):
                end = self._end(c, obj.get("usage"))
        elif obj.get("usage"):  # the usage-only chunk that closes a stream with include_usage
            end = self._end({}, obj["usage"])
        return piece, end

    def _end(self, choice: dict, usage: dict | None) -> CallEnd:
        u = usage or {}
        stop_reason = choice.get("stop_reason")
        reason = {"length": "length"}.get(choice.get("finish_reason") or "", "stop")
        if isinstance(stop_reason, str):
            reason = "word"
        details = u.get("prompt_tokens_details") or {}
        return CallEnd(reason, stop_reason if isinstance(stop_reason, str) else None, int(u.get("prompt_tokens") or 0),
                       int(details.get("cached_tokens") or 0), int(u.get("completion_tokens") or 0))

    def counts(self, obj: dict) -> CallEnd | None:
        return None  # the usage arrives with the last chunk only

    def result(self, obj: dict) -> tuple[str, CallEnd]:
        c = (obj.get("choices") or [{}])[0]
        return c.get("text") or "", self._end(c, obj.get("usage"))

    def score_body(self, prompt: str, n: int) -> dict:
        return self.completion_body(prompt, max_tokens=1, sampling=Sampling(temperature=0.0), stop=(),
                                    n_probs=n, grammar=None, stream=False)

    def top_candidates(self, obj: dict) -> dict:
        c = (obj.get("choices") or [{}])[0]
        tops = ((c.get("logprobs") or {}).get("top_logprobs") or [None])[0] or {}
        return {str(t): float(v) for t, v in tops.items()}

    def tokenize_body(self, text: str) -> dict:
        return {"model": self.model, "prompt": text, "add_special_tokens": False}


class VLLMDialect(OpenAICompletionsDialect):
    """vLLM: grammar in ``structured_outputs`` (v0.12 and later; ``guided_grammar`` before), prefix caching on
    by default (``cached_tokens`` reported with ``--enable-prompt-tokens-details``)."""

    name = "vllm"

    def grammar_fields(self, grammar: str) -> dict:
        return {"structured_outputs": {"grammar": grammar}}


class SGLangDialect(OpenAICompletionsDialect):
    """SGLang: an EBNF grammar in ``ebnf`` (xgrammar takes llama.cpp's GBNF), RadixAttention prefix caching."""

    name = "sglang"

    def grammar_fields(self, grammar: str) -> dict:
        return {"ebnf": grammar}


#: dialects by engine family (the probe picks one)
DIALECTS = {"llama-server": LlamaServerDialect, "vllm": VLLMDialect, "sglang": SGLangDialect}


#: how an engine takes a request's scheduling class (rank 0 interactive, 1 standard, 2 batch) in its body:
#: vLLM (``--scheduling-policy priority``): ``priority``, lower first; SGLang (``--enable-priority-scheduling``):
#: ``priority``, higher first (its default order).  llama-server has no request priority.
PRIORITY_FIELDS = {"vllm": lambda rank: {"priority": rank}, "sglang": lambda rank: {"priority": 2 - rank}}


def priority_fields(mode: str, sched: tuple | None) -> dict:
    """The body fields that carry a sample's class to an engine that schedules by priority (none otherwise)."""
    if sched is None or mode not in PRIORITY_FIELDS:
        return {}
    return PRIORITY_FIELDS[mode](int(sched[0]))
