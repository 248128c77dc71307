"""Collect real outputs of the shipped models for the answer-guard fixtures.

Runs SmolLM2-135M and Qwen2.5-Coder-0.5B through ponder's own service (the
code the gateway serves) on two kinds of prompts: questions nobody can answer
(private facts, the future, underdetermined equations) — where a model should
give up, and where these tiny models often make something up — and short
arithmetic, at thinking budgets 0, 48 and 160, greedy and sampled.  Each
output is written raw (thinking, answer, how the thinking ended) to
``tests/fixtures/flags/outputs.jsonl``; the flags each one deserves are
labelled by hand in ``tests/fixtures/flags/labels.jsonl``.

    python bench/collect_flags.py [--models smollm2,qwen2.5-coder-0.5b]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UNANSWERABLE = [
    "What is the name of my neighbour's dog?",
    "What will the closing price of Apple stock be next Friday?",
    "What number am I thinking of right now?",
    "What did I eat for breakfast this morning?",
    "What is the password to my email account?",
    "Who will win the football World Cup in 2050?",
    "Solve for x: x + y = 10. Give the value of x.",
    "What is the exact number of people in Paris at this second?",
    "How many coins are in my pocket?",
    "What is the last digit of pi?",
    "What is my phone number?",
    "What will the weather be in Oslo on 3 March 2031?",
]
ARITHMETIC = [
    "Calculate 17 + 26.", "Calculate 9 * 7 - 5.", "Calculate 144 / 12 + 3.", "Calculate 58 - 19 + 4.",
    "A farmer has 3 cows and 2 chickens. How many legs are there in total?",
    "Tom has 12 apples and gives away 5. How many are left?",
]
SUFFIX = "\nGive only the final answer."


async def collect(lane: str, out: list[dict]) -> None:
    from ponder.config import LaneConfig, PonderConfig
    from ponder.request import PonderRequest
    from ponder.service import Ponder
    from ponder.types import Message

    config = PonderConfig(lanes=[LaneConfig(name=lane, model=lane, max_sequences=8)])
    service = Ponder(config)
    jobs = []
    for kind, prompts in (("unanswerable", UNANSWERABLE), ("arithmetic", ARITHMETIC)):
        for p in prompts:
            for budget in (0, 48, 160):
                for seed, temp in ((0, 0.0), (1, 0.7)):
                    jobs.append((kind, p + SUFFIX, budget, seed, temp))

    async def one(kind: str, prompt: str, budget: int, seed: int, temp: float) -> None:
        req = PonderRequest((Message("user", prompt),), model=lane, max_thinking_tokens=budget, seed=seed,
                            temperature=temp, max_answer_tokens=96).validate()
        plan = await service.prepare(req)
        outcome = await service.run(plan).execute()
        g = outcome.results[0].chosen
        out.append({"id": f"{lane}-{len(out):03d}", "model": lane, "kind": kind, "prompt": prompt,
                    "thinking_budget": budget, "seed": seed, "temperature": temp, "thinking": g.thinking,
                    "answer": g.answer, "answer_source": g.answer_source, "finish_reason": g.finish_reason,
                    "thinking_used": g.thinking_report.used, "stopped": g.thinking_report.stopped,
                    "truncated": g.thinking_report.truncated})
        print(f"{lane} {len(out)}/{len(jobs)}", file=sys.stderr)

    sem = asyncio.Semaphore(8)

    async def bounded(job) -> None:
        async with sem:
            await one(*job)

    await asyncio.gather(*(bounded(j) for j in jobs))
    await service.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2,qwen2.5-coder-0.5b")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "flags" / "outputs.jsonl")
    args = ap.parse_args()
    rows: list[dict] = []
    for lane in args.models.split(","):
        part: list[dict] = []
        asyncio.run(collect(lane, part))
        rows += sorted(part, key=lambda r: (r["kind"], r["prompt"], r["thinking_budget"], r["seed"]))
    for i, r in enumerate(rows):
        r["id"] = f"{r['model'].split('-')[0].split('.')[0]}-{i:03d}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} outputs to {args.out}")


if __name__ == "__main__":
    main()
