"""The routing policy: router score bands -> (lane, effort or budget, strategy, N).

A policy file (YAML) names a router and cuts its score into bands, lowest
first; a request whose score is at most a band's ``max_score`` gets that
band.  ``ponder tune`` writes policies from lab results (with the measured
figures that justify each band); ponder ships :data:`DEFAULT_POLICY` so
routing works out of the box.  Bands only fill what a request leaves open:
a client's explicit ``reasoning_effort``, ``max_thinking_tokens`` or
strategy always win.

Example::

    version: 1
    router: heuristic
    bands:
      - {max_score: 0.35, lane: fast, effort: none}
      - {max_score: 0.7, lane: reasoning, effort: low}
      - {max_score: 1.0, lane: reasoning, effort: medium}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ponder.config import PonderConfig
from ponder.errors import ConfigError
from ponder.thinking.budget import EFFORT_ORDER

ROUTERS = ("heuristic", "classifier", "llm", "cascade")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Band(_Strict):
    max_score: float = Field(..., ge=0.0, le=1.0)
    lane: str
    effort: str | None = None
    #: thinking-token cap (instead of an effort tier)
    budget: int | None = Field(None, ge=0)
    strategy: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    #: early exit by probing for the band's requests (written by ``ponder bench tune --write-policy``)
    early_exit: bool | dict[str, int] | None = None
    #: lab figures that justify the band (written by ``ponder tune``)
    measured: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> "Band":
        if self.effort is not None and self.effort not in EFFORT_ORDER:
            raise ValueError(f"effort {self.effort!r} is not one of {', '.join(EFFORT_ORDER)}")
        if self.effort is not None and self.budget is not None:
            raise ValueError("give effort or budget, not both")
        return self

    def label(self) -> str:
        think = f"effort {self.effort}" if self.effort else (f"think {self.budget}" if self.budget is not None
                                                             else "lane default")
        return f"{self.lane} / {think} / {self.strategy or 'lane strategy'}"


class CascadeSpec(_Strict):
    """How the cascade router decides to escalate the fast lane's answer."""

    #: fast samples drawn; with 2 or more, disagreement escalates
    samples: int = Field(2, ge=1, le=8)
    #: escalate when no answer can be extracted
    require_answer: bool = True
    #: escalate when a yes/no judge on the fast model trusts the answer less than this (None: no judge)
    judge_threshold: float | None = Field(None, gt=0.0, lt=1.0)


class RoutingPolicy(_Strict):
    version: Literal[1] = 1
    router: Literal["heuristic", "classifier", "llm", "cascade"] = "heuristic"
    #: router settings: classifier ``model`` (a JSON weights file), llm ``lane``
    router_options: dict[str, Any] = Field(default_factory=dict)
    bands: list[Band]
    #: cascade only: the band's lane answers first, escalation goes to the last band
    cascade: CascadeSpec = CascadeSpec()
    #: lanes the policy names but the config lacks fall back to the default lane (the shipped default)
    soft_lanes: bool = False
    #: where the policy came from (``ponder tune``: runs, constraints)
    source: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bands(self) -> "RoutingPolicy":
        if not self.bands:
            raise ValueError("a policy needs at least one band")
        scores = [b.max_score for b in self.bands]
        if scores != sorted(scores) or len(set(scores)) != len(scores):
            raise ValueError("bands must be listed by increasing max_score")
        if scores[-1] != 1.0:
            raise ValueError("the last band must have max_score: 1.0 (every score needs a band)")
        return self

    def band_for(self, score: float) -> tuple[int, Band]:
        for i, b in enumerate(self.bands):
            if score <= b.max_score:
                return i, b
        return len(self.bands) - 1, self.bands[-1]

    def check_against(self, config: PonderConfig) -> None:
        """Every lane a band names must exist (unless ``soft_lanes``)."""
        names = {lane.name for lane in config.lanes}
        for b in self.bands:
            if b.lane not in names and not self.soft_lanes:
                raise ConfigError(f"policy band {b.label()!r} names lane {b.lane!r}, which the config does not "
                                  f"define (lanes: {', '.join(sorted(names))})", param="--policy")

    def lane_name(self, band: Band, config: PonderConfig) -> str:
        names = {lane.name for lane in config.lanes}
        return band.lane if band.lane in names else config.lane(None).name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(exclude_none=True), sort_keys=False)


DEFAULT_POLICY_FILE = Path(__file__).with_name("default_policy.yaml")


def load_policy(path: str | os.PathLike | None) -> RoutingPolicy:
    """A policy file; ``None`` gives the shipped default."""
    p = Path(path) if path is not None else DEFAULT_POLICY_FILE
    if not p.is_file():
        raise ConfigError(f"policy file not found: {p}", param="--policy")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}", param="--policy") from None
    try:
        return RoutingPolicy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{p}: {where + ': ' if where else ''}{msg}", param="--policy") from None
