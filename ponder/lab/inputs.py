"""What a lab run reads: its items (tasks, JSONL data) and its lanes (a config's, or one per ``--models`` entry)."""

from __future__ import annotations

from typing import Callable

from ponder.backends.models import model_label, resolve_model
from ponder.config import LaneConfig, PonderConfig, load_config
from ponder.errors import ConfigError, PonderError
from ponder.lab.config import BenchConfig
from ponder.lab.tasks import Item, JsonlSpec, load_jsonl, load_task



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
