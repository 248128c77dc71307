"""Budget forcing: make a model think within [min, max] tokens, then answer.

This is the heart of ponder's thinking control.  :func:`generate` drives one
sample and yields events as they happen, so the gateway can stream them and
everyone else can simply drain the iterator:

* hard max — thinking is cut at exactly the cap; ponder closes the block,
  writes an answer cue and generates the answer with its own reserved tokens,
  so a capped request still answers (``truncated: true``).
* min — when the model closes ``</think>`` too early, the tag is suppressed
  and a continuation cue ("Wait,") is written instead.
* loop guard — a periodic (repeating) trace stops thinking early
  (``stopped: "repetition"``).

Text-continuation backends are controlled to the token.  Chat-only backends
(hosted APIs) are controlled by cutting the stream at the cap and asking for
the answer in a follow-up turn; they cannot enforce a minimum.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Sequence, Union

from ponder.backends.base import Backend
from ponder.thinking import prompts
from ponder.thinking.loop_guard import LoopGuard, text_units
from ponder.types import (
    CancelToken,
    CompletionStats,
    Generation,
    Message,
    Sampling,
    ThinkingBudget,
    ThinkingReport,
    Timings,
    Usage,
)


@dataclass(frozen=True)
class ThinkingDelta:
    text: str
    #: thinking tokens used so far (including this delta)
    used: int


@dataclass(frozen=True)
class AnswerDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    generation: Generation


Event = Union[ThinkingDelta, AnswerDelta, Finished]


@dataclass(frozen=True)
class LoopGuardSettings:
    enabled: bool = True
    max_period: int = 64
    repeats: int = 3
    min_span: int = 24

    def make(self) -> LoopGuard:
        return LoopGuard(self.max_period, self.repeats, self.min_span, self.enabled)


def generate(
    backend: Backend,
    messages: Sequence[Message],
    budget: ThinkingBudget,
    sampling: Sampling,
    *,
    cancel: CancelToken | None = None,
    loop_guard: LoopGuardSettings = LoopGuardSettings(),
) -> Iterator[Event]:
    """Generate one sample under ``budget``; the last event is :class:`Finished`."""
    cancel = cancel or CancelToken()
    with backend.exclusive():
        if backend.info.text_completion:
            yield from _generate_text(backend, list(messages), budget, sampling, cancel, loop_guard)
        else:
            yield from _generate_chat(backend, list(messages), budget, sampling, cancel, loop_guard)


def run(backend: Backend, messages: Sequence[Message], budget: ThinkingBudget, sampling: Sampling, **kw) -> Generation:
    """Non-streaming convenience: drain :func:`generate`."""
    for event in generate(backend, messages, budget, sampling, **kw):
        if isinstance(event, Finished):
            return event.generation
    raise RuntimeError("generation ended without a result")  # pragma: no cover


def _conversation(backend: Backend, messages: list[Message], budget: ThinkingBudget) -> list[Message]:
    """Native reasoners think unasked; other models are told to think in tags."""
    if backend.info.native_reasoning or not budget.enabled:
        return messages
    return prompts.with_think_instruction(messages)


class _Clock:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.first_token: float | None = None
        self.first_answer: float | None = None

    def token(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter() - self.t0

    def answer(self) -> None:
        self.token()
        if self.first_answer is None:
            self.first_answer = time.perf_counter() - self.t0

    def timings(self) -> Timings:
        return Timings(
            ttft_s=self.first_token,
            time_to_answer_s=self.first_answer,
            total_s=time.perf_counter() - self.t0,
        )


# ---------------------------------------------------------------------------
# text-continuation backends: token-exact control
# ---------------------------------------------------------------------------


def _generate_text(
    backend: Backend,
    messages: list[Message],
    budget: ThinkingBudget,
    sampling: Sampling,
    cancel: CancelToken,
    guard_settings: LoopGuardSettings,
) -> Iterator[Event]:
    clock = _Clock()
    native = backend.info.native_reasoning
    thinking_on = budget.enabled
    convo = _conversation(backend, messages, budget)
    prompt = backend.render_chat(convo)
    prompt_tokens = backend.count_tokens(prompt)
    report = ThinkingReport(budget=budget.max_tokens, min=budget.min_tokens, effort=budget.effort)
    usage = Usage(prompt_tokens=prompt_tokens)
    thinking = ""

    opened = prompt.rstrip().endswith("<think>")
    if thinking_on:
        if not opened:
            prompt += "<think>\n"
        guard = guard_settings.make()
        used = 0
        first_call = True
        while True:
            remaining = budget.max_tokens - used
            if remaining <= 0:
                report.truncated, report.stopped = True, "budget"
                break
            stats = CompletionStats()
            used_before = used
            stream = backend.stream_text(
                prompt + thinking, max_tokens=remaining, sampling=sampling,
                stop=("</think>",), cancel=cancel, stats=stats,
            )
            try:
                for piece in stream:
                    clock.token()
                    thinking += piece.text
                    used += piece.tokens
                    yield ThinkingDelta(piece.text, min(used, budget.max_tokens))
                    if guard.feed_many(text_units(piece.text)):
                        break
            finally:
                stream.close()
            if first_call:
                usage.cached_prompt_tokens = min(stats.cached_prompt_tokens, prompt_tokens)
                first_call = False
            # the engine's count is authoritative: it includes the tokens of a
            # stop string that were generated but held back from the text
            used = max(used, used_before + stats.completion_tokens)
            if cancel.cancelled:
                report.stopped = "cancelled"
                break
            if guard.fired:
                report.stopped = "repetition"
                break
            if stats.finish_reason == "length" or used >= budget.max_tokens:
                report.truncated, report.stopped = True, "budget"
                used = min(used, budget.max_tokens)
                break
            # the model ended thinking (</think>) or its turn (EOS)
            if used < budget.min_tokens:
                cue_tokens = backend.count_tokens(prompts.CONTINUE_CUE)
                if used + cue_tokens < budget.max_tokens:
                    thinking += prompts.CONTINUE_CUE
                    used += cue_tokens
                    report.continuations += 1
                    yield ThinkingDelta(prompts.CONTINUE_CUE, used)
                    continue
            report.stopped = "end"
            break
        report.used = min(used, budget.max_tokens)
        usage.thinking_tokens = report.used
        answer_prefix = prompt + thinking.rstrip() + prompts.CLOSE_THINKING
        if report.stopped in ("budget", "repetition"):
            answer_prefix += prompts.ANSWER_CUE
    else:
        # thinking off: a native reasoner gets an empty think block (the
        # Qwen3 "no think" convention); others just answer.
        answer_prefix = prompt + ("\n\n</think>\n\n" if opened else ("<think>\n\n</think>\n\n" if native else ""))
        report.stopped = "none"

    answer = ""
    finish = "stop"
    if not cancel.cancelled:
        stats = CompletionStats()
        for piece in backend.stream_text(
            answer_prefix, max_tokens=sampling.max_answer_tokens, sampling=sampling,
            stop=tuple(sampling.stop), cancel=cancel, stats=stats,
        ):
            clock.answer()
            text = piece.text.lstrip() if not answer else piece.text
            if not text:
                continue
            answer += text
            yield AnswerDelta(text)
        usage.answer_tokens = stats.completion_tokens
        if not thinking_on and usage.cached_prompt_tokens == 0:
            usage.cached_prompt_tokens = min(stats.cached_prompt_tokens, prompt_tokens)
        finish = "length" if stats.finish_reason == "length" else "stop"
    if cancel.cancelled:
        finish = "cancelled"
        if report.stopped not in ("budget", "repetition", "end"):
            report.stopped = "cancelled"
    yield Finished(
        Generation(
            thinking=thinking.strip(),
            answer=answer.strip(),
            usage=usage,
            thinking_report=report,
            timings=clock.timings(),
            finish_reason=finish,
        )
    )


# ---------------------------------------------------------------------------
# chat-only backends: cut the stream at the cap, answer in a follow-up turn
# ---------------------------------------------------------------------------


def _generate_chat(
    backend: Backend,
    messages: list[Message],
    budget: ThinkingBudget,
    sampling: Sampling,
    cancel: CancelToken,
    guard_settings: LoopGuardSettings,
) -> Iterator[Event]:
    clock = _Clock()
    thinking_on = budget.enabled
    convo = _conversation(backend, messages, budget)
    report = ThinkingReport(budget=budget.max_tokens, min=budget.min_tokens, effort=budget.effort)
    usage = Usage()
    guard = guard_settings.make()
    thinking, answer = "", ""
    used = 0
    cut = False
    stats = CompletionStats()
    max_tokens = sampling.max_answer_tokens + (budget.max_tokens if thinking_on else 0)
    stream = backend.stream_chat(convo, max_tokens=max_tokens, sampling=sampling, thinking=thinking_on,
                                 cancel=cancel, stats=stats)
    try:
        for piece in stream:
            if piece.kind == "thinking":
                if not thinking_on:
                    continue  # an engine that thinks anyway: hidden and uncounted as answer
                if used + piece.tokens > budget.max_tokens:
                    cut = True
                    report.truncated, report.stopped = True, "budget"
                    break
                clock.token()
                thinking += piece.text
                used += piece.tokens
                yield ThinkingDelta(piece.text, used)
                if guard.feed_many(text_units(piece.text)):
                    cut = True
                    report.stopped = "repetition"
                    break
            else:
                clock.answer()
                text = piece.text.lstrip() if not answer else piece.text
                if text:
                    answer += text
                    yield AnswerDelta(text)
    finally:
        stream.close()
    # engines that send no usage in streams (llama-cpp-python's server): count
    usage.prompt_tokens = stats.prompt_tokens or _count_messages(backend, convo)
    usage.cached_prompt_tokens = stats.cached_prompt_tokens
    reported_reasoning = stats.extra.get("reasoning_tokens")
    if not cut and reported_reasoning is not None and thinking_on:
        used = min(int(reported_reasoning), budget.max_tokens) if used <= budget.max_tokens else used
    usage.thinking_tokens = used if thinking_on else 0
    if cut:
        usage.answer_tokens = 0
    else:
        usage.answer_tokens = max(0, stats.completion_tokens - usage.thinking_tokens) if stats.completion_tokens else backend.count_tokens(answer)
        if thinking_on and report.stopped == "none":
            report.stopped = "end"
    finish = "length" if stats.finish_reason == "length" else "stop"

    if cut and not cancel.cancelled:
        follow = [
            *convo,
            Message("assistant", f"<think>\n{thinking.strip()}\n</think>"),
            Message("user", prompts.FORCED_ANSWER_INSTRUCTION),
        ]
        stats2 = CompletionStats()
        stream2 = backend.stream_chat(follow, max_tokens=sampling.max_answer_tokens, sampling=sampling,
                                      thinking=False, cancel=cancel, stats=stats2)
        try:
            for piece in stream2:
                if piece.kind != "answer":
                    continue
                clock.answer()
                text = piece.text.lstrip() if not answer else piece.text
                if text:
                    answer += text
                    yield AnswerDelta(text)
        finally:
            stream2.close()
        # the follow-up re-reads the conversation: that is prompt cost too
        usage.prompt_tokens += stats2.prompt_tokens or _count_messages(backend, follow)
        usage.cached_prompt_tokens += stats2.cached_prompt_tokens
        usage.answer_tokens += stats2.completion_tokens or backend.count_tokens(answer)
        finish = "length" if stats2.finish_reason == "length" else "stop"
    report.used = usage.thinking_tokens
    if not thinking_on:
        report.stopped = "none"
    if cancel.cancelled:
        finish = "cancelled"
    yield Finished(
        Generation(
            thinking=thinking.strip(),
            answer=answer.strip(),
            usage=usage,
            thinking_report=report,
            timings=clock.timings(),
            finish_reason=finish,
        )
    )


def _count_messages(backend: Backend, messages: Sequence[Message]) -> int:
    return sum(backend.count_tokens(m.content) + 4 for m in messages)


def answer_given_thinking(backend: Backend, messages: Sequence[Message], thinking: str, sampling: Sampling,
                          *, cancel: CancelToken | None = None) -> str:
    """The answer a model gives after a thinking trace that we supply.

    Used by the lab's faithfulness audit: hand the model a (perturbed) trace
    as if it had thought it, and see whether the answer follows the trace.
    Text backends get the trace inside the think block; chat-only backends
    get it as an earlier assistant turn with the forced-answer instruction.
    """
    cancel = cancel or CancelToken()
    answer = ""
    with backend.exclusive():
        if backend.info.text_completion:
            convo = _conversation(backend, list(messages), ThinkingBudget(1))
            prompt = backend.render_chat(convo)
            if not prompt.rstrip().endswith("<think>"):
                prompt += "<think>\n"
            prompt += thinking.strip() + prompts.CLOSE_THINKING
            for piece in backend.stream_text(prompt, max_tokens=sampling.max_answer_tokens, sampling=sampling,
                                             stop=tuple(sampling.stop), cancel=cancel, stats=CompletionStats()):
                answer += piece.text
        else:
            follow = [*messages, Message("assistant", f"<think>\n{thinking.strip()}\n</think>"),
                      Message("user", prompts.FORCED_ANSWER_INSTRUCTION)]
            for piece in backend.stream_chat(follow, max_tokens=sampling.max_answer_tokens, sampling=sampling,
                                             thinking=False, cancel=cancel, stats=CompletionStats()):
                if piece.kind == "answer":
                    answer += piece.text
    return answer.strip()
