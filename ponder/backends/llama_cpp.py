"""The embedded engine: llama-cpp-python in-process.

One ``Llama`` context is not thread-safe, so every use goes through one
re-entrant lock, and a whole sample (think, continue, answer) holds it via
:meth:`LlamaCppBackend.exclusive` so no other request can evict its state in
between.  ``Llama.generate`` keeps the evaluated tokens and re-evaluates only
what follows the longest common prefix, so N samples of one prompt, or the
answer phase after a think, pay for the prompt once.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import random
import threading
from pathlib import Path
from typing import Iterator, Sequence

from ponder.backends.base import Backend, BackendInfo, ChatPiece
from ponder.backends.models import model_label, resolve_model
from ponder.errors import BackendError, ContextOverflow
from ponder.thinking.split import ThinkSplitter, partial_suffix
from ponder.types import CancelToken, CompletionStats, Message, Piece, Sampling


class LlamaCppBackend(Backend):
    """A GGUF model run by llama.cpp in this process."""

    def __init__(
        self,
        model: str | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        name: str = "embedded",
    ) -> None:
        path = resolve_model(model)
        try:
            from llama_cpp import Llama
            import llama_cpp as _lc
        except ImportError as exc:  # pragma: no cover - install problem
            raise BackendError(f"llama-cpp-python is not installed: {exc}") from exc
        self._lc = _lc
        self.path: Path = path
        try:
            self._llm = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads or max(1, os.cpu_count() or 1),
                n_batch=n_batch,
                verbose=False,
            )
        except Exception as exc:  # llama.cpp raises ValueError on bad files
            raise BackendError(f"could not load model {path}: {exc}") from exc
        self._lock = threading.RLock()
        meta = self._llm.metadata or {}
        template = meta.get("tokenizer.chat_template") or _CHATML
        self._formatter = _make_formatter(self._llm, template)
        native = "<think>" in template
        self.info = BackendInfo(
            name=name,
            model=model_label(model),
            text_completion=True,
            native_reasoning=native,
            logprobs=True,
            supports_n=False,
            context_length=self._llm.n_ctx(),
            prefix_reuse=True,
            concurrent=False,
        )

    # ------------------------------------------------------------------
    def exclusive(self):
        """Hold the engine for a whole multi-call generation (same thread)."""
        return self._lock

    def render_chat(self, messages: Sequence[Message]) -> str:
        return self._formatter(messages)

    def count_tokens(self, text: str) -> int:
        # tokenizing reads only the vocabulary, never the context, so it does
        # not wait for a running generation
        return len(self._tokenize(text))

    def _tokenize(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=self._add_bos(text), special=True)

    def _add_bos(self, text: str) -> bool:
        bos = self._formatter.bos_token
        return bool(self._formatter.add_bos) and not (bos and text.startswith(bos))

    # ------------------------------------------------------------------
    def stream_text(
        self,
        prompt: str,
        *,
        max_tokens: int,
        sampling: Sampling,
        stop: Sequence[str] = (),
        cancel: CancelToken | None = None,
        stats: CompletionStats | None = None,
    ) -> Iterator[Piece]:
        stats = stats if stats is not None else CompletionStats()
        with self._lock:
            tokens = self._tokenize(prompt)
            n_ctx = self._llm.n_ctx()
            if len(tokens) >= n_ctx:
                raise ContextOverflow(
                    f"prompt is {len(tokens)} tokens; the model's context holds {n_ctx}", param="messages"
                )
            max_tokens = min(max_tokens, n_ctx - len(tokens))
            stats.prompt_tokens = len(tokens)
            stats.cached_prompt_tokens = self._cached_prefix(tokens)
            stats.finish_reason = "stop"
            if max_tokens <= 0:
                stats.finish_reason = "length"
                return
            seed = sampling.seed if sampling.seed is not None else random.getrandbits(31)
            self._llm.set_seed(seed)
            gen = self._llm.generate(
                tokens,
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                min_p=0.0,
                temp=max(0.0, sampling.temperature),
                repeat_penalty=1.0,
                reset=True,
            )
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            vocab = self._llm._model.vocab
            pending = ""
            n = 0
            try:
                for tok in gen:
                    if self._lc.llama_vocab_is_eog(vocab, tok):
                        break
                    n += 1
                    stats.completion_tokens = n
                    pending += decoder.decode(self._llm.detokenize([tok]))
                    hit = _first_stop(pending, stop)
                    if hit is not None:
                        idx, s = hit
                        if idx:
                            yield Piece(pending[:idx], 1)
                        stats.stopped_by = s
                        pending = ""
                        break
                    keep = max((partial_suffix(pending, s) for s in stop if s), default=0)
                    emit = pending[: len(pending) - keep]
                    pending = pending[len(emit):]
                    if emit:
                        yield Piece(emit, 1)
                    if n >= max_tokens:
                        stats.finish_reason = "length"
                        break
                    if cancel is not None and cancel.cancelled:
                        stats.finish_reason = "cancelled"
                        break
                tail = pending + decoder.decode(b"", final=True)
                if tail and stats.stopped_by is None:
                    yield Piece(tail, 0)
            finally:
                gen.close()
                stats.completion_tokens = n

    def _cached_prefix(self, tokens: list[int]) -> int:
        llm = self._llm
        have = llm.n_tokens
        if have <= 0:
            return 0
        prev = llm.input_ids[:have]
        n = 0
        for a, b in zip(prev, tokens):
            if a != b:
                break
            n += 1
        # llama.cpp replays the last prompt token to refresh logits
        return max(0, min(n, len(tokens) - 1))

    def stream_chat(self, messages, *, max_tokens, sampling, thinking, cancel=None, stats=None) -> Iterator[ChatPiece]:
        """Plain chat without budget control (the controller prefers text mode)."""
        prompt = self.render_chat(messages)
        splitter = ThinkSplitter(started_in_thinking=prompt.rstrip().endswith("<think>"))
        for piece in self.stream_text(prompt, max_tokens=max_tokens, sampling=sampling, cancel=cancel, stats=stats):
            for kind, text in splitter.feed(piece.text):
                yield ChatPiece(kind, text, piece.tokens)
        for kind, text in splitter.flush():
            yield ChatPiece(kind, text, 0)

    def token_logprobs(self, prompt: str, candidates: Sequence[str]) -> dict[str, float] | None:
        """Next-token log-probabilities of each candidate's first token."""
        import numpy as np

        with self._lock:
            tokens = self._tokenize(prompt)
            llm = self._llm
            cached = self._cached_prefix(tokens)
            llm.n_tokens = cached
            llm.eval(tokens[cached:])
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).astype(np.float64)
            m = logits.max()
            logz = m + np.log(np.exp(logits - m).sum())
            out: dict[str, float] = {}
            for cand in candidates:
                ids = llm.tokenize(cand.encode("utf-8"), add_bos=False, special=False)
                out[cand] = float(logits[ids[0]] - logz) if ids else float("-inf")
            return out

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(Exception):
                self._llm.close()


_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class _Formatter:
    """Renders the GGUF's own chat template (Jinja, sandboxed)."""

    def __init__(self, template: str, bos_token: str, eos_token: str, add_bos: bool) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.bos_token = bos_token
        self.add_bos = add_bos
        self._fmt = Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token=bos_token)

    def __call__(self, messages: Sequence[Message]) -> str:
        result = self._fmt(messages=[{"role": m.role, "content": m.content} for m in messages])
        return result.prompt


def _make_formatter(llm, template: str) -> _Formatter:
    model = llm._model
    eos_id, bos_id = llm.token_eos(), llm.token_bos()
    eos = model.token_get_text(eos_id) if eos_id != -1 else ""
    bos = model.token_get_text(bos_id) if bos_id != -1 else ""
    add_bos = bool(llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true")
    return _Formatter(template, bos, eos, add_bos)


def _first_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for s in stops:
        if not s:
            continue
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    return best
