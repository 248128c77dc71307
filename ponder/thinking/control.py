"""Budget forcing around the state machine: prompts for text engines, the driver for chat APIs.

The rules live in :class:`~ponder.thinking.machine.ThinkingMachine`; this
module holds what the drivers share:

* :func:`raw_prompt` — the rendered prompt a text engine continues: models
  that do not think natively are told to think inside ``<think>`` tags and
  the assistant turn is opened with ``<think>``; with thinking off, native
  reasoners get an empty think block (the Qwen3 "no think" convention);
* :func:`new_machine` — a machine configured from a :class:`SampleSpec`;
* :func:`chat_sample` — the driver for chat-only upstreams: the stream is
  cut at the cap (or by the loop guard) and the answer asked for in a
  follow-up turn with the cut thinking as context.  Chat APIs cannot be made
  to think *longer*, so a minimum is not enforced there.
* :func:`generation_of` — the :class:`Generation` a finished machine describes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal, Sequence

from ponder.thinking import prompts
from ponder.thinking.machine import AnswerDelta, Event, ThinkingDelta, ThinkingMachine
from ponder.types import (
    Generation,
    Message,
    ThinkingBudget,
    Timings,
    TokenLogprob,
    Usage,
)

if TYPE_CHECKING:
    from ponder.backends.base import Backend, BackendInfo, SampleSpec


def conversation(info: "BackendInfo", messages: Sequence[Message], budget: ThinkingBudget) -> list[Message]:
    """Native reasoners think unasked; other models are told to think in tags."""
    messages = list(messages)
    if info.native_reasoning or not budget.enabled:
        return messages
    return prompts.with_think_instruction(messages)


def raw_prompt(backend: "Backend", messages: Sequence[Message], budget: ThinkingBudget,
               given_thinking: str | None = None, tools_prompt: str | None = None) -> str:
    """The text a text-completion engine continues for one sample."""
    thinking_on = budget.enabled or given_thinking is not None
    convo = conversation(backend.info, messages, ThinkingBudget(max(1, budget.max_tokens)) if thinking_on else budget)
    if tools_prompt:
        convo = prompts.with_system_note(convo, tools_prompt)
    from ponder.tools.client import as_text_turns

    prompt = backend.render_chat(as_text_turns(convo))
    opened = prompt.rstrip().endswith("<think>")
    if given_thinking is not None:
        return prompt + ("" if opened else "<think>\n") + given_thinking.strip() + prompts.CLOSE_THINKING
    if thinking_on:
        return prompt if opened else prompt + "<think>\n"
    if opened:
        return prompt + "\n\n</think>\n\n"
    return prompt + ("<think>\n\n</think>\n\n" if backend.info.native_reasoning else "")


def new_machine(spec: "SampleSpec", *, cue_tokens: Callable[[str], int],
                on_event: Callable[[Event], None] | None = None) -> ThinkingMachine:
    budget = spec.budget if spec.given_thinking is None else ThinkingBudget(0)
    m = ThinkingMachine(budget, max_answer_tokens=spec.sampling.max_answer_tokens, stop=tuple(spec.sampling.stop),
                        loop_guard=spec.loop_guard, cue_tokens=cue_tokens, on_event=on_event,
                        tools=spec.tools is not None,
                        fenced_python=spec.tools is not None and "python" in getattr(spec.tools, "names", ()),
                        structured=spec.sampling.grammar is not None)
    if spec.given_thinking is not None:
        m.thinking = spec.given_thinking.strip()
        m.report.budget = spec.budget.max_tokens
    if spec.monitor is not None:
        m.monitor = spec.monitor()
    return m


@dataclass
class Clock:
    """Time to first token, to first answer token, and total, for one sample."""

    t0: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    first_answer: float | None = None
    queue_s: float = 0.0

    def saw(self, event: Event) -> None:
        now = time.perf_counter() - self.t0
        if self.first_token is None:
            self.first_token = now
        if isinstance(event, AnswerDelta) and self.first_answer is None:
            self.first_answer = now

    def timings(self) -> Timings:
        return Timings(queue_s=self.queue_s, ttft_s=self.first_token, time_to_answer_s=self.first_answer,
                       total_s=time.perf_counter() - self.t0)


def generation_of(m: ThinkingMachine, usage: Usage, clock: Clock, *,
                  finish: str | None = None, tools: list[dict] | None = None) -> Generation:
    """The Generation a finished machine describes (usage's thinking/answer counts come from the machine)."""
    answer, source = m.final_answer()
    usage.thinking_tokens = m.thinking_tokens()
    usage.answer_tokens = m.answer_tokens + m.hidden_tokens
    report = m.report
    report.used = usage.thinking_tokens
    if not m.budget.enabled and report.stopped not in ("cancelled",):
        report.stopped = "none"
    reason = finish or m.finish or "stop"
    if reason == "cancelled" and report.stopped == "none" and m.budget.enabled:
        report.stopped = "cancelled"
    return Generation(
        thinking=m.thinking.strip(),
        answer=answer,
        usage=usage,
        thinking_report=report,
        timings=clock.timings(),
        finish_reason=reason,  # type: ignore[arg-type]
        answer_source=source,
        logprobs=list(m.logprobs) if m.logprobs else None,
        tools=tools or [],
        early_stopped=m.early_stopped,
    )


# ---------------------------------------------------------------------------
# chat-only upstreams
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatPiece:
    """A streamed piece of a chat answer, already split by channel."""

    kind: Literal["thinking", "answer"]
    text: str
    tokens: int = 1
    logprob: TokenLogprob | None = None


@dataclass
class StreamStats:
    """What an upstream reports about one streamed call."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int | None = None
    finish_reason: str | None = None
    #: the upstream said how many tokens it spent
    reported: bool = False


class ChatEngine:
    """What :func:`chat_sample` needs from a chat-only backend."""

    info: "BackendInfo"

    async def stream_chat(self, messages: Sequence[Message], *, max_tokens: int, spec: "SampleSpec", thinking: bool,
                          stats: StreamStats, on_piece: Callable[[ChatPiece], bool]) -> None:  # pragma: no cover
        """Stream one call; ``on_piece`` returns False to stop reading (the connection is closed at once)."""
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def settle_usage(self, stats: StreamStats, counted_prompt: int, counted_completion: int, *,
                     ceiling: int) -> tuple[int, int, int]:
        """(prompt, cached, completion) tokens to bill for one call."""
        prompt = stats.prompt_tokens or counted_prompt
        return prompt, min(stats.cached_prompt_tokens, prompt), stats.completion_tokens or counted_completion


class PartialSpend(Exception):
    """Raised through a failed sample with what it had already spent (so it is still billed)."""


async def chat_sample(engine: ChatEngine, spec: "SampleSpec", *, on_event: Callable[[Event], None] | None = None,
                      clock: Clock | None = None) -> Generation:
    """One sample on a chat API: cut at the cap, answer in a follow-up turn."""
    clock = clock or Clock()

    def emit(e: Event) -> None:
        clock.saw(e)
        if on_event is not None:
            on_event(e)

    m = new_machine(spec, cue_tokens=engine.count_tokens, on_event=emit)
    thinking_on = spec.budget.enabled
    convo = conversation(engine.info, spec.messages, spec.budget)
    if spec.given_thinking is not None:
        convo = [*convo, Message("assistant", f"<think>\n{spec.given_thinking.strip()}\n</think>"),
                 Message("user", prompts.FORCED_ANSWER_INSTRUCTION)]
        thinking_on = False
    usage = Usage()
    max_tokens = spec.sampling.max_answer_tokens + (spec.budget.max_tokens if thinking_on else 0)
    stats = StreamStats()
    state = {"cut": False, "counted": 0}

    def first_piece(piece: ChatPiece) -> bool:
        state["counted"] += piece.tokens
        d = m.feed_piece(piece.kind, piece.text, piece.tokens, piece.logprob)
        if d.kind == "cut":
            state["cut"] = True
            return False
        if d.kind == "stop":
            return False
        if spec.cancel.cancelled:
            m.interrupt("cancelled")
            return False
        if spec.deadline is not None and spec.deadline.passed:
            if m.phase == "thinking":
                m.report.stopped = "deadline"
                m.used = min(m.used, spec.budget.max_tokens)
                m.report.used = m.used
                m.phase = "answer"
                state["cut"] = True
            else:
                m.interrupt("deadline")
            return False
        return True

    try:
        await engine.stream_chat(convo, max_tokens=max_tokens, spec=spec, thinking=thinking_on, stats=stats,
                                 on_piece=first_piece)
    except Exception as exc:
        exc.partial_usage = Usage(prompt_tokens=_count_messages(engine, convo),  # type: ignore[attr-defined]
                                  thinking_tokens=m.thinking_tokens(), answer_tokens=m.answer_tokens)
        raise
    cut = state["cut"]
    p, c, completion = engine.settle_usage(stats, _count_messages(engine, convo), state["counted"], ceiling=max_tokens)
    usage.prompt_tokens, usage.cached_prompt_tokens = p, c
    if not cut and m.phase != "done":
        m.stream_ended(stats.finish_reason or "stop")
    # the upstream's own count of reasoning tokens, when it gives one, replaces the delta count
    if not cut and thinking_on and stats.reasoning_tokens is not None:
        m.used = min(stats.reasoning_tokens, spec.budget.max_tokens, completion)
    if stats.reported and not cut:
        # everything the upstream billed beyond the thinking is answer (hidden thinking included)
        shown = (min(m.used, spec.budget.max_tokens) if thinking_on else 0) + m.answer_tokens
        m.hidden_tokens = max(0, completion - shown)
        if completion < shown:  # the upstream counted fewer than it streamed: bill its count
            m.answer_tokens = max(0, completion - (min(m.used, spec.budget.max_tokens) if thinking_on else 0))
    if cut and not spec.cancel.cancelled:
        follow = [*convo, Message("assistant", f"<think>\n{m.thinking.strip()}\n</think>"),
                  Message("user", prompts.FORCED_ANSWER_INSTRUCTION)]
        stats2 = StreamStats()
        state2 = {"counted": 0}
        before = m.answer_tokens

        def answer_piece(piece: ChatPiece) -> bool:
            state2["counted"] += piece.tokens
            d = m.feed_piece(piece.kind, piece.text, piece.tokens, piece.logprob)
            return d.kind != "stop" and not spec.cancel.cancelled

        try:
            await engine.stream_chat(follow, max_tokens=spec.sampling.max_answer_tokens, spec=spec, thinking=False,
                                     stats=stats2, on_piece=answer_piece)
        except Exception as exc:
            exc.partial_usage = Usage(  # type: ignore[attr-defined]
                prompt_tokens=usage.prompt_tokens + _count_messages(engine, follow),
                thinking_tokens=m.thinking_tokens(), answer_tokens=m.answer_tokens)
            raise
        m.stream_ended(stats2.finish_reason or "stop")
        p2, c2, completion2 = engine.settle_usage(stats2, _count_messages(engine, follow), state2["counted"],
                                                  ceiling=spec.sampling.max_answer_tokens)
        # the follow-up re-reads the conversation: that is prompt cost too
        usage.prompt_tokens += p2
        usage.cached_prompt_tokens += c2
        if stats2.reported:
            m.hidden_tokens += max(0, completion2 - (m.answer_tokens - before))
    if spec.cancel.cancelled and m.phase != "done":
        m.interrupt("cancelled")
    return generation_of(m, usage, clock, finish="cancelled" if spec.cancel.cancelled else None)


def _count_messages(engine: ChatEngine, messages: Sequence[Message]) -> int:
    return sum(engine.count_tokens(m.content) + 4 for m in messages)


__all__ = ["AnswerDelta", "ChatPiece", "Clock", "StreamStats", "ThinkingDelta", "chat_sample", "conversation",
           "generation_of", "new_machine", "raw_prompt"]
