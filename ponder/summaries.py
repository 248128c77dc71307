"""One-sentence summaries of a thinking trace (``thinking.visibility: summary``).

A summary runs on the summary lane's engine next to the generation it
summarizes (batched with it on the embedded engine).  A "summary" that copies
the trace is not a summary: it is replaced by a progress line, so hidden
thinking never leaks through it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Awaitable, Callable

from ponder.backends.base import SampleSpec
from ponder.pricing import price
from ponder.types import CancelToken, Message, Sampling, ThinkingBudget, Usage

log = logging.getLogger("ponder.run")

SUMMARY_INSTRUCTION = (
    "You report on someone else's reasoning. In one short sentence of your own words, say what the reasoning "
    "below has established so far (for example: 'It has added the first two numbers and is checking the "
    "carry.'). Do not quote it and do not solve the problem."
)
#: a summary that copies more than this share of its words from the trace (in runs of 5+ words) is rejected
MAX_COPIED_SHARE = 0.3


def summary_lane(config: Any) -> Any:
    """``server.summary_lane``, else the first lane."""
    name = config.server.summary_lane
    return config.lane(name) if name is not None else config.lanes[0]


async def summarize(engines: Any, lane: Any, thinking: str, *, cancel: CancelToken | None = None,
                    tokens: int = 0) -> tuple[str, Usage, float]:
    """A one-sentence summary of a thinking trace: (text, usage, cost at the lane's prices)."""
    backend = await engines.get_async(lane)
    spec = SampleSpec((Message("system", SUMMARY_INSTRUCTION), Message("user", thinking[-3000:])),
                      ThinkingBudget(0), Sampling(temperature=0.0, max_answer_tokens=48),
                      cancel=(cancel or CancelToken()).child())
    g = await backend.sample(spec)
    text = g.answer.strip().splitlines()[0].strip() if g.answer.strip() else ""
    if not text or copied_share(text, thinking) > MAX_COPIED_SHARE:
        text = f"Thinking… ({tokens} tokens so far)" if tokens else "Thinking…"
    return text, g.usage, price(g.usage, lane.prices)


def copied_share(summary: str, trace: str, n: int = 5) -> float:
    """Share of the summary's words that sit in a run of ``n``+ consecutive words also found in the trace."""
    words = re.findall(r"\w+", summary.lower())
    if len(words) < n:
        return 0.0
    trace_words = re.findall(r"\w+", trace.lower())
    grams = {tuple(trace_words[i:i + n]) for i in range(len(trace_words) - n + 1)}
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        if tuple(words[i:i + n]) in grams:
            for j in range(i, i + n):
                covered[j] = True
    return sum(covered) / len(words)


class Summarizer:
    """The summaries of one run: every ``every`` thinking tokens while streaming, or once per choice at the end.

    A failed summary never fails the request; each one's tokens and cost are
    added to the run's bill.
    """

    def __init__(self, summarize_fn: Callable[..., Awaitable[tuple[str, Usage, float]]], cancel: CancelToken,
                 events: asyncio.Queue, every: int, request_id: str) -> None:
        self._summarize, self._cancel, self._events = summarize_fn, cancel, events
        self._every, self._id = every, request_id
        self._tasks: set[asyncio.Task] = set()
        self._spent: list[tuple[Usage, float]] = []
        self._state: dict[int, dict] = {}

    @property
    def count(self) -> int:
        return len(self._spent)

    def total(self) -> tuple[Usage, float]:
        usage, cost = Usage(), 0.0
        for u, c in self._spent:
            usage = usage + u
            cost += c
        return usage, cost

    def saw(self, index: int, text: str, used: int) -> None:
        """Thinking of choice ``index`` streamed: start a summary when ``every`` more tokens have come."""
        from ponder.outcome import SummaryEvent

        st = self._state.setdefault(index, {"text": "", "last": 0, "busy": False})
        st["text"] += text
        if used - st["last"] < self._every or st["busy"]:
            return
        st["last"], st["busy"] = used, True
        trace = st["text"]

        async def job() -> None:
            try:
                summary, usage, cost = await self._summarize(trace, cancel=self._cancel, tokens=used)
                self._spent.append((usage, cost))
                self._events.put_nowait(SummaryEvent(index, summary, used))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed summary never fails the request
                log.warning("request %s: summary failed: %s", self._id, exc)
            finally:
                st["busy"] = False

        task = asyncio.ensure_future(job())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish(self, results: list, at_end: bool) -> None:
        """Let streamed summaries land (they are short); with ``at_end``, summarize each chosen trace now."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=30)
        if not at_end:
            return
        for r in results:
            if r.chosen.thinking:
                text, usage, cost = await self._summarize(r.chosen.thinking, cancel=self._cancel,
                                                          tokens=r.chosen.thinking_report.used)
                self._spent.append((usage, cost))
                r.extra["summary"] = text

    def cancel(self) -> None:
        for t in list(self._tasks):
            t.cancel()
