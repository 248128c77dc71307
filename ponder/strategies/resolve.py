"""Turn a strategy's named verifier / step scorer into objects; shared parameter checks."""

from __future__ import annotations

from ponder.backends.base import Backend
from ponder.errors import InvalidRequest
from ponder.strategies.base import StrategyRequest
from ponder.verifiers.judge import OutcomeJudge, StepJudge, YesNoJudge

VERIFIER_NAMES = ("judge", "task")


def verifier_for(request: StrategyRequest, backend: Backend, name: str | None):
    """The caller's verifier if it gave one, else the one ``name`` picks."""
    if request.verifier is not None:
        return request.verifier
    if name == "judge":
        return OutcomeJudge(YesNoJudge(backend, meter=request.meter))
    if name == "task":
        raise InvalidRequest("verifier 'task' needs a task scorer (the lab supplies one)", param="ponder.params.verifier")
    raise InvalidRequest(f"unknown verifier {name!r}; choose one of {', '.join(VERIFIER_NAMES)}",
                         param="ponder.params.verifier")


def prm_for(request: StrategyRequest, backend: Backend):
    return request.prm if request.prm is not None else StepJudge(YesNoJudge(backend, meter=request.meter))


def check_verifier_name(name: str | None, *, allow_none: bool = False) -> None:
    if name is None and allow_none:
        return
    if name not in VERIFIER_NAMES:
        raise InvalidRequest(f"unknown verifier {name!r}; choose one of {', '.join(VERIFIER_NAMES)}",
                             param="ponder.params.verifier")


def check_count(name: str, value: int, ceiling: int | None = None, *, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidRequest(f"{name} must be an integer >= {low}, got {value!r}", param=f"ponder.params.{name}")
    if ceiling is not None and value > ceiling:
        raise InvalidRequest(f"{name} = {value} is above the ceiling of {ceiling}", param=f"ponder.params.{name}")
