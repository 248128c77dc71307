"""Latency the gateway adds over calling an instant upstream directly, and throughput against it.

Starts, on 127.0.0.1 only:
  * an "instant" OpenAI-compatible upstream (answers a fixed streamed reply
    with no model behind it), and
  * a ponder gateway with one lane pointing at it (thinking off, the default
    SQLite ledger and metrics on: the real hot path),
then times the same request both ways, alternating, and prints the p50/p99
of the *paired* per-request differences (via ponder minus direct, request by
request), plus requests/s at concurrency 32 directly against the upstream
and through ponder, and their ratio.  Targets: <= 1 ms p50 and <= 3 ms p99
added; >= 0.5x the upstream's own requests/s.  Bounded: --requests pairs
(default 400), --load-seconds per side (default 5).

Then, in-process, what the answer guards and telemetry-off add to each
request, timed call by call on the answer this upstream serves and on a
long real-model answer (target: under 0.1 ms p50 together) — far below what
an HTTP round trip can resolve, so measured where it runs.

    .venv/bin/python bench/gateway.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import yaml

UPSTREAM = r'''
import json, sys
from starlette.applications import Starlette
from starlette.responses import StreamingResponse, JSONResponse
from starlette.routing import Route
import uvicorn

CHUNKS = [
    {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "19"}, "finish_reason": None}]},
    {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"id": "x", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}},
]
BODY = "".join(f"data: {json.dumps(c)}\n\n" for c in CHUNKS) + "data: [DONE]\n\n"

async def chat(request):
    await request.body()
    return StreamingResponse(iter([BODY]), media_type="text/event-stream")

app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                        Route("/health", lambda r: JSONResponse({"ok": True}))])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error")
'''

REQ = {"model": "instant", "messages": [{"role": "user", "content": "What is 12 + 7?"}], "stream": True,
       "reasoning_effort": "none", "max_tokens": 8}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"server exited early: {url}")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"server did not start: {url}")


def one(client: httpx.Client, url: str) -> float:
    t0 = time.perf_counter()
    with client.stream("POST", url, json=REQ) as r:
        for line in r.iter_lines():
            if line == "data: [DONE]":
                break
    return time.perf_counter() - t0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def load(url: str, concurrency: int, seconds: float) -> tuple[int, int]:
    done = errors = 0
    stop = time.perf_counter() + seconds
    # keep every connection alive: below max_connections, httpcore closes "surplus" idle connections, sometimes
    # one already handed to a waiting request (encode/httpcore#1110), which would count as a gateway error
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        async def worker():
            nonlocal done, errors
            while time.perf_counter() < stop:
                try:
                    async with c.stream("POST", url, json=REQ) as r:
                        async for _ in r.aiter_lines():
                            pass
                    done += 1 if r.status_code == 200 else 0
                    errors += 0 if r.status_code == 200 else 1
                except httpx.HTTPError:
                    errors += 1
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, errors


def overhead(iterations: int = 20000) -> None:
    """Per-request cost of flag detection (and the guard with no action) and of telemetry's off path."""
    from ponder import guard
    from ponder.strategies.single import result_of_single
    from ponder.telemetry import CURRENT, span
    from ponder.types import Generation, ThinkingReport, Timings, Usage

    long_thinking = ("First, 144 / 12 = 12. Then 12 + 3 = 15. Let me check: 12 * 12 = 144, so 144 / 12 = 12. "
                     "Adding 3 gives 15.\n") * 12 + "So the answer is 15."
    cases = {"instant upstream (\"19\")": Generation("", "19", Usage(), ThinkingReport(0), Timings()),
             "real-model trace (1.2k chars)": Generation(long_thinking, "The answer is 15.", Usage(),
                                                         ThinkingReport(256, used=300, stopped="end"), Timings())}

    def timed(fn) -> list[float]:
        out = []
        for _ in range(iterations):
            t0 = time.perf_counter_ns()
            fn()
            out.append((time.perf_counter_ns() - t0) / 1000)
        return out

    def tracing_off() -> None:
        with span("cache lookup"):
            pass
        with span("POST /chat/completions"):
            pass
        CURRENT.get()

    for name, g in cases.items():
        result = result_of_single(g)
        us = timed(lambda: guard.flags_of(result, "auto"))
        print(f"guards on {name:32s} p50 {pct(us, .5):7.1f} us   p99 {pct(us, .99):7.1f} us")
    off = timed(tracing_off)
    print(f"telemetry off (3 collection points)        p50 {pct(off, .5):7.1f} us   p99 {pct(off, .99):7.1f} us")
    print("target: guards + telemetry off under 100 us p50 per request")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--load-seconds", type=float, default=5.0)
    ap.add_argument("--overhead-only", action="store_true", help="only the in-process guard/telemetry timings")
    args = ap.parse_args()
    overhead()
    if args.overhead_only:
        return

    up_port, gw_port = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="ponder-bench-")
    up = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up_port)])
    cfg = {"server": {"queue_size": 1024, "access_log": False}, "policy": "off",
           "ledger": {"url": f"sqlite:///{tmp}/ledger.db"},
           "lanes": [{"name": "instant", "backend": "openai", "base_url": f"http://127.0.0.1:{up_port}/v1",
                      "native_reasoning": False, "effort": "none", "max_connections": 256}]}
    path = os.path.join(tmp, "ponder.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)
    gw = subprocess.Popen([sys.executable, "-m", "ponder.cli", "serve", "--port", str(gw_port), "--config", path,
                           "--log-level", "warning"], stderr=subprocess.DEVNULL)
    try:
        wait_up(f"http://127.0.0.1:{up_port}/health", up)
        wait_up(f"http://127.0.0.1:{gw_port}/health", gw)
        direct_url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        gw_url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        direct, via = [], []
        with httpx.Client(timeout=30) as c:
            for _ in range(20):  # warm both paths
                one(c, direct_url), one(c, gw_url)
            for _ in range(args.requests):
                direct.append(one(c, direct_url))
                via.append(one(c, gw_url))
        added = [v - d for v, d in zip(via, direct)]
        ms = lambda x: f"{x * 1000:7.2f} ms"
        print(f"pairs               {args.requests} (sequential, alternating direct / via ponder)")
        print(f"direct   p50 {ms(pct(direct, .5))}   p99 {ms(pct(direct, .99))}")
        print(f"ponder   p50 {ms(pct(via, .5))}   p99 {ms(pct(via, .99))}")
        print(f"added (paired differences)  p50 {ms(pct(added, .5))}   p99 {ms(pct(added, .99))}"
              f"   (targets: <= 1 ms p50, <= 3 ms p99)")
        d_done, d_err = asyncio.run(load(direct_url, args.concurrency, args.load_seconds))
        p_done, p_err = asyncio.run(load(gw_url, args.concurrency, args.load_seconds))
        d_rate, p_rate = d_done / args.load_seconds, p_done / args.load_seconds
        print(f"throughput at concurrency {args.concurrency}: direct {d_rate:8.1f} req/s ({d_err} errors), "
              f"via ponder {p_rate:8.1f} req/s ({p_err} errors)")
        print(f"ratio ponder/direct {p_rate / d_rate:6.2f}   (target >= 0.5; {os.cpu_count()} cores shared by "
              "client, gateway and upstream)")
    finally:
        gw.terminate()
        up.terminate()
        gw.wait(10)
        up.wait(10)


if __name__ == "__main__":
    main()
