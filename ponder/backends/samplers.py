"""llama.cpp sampler chains and log-probabilities for the embedded engine's sequences.

The chain is the one ``Llama.generate`` builds (top-k, top-p, temperature,
seeded distribution; greedy at temperature 0), so a single sequence with a
fixed seed reproduces the sequential path token for token.  A structured
answer gets a second chain with the grammar in front, used only once the
sequence is in its answer phase (thinking stays free-form).
"""

from __future__ import annotations

import random
from typing import Any, Callable

import numpy as np

from ponder.errors import BackendError


def make_samplers(lc: Any, vocab: Any, s: Any) -> None:
    """Give sequence ``s`` its chain (and its grammar chain, when its answer is structured)."""
    if s.req.score_ids is not None:
        return
    r = s.req.sampling
    seed = r.seed if r.seed is not None else random.getrandbits(31)
    s.sampler = chain(lc, vocab, r, seed, None)
    if r.grammar:
        s.grammar_sampler = chain(lc, vocab, r, seed + 1, r.grammar)


def free_samplers(lc: Any, s: Any) -> None:
    for smp in (s.sampler, s.grammar_sampler):
        if smp is not None:
            lc.llama_sampler_free(smp)
    s.sampler = s.grammar_sampler = None


def chain(lc: Any, vocab: Any, r: Any, seed: int, grammar: str | None) -> Any:
    """A sampler chain for :class:`~ponder.types.Sampling` ``r`` (grammar first, when given)."""
    c = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if grammar:
        g = lc.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        if not g:
            lc.llama_sampler_free(c)
            raise BackendError("the structured-output grammar could not be compiled")
        lc.llama_sampler_chain_add(c, g)
    if r.temperature <= 0:
        lc.llama_sampler_chain_add(c, lc.llama_sampler_init_greedy())
    else:
        lc.llama_sampler_chain_add(c, lc.llama_sampler_init_top_k(r.top_k))
        lc.llama_sampler_chain_add(c, lc.llama_sampler_init_top_p(r.top_p, 1))
        lc.llama_sampler_chain_add(c, lc.llama_sampler_init_temp(r.temperature))
        lc.llama_sampler_chain_add(c, lc.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return c


class LogSumExp:
    """log(sum(exp(row))) into a reused buffer (no allocation per token)."""

    def __init__(self, n_vocab: int) -> None:
        self._buf = np.empty(n_vocab, dtype=np.float32)

    def __call__(self, row: np.ndarray) -> float:
        m = float(row.max())
        np.subtract(row, m, out=self._buf)
        np.exp(self._buf, out=self._buf)
        return m + float(np.log(self._buf.sum()))


def top_alternatives(row: np.ndarray, k: int, lse: float, text_of: Callable[[int], str]) -> tuple:
    """The ``k`` most likely next tokens as ``((text, logprob), ...)``, best first."""
    k = min(k, row.shape[0])
    ids = np.argpartition(row, -k)[-k:]
    ids = ids[np.argsort(-row[ids])]
    return tuple((text_of(int(t)), float(row[t] - lse)) for t in ids)
