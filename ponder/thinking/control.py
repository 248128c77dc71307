"""Budget forcing around the state machine: what every engine driver shares.

The rules live in :class:`~ponder.thinking.machine.ThinkingMachine`; this
module holds what the drivers share:

* :func:`raw_prompt` — the rendered prompt a text engine continues: models
  that do not think natively are told to think in the engine's reasoning
  format and the assistant turn opens the thinking; with thinking off, native
  reasoners get an empty thinking block (the Qwen3 "no think" convention);
* :func:`new_machine` — a machine configured from a :class:`SampleSpec`;
* :class:`Clock` — a sample's timings.

The driver for chat-only upstreams is :mod:`ponder.backends.chat`.
* :func:`generation_of` — the :class:`Generation` a finished machine describes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from ponder.thinking import prompts
from ponder.thinking.formats import get_format
from ponder.thinking.machine import AnswerDelta, Event, ThinkingDelta, ThinkingMachine
from ponder.types import (
    Generation,
    Message,
    ThinkingBudget,
    Timings,
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
               given_thinking: str | None = None, tools_prompt: str | None = None, *,
               resume_thinking: str | None = None) -> str:
    """The text a text-completion engine continues for one sample.

    ``given_thinking`` is closed (the model answers from it); ``resume_thinking`` is left open (the model
    thinks on from it: the segments of a probed trace, :mod:`ponder.strategies.probe`).
    """
    thinking_on = budget.enabled or given_thinking is not None or resume_thinking is not None
    convo = conversation(backend.info, messages, ThinkingBudget(max(1, budget.max_tokens)) if thinking_on else budget)
    if tools_prompt:
        convo = prompts.with_system_note(convo, tools_prompt)
    from ponder.tools.client import as_text_turns

    prompt = backend.render_chat(as_text_turns(convo))
    fmt = get_format(backend.info.reasoning_format)
    opened = fmt.opened(prompt)
    if given_thinking is not None:
        return prompt + ("" if opened else fmt.open_text) + given_thinking.strip() + fmt.close_text
    if resume_thinking is not None:
        return prompt + ("" if opened else fmt.open_text) + resume_thinking
    if thinking_on:
        return prompt if opened else prompt + fmt.open_text
    if opened:
        return prompt + "\n" + fmt.close_text
    return prompt + (fmt.empty_block if backend.info.native_reasoning else "")


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
    preempted_s: float = 0.0

    def saw(self, event: Event) -> None:
        now = time.perf_counter() - self.t0
        if self.first_token is None:
            self.first_token = now
        if isinstance(event, AnswerDelta) and self.first_answer is None:
            self.first_answer = now

    def timings(self) -> Timings:
        return Timings(queue_s=self.queue_s, ttft_s=self.first_token, time_to_answer_s=self.first_answer,
                       total_s=time.perf_counter() - self.t0, preempted_s=self.preempted_s)


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
        raw_thinking=m.raw["thinking"],
    )


__all__ = ["AnswerDelta", "Clock", "ThinkingDelta", "conversation", "generation_of", "new_machine", "raw_prompt"]
