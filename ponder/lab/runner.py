"""Run a lab grid: every (model, budget, strategy, N) on every item, in-process.

Each configuration is planned by :func:`ponder.policy.plan_request` from an
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
from ponder.backends.models import model_label, resolve_model
from ponder.config import LaneConfig, PonderConfig, load_config
from ponder.errors import ConfigError, PonderError
from ponder.lab.config import BenchConfig, Point, is_pooled
from ponder.lab.pool import SamplePool
from ponder.lab.tasks import Item, JsonlSpec, load_jsonl, load_task, sha256_text
from ponder.service import Ponder
from ponder.policy import plan_request
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


# ---------------------------------------------------------------------------
# items and lanes
# ---------------------------------------------------------------------------


def load_items(cfg: BenchConfig, warn: Callable[[str], None]) -> list[Item]:
    items: list[Item] = []
    for spec in cfg.tasks:
        items += load_task(spec, limit=cfg.limit, seed=cfg.seed, answer_kind=cfg.answer_kind)
    if cfg.data:
        items += load_jsonl(
            JsonlSpec(cfg.data, cfg.question_field, cfg.answer_field, cfg.id_field, cfg.difficulty_field, cfg.scorer,
                      cfg.on_bad_line),
            limit=cfg.limit, answer_kind=cfg.answer_kind, warn=warn)
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise ConfigError(f"item id {it.id!r} appears twice; ids must be unique", param="--data")
        seen.add(it.id)
    return items


def build_config(cfg: BenchConfig, *, check_models: bool = True) -> PonderConfig:
    """The serving config the lab plans with: the YAML's lanes, or one lane per ``--models`` entry (no ledger)."""
    from ponder.config import LedgerConfig

    return _lanes_config(cfg, check_models=check_models).model_copy(update={"ledger": LedgerConfig(url="off")})


def _lanes_config(cfg: BenchConfig, *, check_models: bool = True) -> PonderConfig:
    if cfg.config_path:
        base = load_config(cfg.config_path)
        if not cfg.models:
            return base
        names = {lane.name: lane for lane in base.lanes}
        missing = [m for m in cfg.models if m not in names]
        if missing:
            raise ConfigError(f"--models {', '.join(missing)}: not a lane of {cfg.config_path} "
                              f"(lanes: {', '.join(names)})", param="--models")
        return base.model_copy(update={"lanes": [names[m] for m in cfg.models]})
    models = cfg.models or [None]
    lanes = []
    for m in models:
        if check_models:
            try:
                resolve_model(m)
            except PonderError as exc:
                raise ConfigError(f"--models {m}: {exc.message}", param="--models") from None
        lanes.append(LaneConfig(name=model_label(m) if check_models else str(m), model=m, n_ctx=4096))
    if len({lane.name for lane in lanes}) != len(lanes):
        raise ConfigError("--models lists the same model twice", param="--models")
    return PonderConfig(lanes=lanes)


def model_manifest(config: PonderConfig) -> dict[str, dict]:
    """Name, file and sha256 of each lane's model (upstreams: their URL and model name)."""
    from ponder.backends.registry import kind_of

    return {lane.name: kind_of(lane).provenance(lane) for lane in config.lanes}


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


def planned_generations(cfg: BenchConfig, points: list[Point]) -> int:
    """Samples one (model, item) unit draws: one pool of the largest N per (budget, tools), plus the unpooled
    strategies."""
    total = 0
    by_budget: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        by_budget.setdefault((p.budget, p.tools), []).append(p)
    for pts in by_budget.values():
        pooled_n = [p.n for p in pts if is_pooled(p.strategy)]
        total += max(pooled_n) if pooled_n else 0
        # online early stopping draws its later traces fresh (they may be cut short, so they are not pooled)
        total += sum(p.n for p in pts if p.strategy == "deepconf-online")
        total += sum(p.n if p.strategy in ("verify-retry", "beam", "dvts", "mcts") else p.n + 1
                     for p in pts if not is_pooled(p.strategy))
    return total


async def _run_all(cfg: BenchConfig, out: Path, ponder: Ponder, config: PonderConfig, items: list[Item],
                   points: dict[str, list[Point]], state: RunState, manifest: dict, progress: bool,
                   announce: Callable[[str], None], close: bool) -> RunOutcome:
    seeds = {it.id: cfg.seed * 100_003 + i for i, it in enumerate(items)}
    units = [(lane, it) for lane in config.lanes for it in items
             if any((p.key, it.id) not in state.done for p in points[lane.name])]
    total_cfgs = sum(len(points[lane.name]) for lane in config.lanes) * len(items)
    todo_gens = sum(planned_generations(cfg, [p for p in points[lane.name] if (p.key, it.id) not in state.done])
                    for lane, it in units)
    cap = max((b for b in (cfg.budgets or [])), default=0) + cfg.answer_tokens
    announce(f"planned: {total_cfgs} configuration results ({len(items)} items x "
             f"{sum(len(v) for v in points.values())} configurations), about {todo_gens} generations of up to "
             f"{cap} tokens each still to run" + (f" ({len(state.done)} already logged)" if state.done else "")
             + (f"; that is up to {todo_gens * cap:,} generated tokens: a long run (--limit makes it smaller)"
                if todo_gens * cap > 500_000 else ""))
    bar = _progress(todo_gens, progress)
    t_start = time.perf_counter()
    interrupted = False
    log = (out / SAMPLES).open("a", encoding="utf-8")
    cancel = CancelToken()
    sem = asyncio.Semaphore(cfg.concurrency)

    probe_at = max(1, min(16, todo_gens // 10))
    t_gen0 = time.perf_counter()

    def on_generation(g: Generation) -> None:
        state.generations += 1
        if state.generations == probe_at and todo_gens > probe_at:
            # the estimate the plan line could not give: measured on this machine, this model, these budgets
            per = (time.perf_counter() - t_gen0) / probe_at
            rest = per * (todo_gens - probe_at)
            announce(f"estimate: about {_duration(rest)} more ({per:.2f} s per generation over the first "
                     f"{probe_at}); Ctrl-C stops within seconds and --resume continues")
        state.tokens += g.usage.thinking_tokens + g.usage.answer_tokens
        state.from_thinking += g.answer_source == "thinking"
        bar.update(1)
        bar.set_postfix_str(f"tokens {state.tokens}, acc {state.correct / max(1, state.lines):.2f} (all configs)"
                            + (f", {state.errors} errors" if state.errors else ""), refresh=False)

    sink = _Progress(on_generation)

    async def unit(lane: LaneConfig, item: Item) -> None:
        async with sem:
            backend = await ponder.backend_async(lane)
            memo: dict = {}
            pools: dict[str, SamplePool] = {}
            for point in points[lane.name]:
                if (point.key, item.id) in state.done:
                    continue
                pool = pools.setdefault((point.budget, point.tools), SamplePool())
                line = await run_point(ponder, backend, cfg, point, item, seeds[item.id], pool, memo,
                                       cancel=cancel, sink=sink)
                log.write(json.dumps(line) + "\n")
                log.flush()
                state.done.add((point.key, item.id))
                state.lines += 1
                state.correct += bool(line.get("correct"))
                state.errors += line.get("error") is not None
                state.engine_s += line.get("engine_s") or 0.0

    tasks = [asyncio.ensure_future(unit(lane, it)) for lane, it in units]
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        interrupted = True
    except BaseException:
        cancel.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        if interrupted:
            cancel.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        log.close()
        bar.close()
        if close:
            for b in ponder.backends():
                await b.aclose()
    if interrupted:
        announce(f"interrupted: finished configurations are in {out / SAMPLES}; continue with "
                 f"`ponder bench --resume --out {out}`")
    return RunOutcome(out=out, lines=read_samples(out), items=items, config=config, manifest=manifest,
                      wall_s=time.perf_counter() - t_start, interrupted=interrupted, engine_s=state.engine_s,
                      new_lines=state.lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="gen", desc="bench", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1)
