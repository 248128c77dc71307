"""The embedded engine, measured side by side in one run on one model and prompt.

Prints:

1. single-stream decode tokens/s: ponder's engine vs raw llama-cpp-python
   (``Llama.generate``, same weights, same sampling) — target >= 0.95;
2. aggregate decode tokens/s with 1, 2, 4, 8, 16 sequences of one prompt in
   one batch: ponder's engine vs a bare loop over llama.cpp's low-level batch
   API (the ceiling the hardware allows), and the speed-up over 1 sequence;
3. self-consistency n=8 wall time, batched (one submission) vs sequential
   (eight samples one after another) — target >= 3x;
4. 8 concurrent gateway requests vs the same 8 one after another, through a
   real ``ponder serve`` on 127.0.0.1 — target >= 3x.

Everything runs alone, one thing at a time, each measurement in a fresh
process: llama.cpp is built with OpenMP, and every thread that drives a
context gets its own worker team; once there are more workers than cores,
libgomp stops spinning and every decode step pays for waking its threads
(about half the speed of a small model on 2 cores), so a reference measured
in the same process as the engine would slow both.

    .venv/bin/python bench/engine.py [--model qwen2.5-coder-0.5b] [--tokens 48]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ponder.backends.base import SampleSpec  # noqa: E402
from ponder.backends.llama_runtime import default_threads  # noqa: E402
from ponder.backends.sequences import Done, SeqRequest  # noqa: E402
from ponder.backends.llama_cpp import LlamaCppBackend  # noqa: E402
from ponder.thinking.completion import CompletionMachine  # noqa: E402
from ponder.types import Message, Sampling, ThinkingBudget  # noqa: E402

STORY = [Message("user", "Write a long story about a robot who learns to paint. Use many details.")]
QUESTION = [Message("user", "What is 17 + 25? Think it through, then give the number.")]


# -- 1. single stream ------------------------------------------------------------------------------

def raw_single(llm, tokens: list[int], n: int, seed: int) -> float:
    """Decode tokens/s of Llama.generate after the first token (prefill excluded)."""
    llm.set_seed(seed)
    llm.reset()
    count, t_first = 0, None
    for _ in llm.generate(tokens, top_k=40, top_p=0.95, min_p=0.0, temp=0.7, repeat_penalty=1.0):
        if t_first is None:
            t_first = time.perf_counter()
        else:
            count += 1
        if count >= n:
            break
    return count / (time.perf_counter() - t_first)


async def ponder_streams(backend: LlamaCppBackend, ids: list[int], n_seqs: int, n: int, seed: int) -> float:
    """Aggregate decode tokens/s of ``n_seqs`` sequences of one prompt (after every first token)."""
    loop = asyncio.get_running_loop()
    firsts: list[float] = []
    counts = [0] * n_seqs
    done = asyncio.Event()
    left = [n_seqs]

    class Counting(CompletionMachine):
        def __init__(self, k: int) -> None:
            super().__init__(n + 1)
            self.k = k

        def feed(self, text, tokens=1, logprob=None):
            if self.generated == 0:
                firsts.append(time.perf_counter())
            else:
                counts[self.k] += 1
            return super().feed(text, tokens, logprob)

    def post(ev) -> None:
        if isinstance(ev, Done):
            def dec() -> None:
                left[0] -= 1
                if left[0] == 0:
                    done.set()
            loop.call_soon_threadsafe(dec)

    reqs = [SeqRequest(Counting(k), post, sampling=Sampling(temperature=0.7, top_p=0.95, top_k=40, seed=seed + k),
                       max_new=n + 8)
            for k in range(n_seqs)]
    backend.engine.submit(ids, reqs)
    await done.wait()
    return sum(counts) / (time.perf_counter() - max(firsts))


def raw_batched(model_path: Path, ids: list[int], n_seqs: int, n: int, threads: int, flash_attn) -> float:
    """The same N sequences through a bare loop over llama.cpp's batch API (no scheduler, no control)."""
    import llama_cpp as lc
    from llama_cpp import _internals

    mp = lc.llama_model_default_params()
    model = _internals.LlamaModel(path_model=str(model_path), params=mp, verbose=False)
    cp = lc.llama_context_default_params()
    cp.n_ctx = max(4096, len(ids) + (n + 8) * n_seqs)
    cp.n_batch = cp.n_ubatch = 512
    cp.n_seq_max = n_seqs
    cp.kv_unified = True
    cp.n_threads = cp.n_threads_batch = threads
    cp.flash_attn_type = -1 if flash_attn is None else int(bool(flash_attn))
    ctx = lc.llama_init_from_model(model.model, cp)
    batch = lc.llama_batch_init(512, 0, n_seqs)

    def add(i, tok, pos, seqs, logits):
        batch.token[i] = tok
        batch.pos[i] = pos
        batch.n_seq_id[i] = len(seqs)
        for j, s in enumerate(seqs):
            batch.seq_id[i][j] = s
        batch.logits[i] = logits

    for i, t in enumerate(ids):
        add(i, t, i, list(range(n_seqs)), i == len(ids) - 1)
    batch.n_tokens = len(ids)
    lc.llama_decode(ctx, batch)
    chains = []
    for k in range(n_seqs):
        ch = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        lc.llama_sampler_chain_add(ch, lc.llama_sampler_init_top_k(40))
        lc.llama_sampler_chain_add(ch, lc.llama_sampler_init_top_p(0.95, 1))
        lc.llama_sampler_chain_add(ch, lc.llama_sampler_init_temp(0.7))
        lc.llama_sampler_chain_add(ch, lc.llama_sampler_init_dist(1 + k))
        chains.append(ch)
    idx = [len(ids) - 1] * n_seqs
    pos = len(ids)
    toks = [lc.llama_sampler_sample(chains[k], ctx, idx[k]) for k in range(n_seqs)]
    t0 = time.perf_counter()
    for _ in range(n):
        for k in range(n_seqs):
            add(k, toks[k], pos, [k], True)
            idx[k] = k
        batch.n_tokens = n_seqs
        lc.llama_decode(ctx, batch)
        pos += 1
        toks = [lc.llama_sampler_sample(chains[k], ctx, idx[k]) for k in range(n_seqs)]
    rate = n * n_seqs / (time.perf_counter() - t0)
    for ch in chains:
        lc.llama_sampler_free(ch)
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    model.close()
    return rate


# -- 3. self-consistency n=8 ----------------------------------------------------------------------------

async def sc_wall(backend: LlamaCppBackend, batched: bool, think: int) -> tuple[float, int]:
    spec = SampleSpec(tuple(QUESTION), ThinkingBudget(think), Sampling(seed=7, temperature=0.7, max_answer_tokens=24))
    t0 = time.perf_counter()
    if batched:
        gens = await backend.sample_many(spec, 8)
    else:
        gens = [await backend.sample(spec.seeded(i)) for i in range(8)]
    return time.perf_counter() - t0, sum(g.usage.completion_tokens for g in gens)


# -- 4. the gateway ---------------------------------------------------------------------------------------

def gateway_run(model: str | None, threads: int, think: int) -> tuple[float, float]:
    from conftest import free_port

    port = free_port()
    tmp = tempfile.mkdtemp(prefix="ponder-bench-")
    cfg = {"policy": "off", "ledger": {"url": "off"}, "server": {"access_log": False},
           "lanes": [{"name": "default", "model": model, "n_ctx": 2048, "n_threads": threads}]}
    path = os.path.join(tmp, "ponder.yaml")
    Path(path).write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "ponder.cli", "serve", "--port", str(port), "--config", path,
                             "--log-level", "warning"], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        body = lambda i: {"messages": [{"role": "user", "content": f"What is {i} + 17? Think, then answer."}],  # noqa
                          "max_thinking_tokens": think, "min_thinking_tokens": think, "max_tokens": 16, "seed": i}
        httpx.post(url + "/v1/chat/completions", json=body(99), timeout=300)  # warm
        t0 = time.perf_counter()
        for i in range(8):
            assert httpx.post(url + "/v1/chat/completions", json=body(i), timeout=300).status_code == 200
        sequential = time.perf_counter() - t0
        codes = []

        def one(i: int) -> None:
            codes.append(httpx.post(url + "/v1/chat/completions", json=body(i), timeout=300).status_code)

        ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        concurrent = time.perf_counter() - t0
        assert codes == [200] * 8, codes
        return sequential, concurrent
    finally:
        proc.terminate()
        proc.wait(30)


def measure(part: str, args) -> float:
    """One measurement, in this process (run by :func:`isolated` in a fresh one)."""
    threads = args.threads or default_threads()[0]
    if part == "raw1":
        from llama_cpp import Llama

        backend_path = LlamaCppBackend(args.model, n_ctx=64, max_sequences=1, cache_slots=0).path
        llm = Llama(model_path=str(backend_path), n_ctx=2048, n_threads=threads, verbose=False)
        ids = llm.tokenize(_chat_text(llm).encode(), add_bos=False, special=True)
        return raw_single(llm, ids, args.tokens, args.seed)
    backend = LlamaCppBackend(args.model, n_ctx=2048, kv_cells=16384, max_sequences=16, n_threads=threads,
                              flash_attn=False)
    ids = backend._prompt_ids(backend.render_chat(STORY))
    try:
        if part.startswith("barefa"):
            return raw_batched(backend.path, ids, int(part[6:]), args.tokens, threads, None)
        if part.startswith("bare"):
            return raw_batched(backend.path, ids, int(part[4:]), args.tokens, threads, False)
        if part.startswith("ponder"):
            return asyncio.run(ponder_streams(backend, ids, int(part[6:]), args.tokens, args.seed))
        raise SystemExit(f"unknown part {part}")
    finally:
        backend.close()


def _chat_text(llm) -> str:
    """The story prompt rendered with the model's own template (the same text the engine sees)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    meta = llm.metadata
    fmt = Jinja2ChatFormatter(template=meta.get("tokenizer.chat_template"), eos_token="", bos_token="")
    return fmt(messages=[{"role": m.role, "content": m.content} for m in STORY]).prompt


def isolated(part: str, args, seed: int = 0) -> float:
    cmd = [sys.executable, __file__, "--part", part, "--tokens", str(args.tokens), "--seed", str(seed)]
    if args.model:
        cmd += ["--model", args.model]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"measurement {part} failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model name or GGUF path (default: the packaged SmolLM2)")
    ap.add_argument("--tokens", type=int, default=48, help="decode steps per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds for the single-stream ratio")
    ap.add_argument("--think", type=int, default=64, help="thinking tokens per sample for parts 3 and 4")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: ponder's default)")
    ap.add_argument("--skip", default="", help="parts to skip, e.g. 4")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        print(measure(args.part, args))
        return
    threads = args.threads or default_threads()[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    probe = LlamaCppBackend(args.model, n_ctx=2048, max_sequences=1, cache_slots=0)
    n_prompt = len(probe._prompt_ids(probe.render_chat(STORY)))
    label = probe.info.model
    probe.close()
    print(f"model {label} · {cores} cores · {threads} llama.cpp threads · prompt {n_prompt} tokens · "
          f"{args.tokens} decode steps · each measurement in a fresh process")

    if "1" not in args.skip:
        raw_rates, ours = [], []
        for r in range(args.rounds):
            order = [("raw1", raw_rates), ("ponder1", ours)]
            for part, into in (order if r % 2 == 0 else order[::-1]):
                into.append(isolated(part, args, seed=r))
        raw, pon = statistics.median(raw_rates), statistics.median(ours)
        print(f"\n1. single stream   raw llama-cpp-python {raw:7.1f} tok/s   ponder {pon:7.1f} tok/s   "
              f"ratio {pon / raw:.3f} (target >= 0.95)   (medians of {args.rounds} alternating rounds)")

    if "2" not in args.skip:
        print("\n2. sequences in one batch (aggregate decode tok/s)")
        print(f"   {'N':>3} {'bare batch loop':>16} {'ponder engine':>14} {'ponder/bare':>12} {'x vs N=1':>9}")
        base = None
        for n_seqs in (1, 2, 4, 8, 16):
            bare = isolated(f"bare{n_seqs}", args, seed=100)
            pon = isolated(f"ponder{n_seqs}", args, seed=100)
            base = base or pon
            print(f"   {n_seqs:>3} {bare:16.1f} {pon:14.1f} {pon / bare:12.2f} {pon / base:9.2f}")

    backend = LlamaCppBackend(args.model, n_ctx=2048, kv_cells=16384, max_sequences=16, n_threads=threads)
    if "3" not in args.skip:
        seq_s, seq_tok = asyncio.run(sc_wall(backend, False, args.think))
        bat_s, bat_tok = asyncio.run(sc_wall(backend, True, args.think))
        print(f"\n3. self-consistency n=8 ({args.think}-token think)   sequential {seq_s:6.2f} s ({seq_tok} tokens)   "
              f"batched {bat_s:6.2f} s ({bat_tok} tokens)   speed-up {seq_s / bat_s:.2f}x (target >= 3x)")
    backend.close()

    if "4" not in args.skip:
        seq, conc = gateway_run(args.model, threads, args.think)
        print(f"\n4. 8 gateway requests ({args.think}-token think)   one after another {seq:6.2f} s   "
              f"concurrent {conc:6.2f} s   speed-up {seq / conc:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
