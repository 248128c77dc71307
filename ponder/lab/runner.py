"""Run a lab grid: every (model, budget, strategy, N) on every item, in-process.

Each configuration is planned by :func:`ponder.planning.plan_request` from an
ordinary chat-completion request and run by the same strategy object the
gateway serves; the lab only adds the item's scorer (as the strategy's
programmatic verifier), the answer kind and a :class:`SamplePool` so
independent draws are made once per item and shared by every N.

Work is split into units of (model, item); ``--concurrency`` units run at
once, and the embedded engine decodes all their samples in one batch.  Each
finished configuration is appended to ``samples.jsonl`` at once, so an
interrupted run (Ctrl-C stops it within seconds) loses at most the
configurations in flight; ``--resume`` skips every (configuration, item)
already in the log.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ponder import __version__
from ponder.backends.base import Backend
from ponder.config import LaneConfig, PonderConfig
from ponder.errors import ConfigError, PonderError
from ponder.lab.config import BenchConfig, Point, is_pooled
from ponder.lab.inputs import build_config, load_items, model_manifest  # noqa: F401  (re-exported)
from ponder.lab.pool import SamplePool
from ponder.lab.progress import Tracker, plan_line, planned_generations, planned_tokens, progress_bar
from ponder.lab.tasks import Item, sha256_text
from ponder.service import Ponder
from ponder.planning import plan_request
from ponder.request import PonderRequest
from ponder.thinking.extract import extract_answer
from ponder.types import CancelToken, Generation, Message

SAMPLES = "samples.jsonl"
RUN = "run.json"
LINE_SCHEMA = 1


@dataclass
class RunState:
    """Counters of one run (one event loop: no locks needed)."""

    done: set[tuple[str, str]] = field(default_factory=set)
    lines: int = 0
    correct: int = 0
    tokens: int = 0
    errors: int = 0
    engine_s: float = 0.0
    generations: int = 0
    from_thinking: int = 0

    def record(self, config_key: str, item_id: str, line: dict) -> None:
        """One finished (configuration, item): logged, counted."""
        self.done.add((config_key, item_id))
        self.lines += 1
        self.correct += bool(line.get("correct"))
        self.errors += line.get("error") is not None
        self.engine_s += line.get("engine_s") or 0.0


# ---------------------------------------------------------------------------
# one configuration on one item
# ---------------------------------------------------------------------------


def request_for(cfg: BenchConfig, point: Point, item: Item, seed: int) -> PonderRequest:
    """The request a client would make for this configuration, in ponder's own terms."""
    kind, _, value = point.budget.partition("=")
    k = cfg.logprobs_k()
    return PonderRequest(
        messages=(Message("user", cfg.prompt.format(question=item.question)),), model=point.model,
        effort=value if kind == "effort" else None, max_thinking_tokens=None if kind == "effort" else int(value),
        max_answer_tokens=cfg.answer_tokens, temperature=cfg.temperature, seed=seed,
        strategy=point.strategy, params=cfg.strategy_params(point),
        tools=tuple(point.tools.split("+")) if point.tools else None, logprobs=bool(k), top_logprobs=k or 0,
        early_exit=point.early_exit_option() or False,
    ).validate()


def score(item: Item, answer: str, extracted: str | None, memo: dict) -> tuple[float | None, str | None]:
    """(score, error) of one answer under the item's scorer; a raising scorer is an error, not a crash."""
    key = (answer, extracted)
    if key not in memo:
        try:
            memo[key] = (float(item.verifier.verify(item.question, answer, extracted).score), None)
        except Exception as exc:  # a user's scorer may raise anything
            memo[key] = (None, f"scorer raised {type(exc).__name__}: {exc}")
    return memo[key]


class _Progress:
    """Counts finished generations for the progress bar (a sink on every strategy request)."""

    def __init__(self, on_generation: Callable[[Generation], None]) -> None:
        self.on_generation = on_generation

    def sample_event(self, index: int, event) -> None:
        pass

    def sample_done(self, index: int, generation: Generation) -> None:
        self.on_generation(generation)


async def run_point(ponder: Ponder, backend: Backend, cfg: BenchConfig, point: Point, item: Item, seed: int,
                    pool: SamplePool | None, memo: dict, *, cancel: CancelToken,
                    sink: _Progress | None = None) -> dict:
    req = request_for(cfg, point, item, seed)
    prompt_sha = sha256_text(req.messages[0].content)
    base = {
        "schema": LINE_SCHEMA, "item": item.id, "task": item.task, "difficulty": item.difficulty,
        "prompt_sha256": prompt_sha, "expected_sha256": item.expected_sha256, "config": point.as_dict(), "seed": seed,
    }
    t0 = time.perf_counter()
    fresh0 = pool.fresh_seconds if pool else 0.0
    pooled = is_pooled(point.strategy)
    try:
        plan = ponder.prepare_sync(req)
        request = replace(ponder.strategy_request(plan, cancel, sink=sink), verifier=item.verifier,
                          answer_kind=item.answer_kind, pool=pool if pooled else None)
        result = await plan.runner.run(request, backend, plan.strategy_params)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if isinstance(exc, ConfigError):
            raise
        msg = exc.message if isinstance(exc, PonderError) else f"{type(exc).__name__}: {exc}"
        return {**base, "error": f"engine: {msg}", "correct": False, "score": None, "usage": None,
                "latency_s": time.perf_counter() - t0, "engine_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    if pool is not None and pooled:
        # replayed draws cost nothing now; charge each configuration for the draws it used
        fresh = pool.fresh_seconds - fresh0
        engine_s = fresh
        latency = max((s.generation.timings.total_s or 0.0) for s in result.samples) if result.samples else wall
        latency += max(0.0, wall - fresh)
    else:
        engine_s = wall
        latency = wall
    extracted = extract_answer(result.answer, kind=item.answer_kind) if result.answer else None
    sc, err = await asyncio.to_thread(score, item, result.answer, extracted, memo)
    draws = []
    for i, s in enumerate(result.samples):
        ds, _ = await asyncio.to_thread(score, item, s.generation.answer, s.answer, memo)
        d = {"i": i, "extracted": s.answer, "score": ds, "thinking_tokens": s.generation.usage.thinking_tokens,
             "answer_tokens": s.generation.usage.answer_tokens, "answer_source": s.generation.answer_source}
        if s.confidence:
            d["confidence"] = {k: round(v, 5) for k, v in s.confidence.items()}
        if s.generation.early_stopped:
            d["early_stopped"] = True
        if s.generation.thinking_report.probe_tokens:
            d["probe_tokens"] = s.generation.thinking_report.probe_tokens
        draws.append(d)
    u = result.usage
    chosen = result.chosen
    from ponder.pricing import price

    return {
        **base,
        "thinking": chosen.thinking,
        "answer": result.answer,
        "extracted": extracted,
        "answer_source": chosen.answer_source,
        "score": sc,
        "correct": sc == 1.0,
        "error": err,
        "n_samples": result.n_samples,
        "independent_draws": pooled,
        "draws": draws,
        "usage": {"prompt_tokens": u.prompt_tokens, "cached_prompt_tokens": u.cached_prompt_tokens,
                  "thinking_tokens": u.thinking_tokens, "answer_tokens": u.answer_tokens,
                  "tool_tokens": u.tool_tokens},
        "cost_usd": price(u, plan.lane.prices),
        "latency_s": latency,
        "engine_s": engine_s,
        "truncated": bool(chosen.thinking_report.truncated),
        "stopped": chosen.thinking_report.stopped,
        "decision": result.decision,
        "confidence": result.confidence,
        "tools": chosen.tools or None,
    }


# ---------------------------------------------------------------------------
# the log
# ---------------------------------------------------------------------------


def read_samples(out: Path, *, repair: bool = False) -> list[dict]:
    """Every complete line of ``samples.jsonl``; with ``repair`` a torn last line is cut off."""
    path = out / SAMPLES
    if not path.exists():
        return []
    lines, good = [], []
    raw = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for text in raw:
        try:
            rec = json.loads(text)
            if not text.endswith("\n"):
                raise ValueError("torn line")
        except ValueError:
            continue
        lines.append(rec)
        good.append(text)
    if repair and len(good) != len(raw):
        path.write_text("".join(good), encoding="utf-8")
    return lines


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["ponder", *sys.argv[1:]])


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------


@dataclass
class RunOutcome:
    out: Path
    lines: list[dict]
    items: list[Item]
    config: PonderConfig
    manifest: dict
    wall_s: float
    interrupted: bool
    engine_s: float
    new_lines: int
    #: the first time estimate against the real duration: {"said_s", "took_s"} (None: none was made)
    estimate: dict | None = None


def prepare(cfg: BenchConfig, out: Path, *, resume: bool) -> BenchConfig:
    """Create or reopen a run directory; on resume the stored configuration wins."""
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / RUN
    if resume:
        if not run_file.exists():
            raise ConfigError(f"--resume: {out} has no {RUN}; start the run without --resume", param="--resume")
        stored = json.loads(run_file.read_text())
        return BenchConfig.from_dict(stored["config"])
    if (out / SAMPLES).exists() and (out / SAMPLES).stat().st_size > 0:
        raise ConfigError(f"{out} already holds a run; use --resume to continue it or pick another --out",
                          param="--out")
    return cfg


def run_bench(cfg: BenchConfig, out: Path, *, resume: bool = False, progress: bool = True,
              backends: dict[str, Backend] | None = None, warn: Callable[[str], None] | None = None,
              announce: Callable[[str], None] | None = None) -> RunOutcome:
    """Run (or resume) a lab grid; Ctrl-C stops it within seconds and leaves it resumable."""
    warn = warn or (lambda m: print(f"warning: {m}", file=sys.stderr))
    announce = announce or (lambda m: print(m, file=sys.stderr))
    cfg = prepare(cfg, Path(out), resume=resume)
    cfg.validate()
    out = Path(out)
    items = load_items(cfg, warn)
    config = build_config(cfg, check_models=backends is None)
    manifest = model_manifest(config) if backends is None else {
        lane.name: {"backend": "provided", "model": backends[lane.name].info.model} for lane in config.lanes}
    ponder = Ponder(config, backends=backends)
    points = {lane.name: cfg.points(lane.name) for lane in config.lanes}
    _preflight(ponder, cfg, points, items[0])
    if not resume:
        (out / RUN).write_text(json.dumps({
            "config": cfg.as_dict(), "command": command_line(), "ponder_version": __version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "models": manifest}, indent=2))
    existing = read_samples(out, repair=True)
    state = RunState(done={(r["config"]["key"], r["item"]) for r in existing})
    try:
        return asyncio.run(_run_all(cfg, out, ponder, config, items, points, state, manifest, progress, announce,
                                    close=backends is None))
    finally:
        if backends is None:
            ponder.ledger.close()


async def _run_all(cfg: BenchConfig, out: Path, ponder: Ponder, config: PonderConfig, items: list[Item],
                   points: dict[str, list[Point]], state: RunState, manifest: dict, progress: bool,
                   announce: Callable[[str], None], close: bool) -> RunOutcome:
    seeds = {it.id: cfg.seed * 100_003 + i for i, it in enumerate(items)}
    units = [(lane, it) for lane in config.lanes for it in items
             if any((p.key, it.id) not in state.done for p in points[lane.name])]
    todo = sum(planned_generations(cfg, [p for p in points[lane.name] if (p.key, it.id) not in state.done])
               for lane, it in units)
    efforts = config.thinking.efforts
    cap_of = lambda b: int(b.split("=", 1)[1]) if b.startswith("think=") else efforts.get(b.split("=", 1)[1], 0)  # noqa: E731
    planned = sum(planned_tokens(cfg, [p for p in points[lane.name] if (p.key, it.id) not in state.done], cap_of)
                  for lane, it in units)
    announce(plan_line(cfg, len(items), sum(len(v) for v in points.values()), todo, len(state.done)))
    for lane in {lane.name: lane for lane, _ in units}.values():
        await ponder.backend_async(lane)  # models load before the clock of the estimate starts
    bar = progress_bar(todo, progress)
    t_start = time.perf_counter()
    log = (out / SAMPLES).open("a", encoding="utf-8")
    cancel = CancelToken()
    sem = asyncio.Semaphore(cfg.concurrency)
    tracker = Tracker(state, todo, bar, announce, planned=planned, answer_tokens=cfg.answer_tokens)
    sink = _Progress(tracker.on_generation)

    async def unit(lane: LaneConfig, item: Item) -> None:
        async with sem:
            backend = await ponder.backend_async(lane)
            memo: dict = {}
            pools: dict[tuple[str, str], SamplePool] = {}
            for point in points[lane.name]:
                if (point.key, item.id) in state.done:
                    continue
                pool = pools.setdefault((point.budget, point.tools, point.early_exit), SamplePool())
                line = await run_point(ponder, backend, cfg, point, item, seeds[item.id], pool, memo,
                                       cancel=cancel, sink=sink)
                log.write(json.dumps(line) + "\n")
                log.flush()
                state.record(point.key, item.id, line)

    tasks = [asyncio.ensure_future(unit(lane, it)) for lane, it in units]
    try:
        interrupted = await _gather_until_interrupted(tasks, cancel)
    finally:
        log.close()
        bar.close()
        if close:
            for b in ponder.backends():
                await b.aclose()
    if not interrupted:
        tracker.finish()
    estimate = tracker.report()
    if interrupted:
        announce(f"interrupted: finished configurations are in {out / SAMPLES}; continue with "
                 f"`ponder bench --resume --out {out}`")
    return RunOutcome(out=out, lines=read_samples(out), items=items, config=config, manifest=manifest,
                      wall_s=time.perf_counter() - t_start, interrupted=interrupted, engine_s=state.engine_s,
                      new_lines=state.lines, estimate=estimate)


async def _gather_until_interrupted(tasks: list[asyncio.Future], cancel: CancelToken) -> bool:
    """Run the units; True when Ctrl-C interrupted them (every unit is stopped and awaited either way)."""
    try:
        await asyncio.gather(*tasks)
        return False
    except BaseException as exc:
        cancel.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if isinstance(exc, asyncio.CancelledError):
            return True
        raise


def _preflight(ponder: Ponder, cfg: BenchConfig, points: dict[str, list[Point]], item: Item) -> None:
    """Plan every configuration once before any work, so a bad budget or N fails in a second, not an hour."""
    for pts in points.values():
        for p in pts:
            try:
                plan_request(request_for(cfg, p, item, 0), ponder.config)
            except PonderError as exc:
                flag = {"max_thinking_tokens": "--budgets", "reasoning_effort": "--efforts"}.get(exc.param or "",
                                                                                                  "--param")
                raise ConfigError(f"configuration {p.key}: {exc.message}", param=flag) from None
