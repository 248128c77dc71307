"""``single``: one sample under the thinking budget (the foundation path)."""

from __future__ import annotations

from dataclasses import dataclass

from ponder.backends.base import Backend
from ponder.strategies import sampling
from ponder.strategies.base import Sample, StrategyRequest, StrategyResult, register
from ponder.thinking.extract import extract_answer
from ponder.types import Generation


@dataclass(frozen=True)
class SingleParams:
    """``single`` takes no parameters."""

    def validate(self, max_samples: int | None = None) -> None:
        return None


@register("single", "one sample under the thinking budget; its tokens stream as they are generated",
          pooled=True, streams_live=True)
class Single:
    Params = SingleParams

    async def run(self, request: StrategyRequest, backend: Backend, params: SingleParams) -> StrategyResult:
        samples = await sampling.draw(request, backend, 1)
        if not samples:
            return stopped_result(request)
        return result_of_single(samples[0].generation, request.answer_kind)


def result_of_single(gen: Generation, answer_kind: str = "auto") -> StrategyResult:
    extracted = extract_answer(gen.answer, kind=answer_kind) if gen.answer else None
    stopped = "deadline" if "deadline" in (gen.finish_reason, gen.thinking_report.stopped) else \
        ("cancelled" if gen.finish_reason == "cancelled" else None)
    return StrategyResult(
        answer=gen.answer,
        chosen=gen,
        samples=[Sample(gen, extracted)],
        usage=gen.usage,
        decision="single sample" + (" (answer taken from the thinking)" if gen.answer_source == "thinking" else ""),
        stopped=stopped,
    )


def stopped_result(request: StrategyRequest) -> StrategyResult:
    """No sample could start (deadline passed or cancelled before any work)."""
    from ponder.types import ThinkingReport, Timings, Usage

    why = "cancelled" if request.cancel.cancelled else "deadline"
    rep = ThinkingReport(budget=request.budget.max_tokens, min=request.budget.min_tokens, stopped=why,
                         effort=request.budget.effort)
    g = Generation("", "", Usage(), rep, Timings(), "cancelled" if why == "cancelled" else "deadline", "none")
    return StrategyResult("", g, [], Usage(), f"no sample drawn ({why})", stopped=why)
