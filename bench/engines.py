"""ponder on real engines: two llama-server replicas on the tiny model, measured side by side in one run.

1. Prompt tokens the engines actually prefilled (their own ``prompt_tokens_total``) for self-consistency n=8
   on a ~400-token prompt: prefix affinity (every sample on the prompt's replica) against round robin.
   Target: <= 1.2x one prompt with affinity.
2. A capped request (thinking cut at 64 tokens): ponder's continuation of one text (the cut closed in
   place) against the chat path (stream cut, the answer asked for in a second chat turn): prefilled
   tokens and seconds.
3. What the protocol adds per request: ponder driving a 32-token completion against the same completion
   called directly (paired, alternating; p50 of the differences).

Runs alone (llama.cpp's threads spin: a busy neighbour distorts every figure); bounded: --rounds (default 3).

    .venv/bin/python bench/engines.py
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from llama_server import LlamaServer  # noqa: E402

from ponder.backends.base import SampleSpec  # noqa: E402
from ponder.backends.probe import text_engine_or_none  # noqa: E402
from ponder.backends.replicas import Replicas  # noqa: E402
from ponder.config import LaneConfig  # noqa: E402
from ponder.strategies.base import StrategyRequest  # noqa: E402
from ponder.strategies.sampling import draw  # noqa: E402
from ponder.types import Message, Sampling, ThinkingBudget  # noqa: E402

SYSTEM = ("You are a careful assistant for arithmetic homework. Show the steps, check each carry, and state the "
          "result on its own line. ") * 12


def prefilled(servers) -> int:
    total = 0
    for s in servers:
        text = httpx.get(f"http://127.0.0.1:{s.port}/metrics", timeout=10).text
        m = re.search(r"^llamacpp:prompt_tokens_total\s+([0-9.e+]+)", text, re.M)
        total += int(float(m.group(1))) if m else 0
    return total


def engine(servers, *, affinity: bool = True):
    lane = LaneConfig(name="bench", backend="openai", base_urls=[s.url for s in servers])
    b = text_engine_or_none(lane)
    b.replicas = Replicas([s.url for s in servers], affinity=affinity)
    return b


async def self_consistency(servers, affinity: bool, tag: str, think: int = 24) -> tuple[int, int]:
    """Prefilled tokens of one SC n=8 request whose prompt no engine has seen (``tag`` starts it)."""
    b = engine(servers, affinity=affinity)
    before = prefilled(servers)
    system = f"[{tag}] " + SYSTEM
    req = StrategyRequest((Message("system", system), Message("user", "What is 37 * 12?")), ThinkingBudget(think),
                          Sampling(seed=7, max_answer_tokens=8))
    await draw(req, b, 8)
    await b.aclose()
    prompt = len(httpx.post(f"http://127.0.0.1:{servers[0].port}/tokenize",
                            json={"content": system + "What is 37 * 12?"}).json()["tokens"])
    return prefilled(servers) - before, prompt


async def capped(servers, chat: bool) -> tuple[int, float, int]:
    lane = LaneConfig(name="c", backend="openai", base_url=servers[0].url, capabilities="chat" if chat else "auto")
    from ponder.backends.registry import build_backend

    b = build_backend(lane)
    before = prefilled(servers)
    t0 = time.perf_counter()
    spec = SampleSpec((Message("system", SYSTEM), Message("user", "Explain why 17 * 23 = 391.")),
                      ThinkingBudget(64, min_tokens=64 if not chat else 0), Sampling(seed=3, max_answer_tokens=16))
    g = await b.sample(spec)
    seconds = time.perf_counter() - t0
    await b.aclose()
    # beyond the first call's own prefill of the prompt (what was not already in the slot)
    first = 0 if chat else g.usage.prompt_tokens - g.usage.cached_prompt_tokens
    return prefilled(servers) - before - first, seconds, g.usage.thinking_tokens


async def overhead(servers, rounds: int) -> list[float]:
    b = engine(servers[:1])
    messages = (Message("user", "Count from one to twenty."),)
    prompt = b.render_chat(messages)  # the very text ponder sends (thinking off adds nothing on this model)
    diffs = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{servers[0].port}", timeout=60) as c:
        for i in range(rounds):
            t0 = time.perf_counter()
            await c.post("/completion", json={"prompt": prompt, "n_predict": 32, "temperature": 0, "seed": i,
                                              "cache_prompt": True})
            direct = time.perf_counter() - t0
            spec = SampleSpec(messages, ThinkingBudget(0),
                              Sampling(temperature=0.0, seed=i, max_answer_tokens=32))
            t0 = time.perf_counter()
            await b.sample(spec)
            diffs.append(time.perf_counter() - t0 - direct)
    await b.aclose()
    return diffs


async def slot_floor(server, tag: str) -> tuple[float, float]:
    """The engine alone, no ponder: 8 concurrent identical completions on one replica of 4 slots, after one
    warm-up call of the same prompt.  Prefilled tokens over one prompt: llama-server's floor for n=8 as 8 calls;
    then one call of 4 ``n_cmpl`` children of a new prompt (what ponder's group calls use)."""
    prompt = f"<|im_start|>system\n[{tag}] {SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 17*23?<|im_end|>\n" \
             "<|im_start|>assistant\n"
    before = prefilled([server])
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=120) as c:
        one = (await c.post("/completion", json={"prompt": prompt, "n_predict": 1, "cache_prompt": True})).json()
        await asyncio.gather(*(c.post("/completion", json={"prompt": prompt, "n_predict": 8, "cache_prompt": True,
                                                           "seed": i, "temperature": 0.8}) for i in range(8)))
    floor = (prefilled([server]) - before) / max(1, int(one.get("tokens_evaluated") or 1))
    before = prefilled([server])
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=120) as c:
        fresh = prompt.replace(f"[{tag}]", f"[{tag} children]")  # a start no slot has seen
        await c.post("/completion", json={"prompt": fresh, "n_predict": 8, "cache_prompt": True, "n_cmpl": 4,
                                          "temperature": 0.8, "seed": 1})
    return floor, (prefilled([server]) - before) / max(1, int(one.get("tokens_evaluated") or 1))


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        servers = [LlamaServer(Path(tmp) / n, slots=4, ctx=8192, metrics=True) for n in ("a", "b")]
        try:
            aff, rr = [], []
            for k in range(rounds):  # fresh prompts each time, the arms alternating first
                arms = [(True, aff), (False, rr)] if k % 2 == 0 else [(False, rr), (True, aff)]
                for affinity, out in arms:
                    out.append(await self_consistency(servers, affinity, f"round {k} {'aff' if affinity else 'rr'}"))
            prompt = statistics.mean(p for _, p in aff)
            a = statistics.mean(n for n, _ in aff)
            r = statistics.mean(n for n, _ in rr)
            print(f"1. self-consistency n=8, prompt of {prompt:.0f} tokens, {rounds} rounds: prefilled "
                  f"{a:.0f} tokens with affinity ({a / prompt:.2f}x one prompt), {r:.0f} round robin "
                  f"({r / prompt:.2f}x); target <= 1.2x with affinity: {'met' if a / prompt <= 1.2 else 'NOT met'}")
            off = [await self_consistency(servers, True, f"round {k} off", think=0) for k in range(rounds)]
            a0 = statistics.mean(n for n, _ in off)
            p0 = statistics.mean(p for _, p in off)
            print(f"   the same with thinking off (every sample answers in one call: one n_cmpl group call per 4 "
                  f"slots): prefilled {a0:.0f} tokens with affinity ({a0 / p0:.2f}x one prompt; target <= 1.2x: "
                  f"{'met' if a0 / p0 <= 1.2 else 'NOT met'})")
            cont = await capped(servers, chat=False)
            chat = await capped(servers, chat=True)
            print(f"2. capped at 64 thinking tokens: beyond the prompt, the continuation prefilled {cont[0]} tokens "
                  f"in {cont[1]:.2f} s "
                  f"(thinking {cont[2]}); the chat path prefilled {chat[0]} tokens in {chat[1]:.2f} s "
                  f"(thinking {chat[2]})")
            if chat[2] < 64:
                print("   the chat path cannot make the model think to the cap (no minimum over a chat API), and this "
                      "model answered without thinking, so no second turn happened: no like-for-like figure")
            d = await overhead(servers, max(5, rounds * 4))
            print(f"3. protocol overhead per 32-token request: p50 {statistics.median(d) * 1000:+.1f} ms, "
                  f"max {max(d) * 1000:+.1f} ms over {len(d)} paired requests")
            floor, children = await slot_floor(servers[0], "floor")
            print(f"4. the floor for 1., llama-server alone: 8 identical completions on 4 slots after a warm-up call prefilled "
                  f"{floor:.2f}x one prompt (each slot prefills it once: its prompt cache is per slot); one call "
                  f"with n_cmpl=4 children {children:.2f}x (their slots then forget the prompt: a child's "
                  f"continuation prefills it again)")
        finally:
            for s in servers:
                s.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(ap.parse_args().rounds))
