"""``single``: one sample under the thinking budget (the foundation path)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterator

from ponder.backends.base import Backend
from ponder.strategies.base import Sample, StrategyRequest, StrategyResult
from ponder.thinking import control
from ponder.thinking.extract import extract_answer


@dataclass(frozen=True)
class SingleParams:
    """``single`` takes no parameters."""

    def validate(self, max_samples: int | None = None) -> None:
        return None


class Single:
    name: ClassVar[str] = "single"
    Params: ClassVar[type] = SingleParams

    def stream(self, request: StrategyRequest, backend: Backend, params: SingleParams) -> Iterator[control.Event]:
        return control.generate(
            backend, request.messages, request.budget, request.sampling,
            cancel=request.cancel, loop_guard=request.loop_guard,
        )

    def run(self, request: StrategyRequest, backend: Backend, params: SingleParams) -> StrategyResult:
        if request.pool is not None:
            # the lab: sample 0 of the item's pool is exactly this request's draw
            from ponder.strategies import sampling

            return result_of_single(sampling.one(request, backend, 0).generation, request.answer_kind)
        gen = None
        for event in self.stream(request, backend, params):
            if isinstance(event, control.Finished):
                gen = event.generation
        assert gen is not None
        return result_of_single(gen, request.answer_kind)


def result_of_single(gen, answer_kind: str = "auto") -> StrategyResult:
    extracted = extract_answer(gen.answer, kind=answer_kind) if gen.answer else None
    return StrategyResult(
        answer=gen.answer,
        chosen=gen,
        samples=[Sample(gen, extracted)],
        usage=gen.usage,
        decision="single sample",
    )
