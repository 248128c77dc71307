"""Test-time strategies on the embedded engine, measured side by side in one run.

1. accuracy, mean tokens and wall time per strategy on a fixed-seed
   reasoning-gym basic_arithmetic set (full credit only);
2. best-of-8 with prefix reuse vs 8 independent calls on a ~400-token prompt
   (target speed-up >= 1.5x);
3. adaptive vs fixed self-consistency: tokens at their measured accuracies
   (target <= 0.6x).

    .venv/bin/python bench/strategies.py [--items 8] [--model NAME]
"""

from __future__ import annotations

import argparse
import time

import reasoning_gym

from ponder.backends.llama_cpp import LlamaCppBackend
from ponder.strategies import build_params, get_strategy, sampling
from ponder.strategies.base import StrategyRequest
from ponder.types import Message, Sampling, ThinkingBudget
from ponder.verifiers.programmatic import TaskVerifier

CONTEXT = (
    "You are helping a bookkeeper at a small bakery. The bakery sells bread, cakes and pastries, and every "
    "evening the bookkeeper writes down the day's sales, the costs of flour, butter, sugar and eggs, the wages "
    "of the two bakers and the shop assistant, and the rent, which is paid weekly. The bookkeeper is careful "
    "and always double checks sums, writes numbers without thousands separators, and prefers short answers. "
) * 4


TEMPERATURE = 0.7


def make_request(ds, entry, seed, *, budget=24, prefix="", temperature=None) -> StrategyRequest:
    temperature = TEMPERATURE if temperature is None else temperature
    return StrategyRequest(
        messages=(Message("user", f"{prefix}{entry['question']} Give only the number."),),
        budget=ThinkingBudget(budget), sampling=Sampling(seed=seed, temperature=temperature, max_answer_tokens=12),
        answer_kind="number", verifier=TaskVerifier(ds, entry), max_samples=32)


def is_correct(ds, entry, result) -> bool:
    for s in result.samples:
        if s.generation is result.chosen:
            return ds.score_answer(s.answer or "", entry) == 1.0
    return False


def run_strategy(backend, ds, name, params):
    strat = get_strategy(name)
    p = build_params(strat, params, 32)
    correct = tokens = samples = 0
    t0 = time.perf_counter()
    for i, entry in enumerate(ds):
        r = strat.run(make_request(ds, entry, 1000 + i), backend, p)
        correct += is_correct(ds, entry, r)
        tokens += r.usage.completion_tokens
        samples += r.n_samples
    n = len(ds)
    return correct / n, tokens / n, (time.perf_counter() - t0) / n, samples / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--model", default=None)
    ap.add_argument("--temperature", type=float, default=0.5)
    args = ap.parse_args()
    global TEMPERATURE
    TEMPERATURE = args.temperature
    backend = LlamaCppBackend(args.model, n_ctx=2048)
    ds = reasoning_gym.create_dataset("basic_arithmetic", size=args.items, seed=2026, min_terms=2, max_terms=2,
                                      min_digits=1, max_digits=2)

    print(f"model {backend.info.model}; {args.items} basic_arithmetic items (seed 2026); thinking cap 24 per sample; "
          f"temperature {args.temperature}")
    print(f"{'strategy':34} {'accuracy':>9} {'tokens/q':>9} {'samples/q':>10} {'s/q':>7}")
    rows = {}
    for label, name, params in [
        ("single", "single", {}),
        ("self-consistency n=8", "self-consistency", {"n": 8}),
        ("adaptive-consistency n_max=8", "adaptive-consistency", {"n_max": 8, "round_size": 2}),
        ("best-of-n n=4 (task scorer)", "best-of-n", {"n": 4, "verifier": "task"}),
        ("weighted-best-of-n n=4 (task)", "weighted-best-of-n", {"n": 4, "verifier": "task"}),
    ]:
        acc, tok, secs, smp = run_strategy(backend, ds, name, params)
        rows[name] = (acc, tok)
        print(f"{label:34} {acc:>9.2f} {tok:>9.1f} {smp:>10.1f} {secs:>7.2f}")

    # prefix reuse: best-of-8 on a ~400-token prompt
    entry = ds[0]
    req = make_request(ds, entry, 7, budget=8, prefix=CONTEXT)
    prompt_tokens = backend.count_tokens(backend.render_chat(list(req.messages)))
    backend._llm.reset()
    t0 = time.perf_counter()
    reused = sampling.draw(req, backend, 8)
    t_reuse = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(8):
        backend._llm.reset()  # forget the evaluated prompt: an independent call
        sampling.one(req, backend, i)
    t_indep = time.perf_counter() - t0
    cached = sum(s.generation.usage.cached_prompt_tokens for s in reused)
    print()
    print(f"best-of-8 on a {prompt_tokens}-token prompt: prefix reuse {t_reuse:.2f} s vs 8 independent calls "
          f"{t_indep:.2f} s -> speed-up {t_indep / t_reuse:.2f}x (target >= 1.5x); {cached} prompt tokens served from cache")

    (acc_f, tok_f), (acc_a, tok_a) = rows["self-consistency"], rows["adaptive-consistency"]
    print(f"adaptive vs fixed self-consistency: accuracy {acc_a:.2f} vs {acc_f:.2f}; tokens {tok_a:.1f} vs {tok_f:.1f}"
          f" -> ratio {tok_a / tok_f:.2f}x (target <= 0.6x)")


if __name__ == "__main__":
    main()
