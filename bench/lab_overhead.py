"""Does the lab keep the engine busy?  Harness time vs engine time on the smoke suite.

Engine time is measured inside the backend (prompt evaluation, sampling,
tokenization); harness time is everything else of the run (planning, pool
replays, answer extraction, scoring, logging, progress).  Target: harness
time <= 10% of engine time.  Writing results.json, the plots and the report
is timed separately (it happens once per run, not per sample).

    .venv/bin/python bench/lab_overhead.py [--limit 12] [--model NAME]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ponder.backends.llama_cpp import LlamaCppBackend
from ponder.backends.models import model_label
from ponder.lab.config import build_bench_config
from ponder.lab.report import write_all
from ponder.lab.results import build_results
from ponder.lab.runner import RUN, run_bench


class EngineClock:
    """Wraps a backend's engine calls and sums the time spent inside them."""

    def __init__(self, backend) -> None:
        self.seconds = 0.0
        for name in ("stream_text", "count_tokens", "token_logprobs"):
            setattr(backend, name, self._wrap(getattr(backend, name), streaming=name == "stream_text"))

    def _wrap(self, fn, *, streaming: bool):
        clock = self

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                clock.seconds += time.perf_counter() - t0

        def timed_stream(*a, **kw):
            t0 = time.perf_counter()
            gen = fn(*a, **kw)
            clock.seconds += time.perf_counter() - t0
            while True:
                t0 = time.perf_counter()
                try:
                    piece = next(gen)
                except StopIteration:
                    clock.seconds += time.perf_counter() - t0
                    return
                clock.seconds += time.perf_counter() - t0
                yield piece

        return timed_stream if streaming else timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="items (default: the smoke suite's)")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    cfg = build_bench_config({"suite": "smoke", "limit": args.limit})
    label = model_label(args.model)
    cfg.models = [label]
    backend = LlamaCppBackend(args.model, n_ctx=4096)
    clock = EngineClock(backend)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "run"
        t0 = time.perf_counter()
        outcome = run_bench(cfg, out, backends={label: backend}, progress=False)
        run_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        results = build_results(outcome.lines, run=json.loads((out / RUN).read_text()), items=len(outcome.items),
                                wall_s=run_s, partial=False)
        write_all(results, out)
        report_s = time.perf_counter() - t1
    engine = clock.seconds
    harness = run_s - engine
    draws = sum(len(r.get("draws") or []) for r in outcome.lines)
    print(f"smoke suite on {backend.info.model}: {len(outcome.items)} items, {len(outcome.lines)} configuration "
          f"results, {draws} logged draws")
    print(f"run wall {run_s:.2f} s = engine {engine:.2f} s + harness {harness:.2f} s")
    print(f"harness / engine = {harness / engine:.1%} (target <= 10%)")
    print(f"results.json + plots + report (once per run): {report_s:.2f} s")


if __name__ == "__main__":
    main()
