"""The embedded engine beside a busy process: decode rate quiet, then with `while True: pass` next to it.

llama.cpp's threads spin-wait for each other; with as many threads as CPUs
and one busy neighbour, a spinning thread waits on a descheduled sibling and
decoding collapses (measured here once: 379 tokens in 300 s, against ~100
tokens a second alone).  This bench measures, in one run, on the default
model and the default thread count:

1. the quiet decode rate (one sequence, thinking only);
2. with a busy process started by the bench, the thread governor off (the
   thread count stays where it was: the "before");
3. the same with the governor on (it backs a thread off when decoding
   collapses against what the same batch size reached before).

Target: with the governor, >= 0.4x the quiet rate.  Bounded: each phase
stops after --tokens tokens or --seconds seconds; the busy process is killed
at the end whatever happens.

Then mixed traffic (--mixed): 4 long reasoning requests (class batch,
--long-tokens thinking each, max_sequences 4) and a short request (class
interactive, no thinking) every second; the shorts' p95 time to answer on
an idle engine, beside the long ones without preemption, and with it
(target <= 1.5x idle), and the long ones' total time with preemption
against without (target <= 1.15x).

Then two keys (--keys): key "bulk" sends self-consistency n=16 requests
(two at once, every sample --bulk-tokens of thinking), key "chat" a single
request every half second, both class standard, max_sequences 4.  The chat
key's p95 queue wait with start-time fair queuing against first come, first
served.  The bound, as configured (equal weights): a chat request waits at
most for one place to free, i.e. one bulk sample's decode time (its p95);
target: p95 wait <= that bound.

    .venv/bin/python bench/scheduling.py [--tokens 256] [--seconds 60] [--mixed] [--long-tokens 1500] [--keys]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "Think step by step about how a bicycle stays upright, then answer in one sentence."


async def decode(backend, tokens: int, seconds: float, seed: int) -> tuple[int, float]:
    """(thinking tokens decoded, seconds) for one sequence, stopped at ``tokens`` or ``seconds``."""
    from ponder.backends.base import SampleSpec
    from ponder.thinking.machine import LoopGuardSettings
    from ponder.types import CancelToken, Message, Sampling, ThinkingBudget

    cancel = CancelToken()
    spec = SampleSpec((Message("user", PROMPT),), ThinkingBudget(tokens, min_tokens=tokens),
                      Sampling(seed=seed, temperature=0.8, max_answer_tokens=1), cancel=cancel,
                      loop_guard=LoopGuardSettings(enabled=False))
    loop = asyncio.get_running_loop()
    timer = loop.call_later(seconds, cancel.cancel)
    t0 = time.perf_counter()
    g = await backend.sample(spec)
    timer.cancel()
    return g.usage.thinking_tokens, time.perf_counter() - t0


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


async def mixed(backend, long_tokens: int, shorts: int, preempt: bool, with_long: bool) -> tuple[list[float], float]:
    """(the shorts' seconds to answer, the longest long request's seconds)."""
    from ponder.backends.base import SampleSpec
    from ponder.thinking.machine import LoopGuardSettings
    from ponder.types import Message, Sampling, ThinkingBudget

    backend.engine.preempt = preempt
    off = LoopGuardSettings(enabled=False)
    long_spec = SampleSpec((Message("user", PROMPT),), ThinkingBudget(long_tokens, min_tokens=long_tokens),
                           Sampling(seed=5, temperature=0.8, max_answer_tokens=8), loop_guard=off, sched=(2, "bulk", 1.0))
    short_spec = SampleSpec((Message("user", "Say hello."),), ThinkingBudget(0),
                            Sampling(seed=1, temperature=0.0, max_answer_tokens=12), sched=(0, "chat", 1.0))
    t0 = time.perf_counter()
    longs = [asyncio.ensure_future(backend.sample(long_spec.seeded(i))) for i in range(4)] if with_long else []
    waits = []

    async def short(i: int) -> None:
        await asyncio.sleep(1.0 + i)
        t = time.perf_counter()
        await backend.sample(short_spec)
        waits.append(time.perf_counter() - t)

    await asyncio.gather(*(short(i) for i in range(shorts)))
    await asyncio.gather(*longs)
    return waits, (time.perf_counter() - t0) if with_long else 0.0


def mixed_traffic(backend, args) -> None:
    shorts = args.shorts
    idle, _ = asyncio.run(mixed(backend, args.long_tokens, shorts, True, False))
    base = p95(idle)
    print(f"mixed traffic: 4 long requests of {args.long_tokens} thinking tokens, a short one every second")
    print(f"  shorts on an idle engine             p95 {base:6.2f} s")
    no, long_no = asyncio.run(mixed(backend, args.long_tokens, shorts, False, True))
    print(f"  beside the long ones, no preemption  p95 {p95(no):6.2f} s ({p95(no) / base:5.1f}x idle); long ones "
          f"{long_no:6.1f} s")
    yes, long_yes = asyncio.run(mixed(backend, args.long_tokens, shorts, True, True))
    print(f"  beside the long ones, preemption     p95 {p95(yes):6.2f} s ({p95(yes) / base:5.1f}x idle; target "
          f"<= 1.5x: {'met' if p95(yes) <= 1.5 * base else 'MISSED'}); long ones {long_yes:6.1f} s "
          f"({long_yes / long_no:.2f}x without; target <= 1.15x: {'met' if long_yes <= 1.15 * long_no else 'MISSED'})")


async def two_keys(backend, bulk_tokens: int, chats: int, fair: bool) -> tuple[list[float], list[float]]:
    """(the chat key's queue waits, the bulk key's per-sample decode seconds)."""
    from ponder.backends.base import SampleSpec
    from ponder.thinking.machine import LoopGuardSettings
    from ponder.types import Message, Sampling, ThinkingBudget

    backend.engine.fair = fair
    off = LoopGuardSettings(enabled=False)
    bulk = SampleSpec((Message("user", PROMPT),), ThinkingBudget(bulk_tokens, min_tokens=bulk_tokens),
                      Sampling(seed=7, temperature=0.8, max_answer_tokens=8), loop_guard=off, sched=(1, "bulk", 1.0))
    chat = SampleSpec((Message("user", "Say hello."),), ThinkingBudget(16),
                      Sampling(seed=1, temperature=0.0, max_answer_tokens=8), sched=(1, "chat", 1.0))
    waits: list[float] = []

    async def one_chat(i: int) -> None:
        await asyncio.sleep(1.0 + 0.5 * i)
        g = await backend.sample(chat)
        waits.append(g.timings.queue_s)

    bulks = [asyncio.ensure_future(backend.sample_many(bulk.seeded(100 * i), 16)) for i in range(2)]
    await asyncio.gather(*(one_chat(i) for i in range(chats)))
    samples = [g for gs in await asyncio.gather(*bulks) for g in gs]
    return waits, [g.timings.total_s - g.timings.queue_s for g in samples]


def keys_traffic(backend, args) -> None:
    print(f"two keys: 'bulk' sends 2 x self-consistency n=16 ({args.bulk_tokens} thinking tokens a sample), "
          f"'chat' a single request every 0.5 s; max_sequences 4")
    fifo, _ = asyncio.run(two_keys(backend, args.bulk_tokens, args.chats, False))
    print(f"  first come, first served   chat p95 queue wait {p95(fifo):6.2f} s (max {max(fifo):6.2f} s)")
    fair, decode_s = asyncio.run(two_keys(backend, args.bulk_tokens, args.chats, True))
    bound = p95(decode_s)
    print(f"  fair queuing between keys  chat p95 queue wait {p95(fair):6.2f} s (max {max(fair):6.2f} s); bound "
          f"(one bulk sample's p95 decode time) {bound:.2f} s: {'met' if p95(fair) <= bound else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--mixed", action="store_true", help="also the mixed-traffic scenario (preemption)")
    ap.add_argument("--long-tokens", type=int, default=1500)
    ap.add_argument("--shorts", type=int, default=12)
    ap.add_argument("--no-cpu", action="store_true", help="skip the busy-neighbour phases")
    ap.add_argument("--keys", action="store_true", help="also the two-key scenario (fair queuing)")
    ap.add_argument("--bulk-tokens", type=int, default=96)
    ap.add_argument("--chats", type=int, default=12)
    args = ap.parse_args()
    from ponder.backends.llama_cpp import LlamaCppBackend

    backend = LlamaCppBackend(n_ctx=2048)
    engine = backend.engine
    threads = engine.governor.threads
    print(f"engine: {threads} thread(s) by default on this machine")

    async def run() -> None:
        await decode(backend, 32, args.seconds, 0)  # warm-up: the governor sees quiet steps first
        n, s = await decode(backend, args.tokens, args.seconds, 1)
        quiet = n / s
        print(f"quiet                          {n:4d} tokens in {s:6.1f} s = {quiet:7.1f} tok/s")
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)
            engine.governor.collapse = 0.0  # off: never backs off
            n, s = await decode(backend, args.tokens, args.seconds, 2)
            before = n / s
            print(f"busy neighbour, governor off   {n:4d} tokens in {s:6.1f} s = {before:7.1f} tok/s  "
                  f"({before / quiet:.2f}x quiet) at {engine.governor.threads} thread(s)")
            engine.governor.collapse = 0.3
            n, s = await decode(backend, args.tokens, args.seconds, 3)
            after = n / s
            print(f"busy neighbour, governor on    {n:4d} tokens in {s:6.1f} s = {after:7.1f} tok/s  "
                  f"({after / quiet:.2f}x quiet) now at {engine.governor.threads} thread(s)")
            n, s = await decode(backend, args.tokens, args.seconds, 4)
            steady = n / s
            print(f"busy neighbour, governor on    {n:4d} tokens in {s:6.1f} s = {steady:7.1f} tok/s  "
                  f"({steady / quiet:.2f}x quiet) once settled, at {engine.governor.threads} thread(s)")
            verdict = "met" if steady >= 0.4 * quiet else "MISSED"
            print(f"target >= 0.4x quiet with the governor: {verdict} (settled {steady / quiet:.2f}x; the first run "
                  f"after the neighbour started, detection included: {after / quiet:.2f}x)")
        finally:
            busy.kill()
            busy.wait()

    if not args.no_cpu:
        asyncio.run(run())
    if args.mixed:
        backend.close()
        backend = LlamaCppBackend(n_ctx=4096, max_sequences=4)
        mixed_traffic(backend, args)
    if args.keys:
        backend.close()
        backend = LlamaCppBackend(n_ctx=2048, max_sequences=4)
        keys_traffic(backend, args)
    backend.close()


if __name__ == "__main__":
    main()
