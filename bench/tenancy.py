"""What keys and quotas cost per request, and whether a cap ever overshoots.

1. Added latency: authenticate (hash + lookup) + per-key limits + reserve
   (one atomic step over every limit) + settle, per request, sequential,
   with ``memory://`` and with a real ``redis-server`` on 127.0.0.1.
   Targets: p50 <= 0.5 ms (memory), <= 2 ms (Redis on loopback).
2. Overshoot: 1,000 concurrent requests of one key through two Tenancy
   instances (two replicas) sharing the store, against a monthly spend cap.
   Each request's real cost is its worst case, so the cap implies exactly how
   many fit; printed: admitted vs implied, refused, and the overshoot
   (settled spend above the cap; must be 0).  A second round settles random
   real costs below the worst case and checks the cap again.

    .venv/bin/python bench/tenancy.py [--requests 3000] [--concurrent 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from ponder.api.request import parse_body
from ponder.config import config_from_dict
from ponder.errors import Overloaded
from ponder.planning import plan_request
from ponder.service import Ponder
from ponder.tenancy import Tenancy, hash_secret
from ponder.tenancy.store import MemoryStore, RedisStore
from ponder.types import Usage

SECRET = "pk-bench-secret"


def config(cap_usd: float) -> dict:
    return {"policy": "off", "ledger": {"url": "off"},
            "auth": {"required": True, "keys": [{"name": "bench", "key_sha256": hash_secret(SECRET), "limits": {
                "requests_per_minute": 10_000_000, "tokens_per_minute": 10_000_000_000,
                "thinking_tokens_per_day": 10_000_000_000, "spend_usd_per_month": cap_usd, "max_concurrent": 100_000,
                "max_thinking_tokens": 4096, "max_samples": 8}}]},
            "lanes": [{"name": "r", "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "upstream_model": "m",
                       "effort": "none", "prices": {"input_per_1m": 1.0, "output_per_1m": 4.0}}]}


def start_redis(tmp: Path) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not installed (apt-get install redis-server; make test installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp), "--save", "",
                             "--appendonly", "no", "--loglevel", "warning"], stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


def plan_for(cfg) -> object:
    service = Ponder(cfg)
    req = parse_body(b'{"messages": [{"role": "user", "content": "What is 17 * 23?"}], "max_tokens": 64, '
                     b'"reasoning_effort": "low"}', max_bytes=1 << 20, max_depth=32, max_messages=64,
                     max_message_chars=100_000)
    return plan_request(req.to_ponder(), service.config)


def outcome_of(usage: Usage, cost: float):
    return SimpleNamespace(usage=usage, cost_usd=cost)


async def latency(tenancy: Tenancy, plan, n: int) -> list[float]:
    headers = {"authorization": f"Bearer {SECRET}"}
    worst = tenancy.asks(await tenancy.authenticate(headers), plan, 16)
    usage = Usage(prompt_tokens=16, thinking_tokens=40, answer_tokens=8)
    cost = next(a.amount for a in worst if a.kind == "spend") / 10
    out = []
    for i in range(n + 50):
        t0 = time.perf_counter()
        principal = await tenancy.authenticate(headers)
        p = tenancy.apply_limits(principal, plan)
        res = await tenancy.reserve(principal, p, 16)
        await res.settle(outcome_of(usage, cost))
        if i >= 50:  # warm-up: connections, scripts loaded
            out.append((time.perf_counter() - t0) * 1000)
    return out


async def overshoot(make_store, cfg_dict: dict, plan_cfg, concurrent: int, random_costs: bool) -> dict:
    probe = Tenancy(config_from_dict(cfg_dict), MemoryStore())
    principal = await probe.authenticate({"authorization": f"Bearer {SECRET}"})
    plan = plan_for(plan_cfg)
    worst = next(a.amount for a in probe.asks(principal, plan, 16) if a.kind == "spend")
    fit = 300
    cap = (fit + 0.5) * worst
    cfg_dict = {**cfg_dict, "auth": {**cfg_dict["auth"], "keys": [
        {**cfg_dict["auth"]["keys"][0], "limits": {**cfg_dict["auth"]["keys"][0]["limits"],
                                                   "spend_usd_per_month": cap}}]}}
    cfg = config_from_dict(cfg_dict)
    store_a, store_b = make_store(), make_store()
    replicas = [Tenancy(cfg, store_a, replica="a"), Tenancy(cfg, store_b, replica="b")]
    # a fresh key name per round so rounds do not share counters
    rng = random.Random(7)
    admitted, refused, settled = 0, 0, 0.0

    async def one(i: int) -> None:
        nonlocal admitted, refused, settled
        t = replicas[i % 2]
        p = await t.authenticate({"authorization": f"Bearer {SECRET}"})
        try:
            res = await t.reserve(p, t.apply_limits(p, plan), 16)
        except Overloaded:
            refused += 1
            return
        admitted += 1
        await asyncio.sleep(rng.random() * 0.01)
        cost = worst * (rng.uniform(0.2, 1.0) if random_costs else 1.0)
        settled += cost
        await res.settle(outcome_of(Usage(prompt_tokens=16), cost))

    await asyncio.gather(*(one(i) for i in range(concurrent)))
    spend = await store_a.usage("bench", [a for a in probe.asks(principal, plan, 16) if a.kind == "spend"])
    for t in replicas:
        await t.aclose()
    return {"cap": cap, "worst": worst, "implied": fit if not random_costs else None, "admitted": admitted,
            "refused": refused, "settled": settled, "store_spend": spend["spend"],
            "overshoot": max(0.0, spend["spend"] - cap)}


def summary(xs: list[float]) -> str:
    xs = sorted(xs)
    return (f"p50 {statistics.median(xs):.3f} ms  p90 {xs[int(0.9 * len(xs))]:.3f} ms  "
            f"p99 {xs[int(0.99 * len(xs))]:.3f} ms  (n={len(xs)})")


async def main_async(args) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="ponder-bench-tenancy-"))
    redis_proc, redis_url = start_redis(tmp)
    ok = True
    try:
        cfg_dict = config(1e9)
        cfg = config_from_dict(cfg_dict)
        plan = plan_for(cfg)
        print(f"auth + limits + reserve + settle per request, sequential ({args.requests} requests):")
        for label, store, target in (("memory://", MemoryStore(), 0.5), ("redis (loopback)", RedisStore(redis_url), 2.0)):
            t = Tenancy(cfg, store, replica="bench")
            xs = await latency(t, plan, args.requests)
            await t.aclose()
            p50 = statistics.median(xs)
            ok &= p50 <= target
            print(f"  {label:17} {summary(xs)}   target p50 <= {target} ms: {'met' if p50 <= target else 'MISSED'}")
        print(f"\n{args.concurrent} concurrent requests, two replicas, one spend cap:")
        for label, make in (("memory://", None), ("redis", lambda: RedisStore(redis_url))):
            for random_costs in (False, True):
                if make is None:
                    shared = MemoryStore()
                    maker = lambda shared=shared: shared  # noqa: E731 - both replicas share one process store
                else:
                    # flush between rounds: each round starts from an unspent key
                    subprocess.run(["redis-cli", "-u", redis_url, "FLUSHDB"], stdout=subprocess.DEVNULL, check=False)
                    maker = make
                r = await overshoot(maker, cfg_dict, cfg, args.concurrent, random_costs)
                ok &= r["overshoot"] == 0 and (random_costs or r["admitted"] == r["implied"])
                kind = "real cost 20-100% of worst case" if random_costs else "real cost = worst case"
                implied = f" (cap implies {r['implied']})" if r["implied"] is not None else ""
                print(f"  {label:9} {kind:33} admitted {r['admitted']}{implied}, refused {r['refused']}, "
                      f"spend ${r['store_spend']:.6f} of cap ${r['cap']:.6f}, overshoot ${r['overshoot']:.6f}")
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nall targets met" if ok else "\nsome target MISSED")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000, help="sequential requests for the latency figure")
    ap.add_argument("--concurrent", type=int, default=1000, help="concurrent requests for the overshoot figure")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
