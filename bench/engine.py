"""Decode speed of ponder's embedded engine vs raw llama-cpp-python.

Same model, same prompt, same sampling settings, alternating runs in one
process; prints tokens/s of each and the ratio (target >= 0.95).

    .venv/bin/python bench/engine.py [--tokens 128] [--rounds 5] [--model NAME]
"""

from __future__ import annotations

import argparse
import statistics
import time

from ponder.backends.llama_cpp import LlamaCppBackend
from ponder.types import Message, Sampling

PROMPT = [Message("user", "Write a short story about a robot who learns to paint. Use many details.")]


def raw_decode(llm, tokens: list[int], n: int, seed: int) -> tuple[int, float]:
    llm.set_seed(seed)
    llm.reset()
    gen = llm.generate(tokens, top_k=40, top_p=0.95, min_p=0.0, temp=0.7, repeat_penalty=1.0)
    count, t_first = 0, None
    for tok in gen:
        if t_first is None:
            t_first = time.perf_counter()
        else:
            count += 1
        if count >= n:
            break
    t = time.perf_counter() - t_first
    gen.close()
    return count, t


def ponder_decode(backend: LlamaCppBackend, prompt: str, n: int, seed: int) -> tuple[int, float]:
    backend._llm.reset()
    count, t_first = 0, None
    for piece in backend.stream_text(prompt, max_tokens=n + 1, sampling=Sampling(temperature=0.7, seed=seed)):
        if t_first is None:
            t_first = time.perf_counter()
        else:
            count += piece.tokens
    return count, time.perf_counter() - t_first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    backend = LlamaCppBackend(args.model, n_ctx=2048)
    llm = backend._llm  # the very same weights and context: only the wrapper differs
    prompt = backend.render_chat(PROMPT)
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    raw_rates, ponder_rates = [], []
    for r in range(args.rounds):
        for fn in (("raw", raw_decode), ("ponder", ponder_decode)) if r % 2 == 0 else (("ponder", ponder_decode), ("raw", raw_decode)):
            name, f = fn
            n, t = f(llm, tokens, args.tokens, r) if name == "raw" else f(backend, prompt, args.tokens, r)
            (raw_rates if name == "raw" else ponder_rates).append(n / t)
    raw, pon = statistics.median(raw_rates), statistics.median(ponder_rates)
    print(f"model            {backend.info.model}")
    print(f"decode tokens    {args.tokens} per run, {args.rounds} rounds, alternating")
    print(f"raw llama-cpp    {raw:8.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in raw_rates)})")
    print(f"ponder embedded  {pon:8.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in ponder_rates)})")
    print(f"ratio            {pon / raw:8.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
