"""Driving a chat-only API under thinking control (upstreams without raw text continuation).

The stream is cut at the cap (or by the loop guard) and the answer asked for
in a follow-up turn with the cut thinking as context, written in the lane's
reasoning format.  Chat APIs cannot be made to think *longer*, so a minimum
is not enforced here.  The rules themselves are the thinking machine's
(:mod:`ponder.thinking.machine`); this module only feeds it pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Sequence

from ponder.thinking import prompts
from ponder.thinking.control import Clock, conversation, generation_of, new_machine
from ponder.thinking.formats import get_format
from ponder.thinking.machine import Event, ThinkingMachine
from ponder.types import Generation, Message, TokenLogprob, Usage

if TYPE_CHECKING:
    from ponder.backends.base import BackendInfo, SampleSpec


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

    def count_tokens(self, text: str) -> int:  # pragma: no cover
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
    fmt = get_format(engine.info.reasoning_format)
    thinking_on = spec.budget.enabled
    convo = conversation(engine.info, spec.messages, spec.budget)
    if spec.given_thinking is not None:
        convo = [*convo, Message("assistant", fmt.block(spec.given_thinking)),
                 Message("user", prompts.FORCED_ANSWER_INSTRUCTION)]
        thinking_on = False
    usage = Usage()
    cut = await _first_call(engine, spec, m, convo, thinking_on, usage)
    if cut and not spec.cancel.cancelled:
        follow = [*convo, Message("assistant", fmt.block(m.thinking)), Message("user", prompts.FORCED_ANSWER_INSTRUCTION)]
        await _answer_call(engine, spec, m, follow, usage)
    if spec.cancel.cancelled and m.phase != "done":
        m.interrupt("cancelled")
    return generation_of(m, usage, clock, finish="cancelled" if spec.cancel.cancelled else None)


async def _first_call(engine: ChatEngine, spec: "SampleSpec", m: ThinkingMachine, convo: list[Message],
                      thinking_on: bool, usage: Usage) -> bool:
    """The thinking (and, uncut, the answer) in one streamed call; True when the machine cut it at the cap."""
    max_tokens = spec.sampling.max_answer_tokens + (spec.budget.max_tokens if thinking_on else 0)
    stats = StreamStats()
    state = {"cut": False, "counted": 0}

    def on_piece(piece: ChatPiece) -> bool:
        state["counted"] += piece.tokens
        d = m.feed_piece(piece.kind, piece.text, piece.tokens, piece.logprob)
        if d.kind in ("cut", "stop"):
            state["cut"] = d.kind == "cut"
            return False
        if spec.cancel.cancelled:
            m.interrupt("cancelled")
            return False
        if spec.deadline is not None and spec.deadline.passed:
            state["cut"] = _deadline_cut(m, spec)
            return False
        return True

    try:
        await engine.stream_chat(convo, max_tokens=max_tokens, spec=spec, thinking=thinking_on, stats=stats,
                                 on_piece=on_piece)
    except Exception as exc:
        exc.partial_usage = Usage(prompt_tokens=_count_messages(engine, convo),  # type: ignore[attr-defined]
                                  thinking_tokens=m.thinking_tokens(), answer_tokens=m.answer_tokens)
        raise
    cut = state["cut"]
    p, c, completion = engine.settle_usage(stats, _count_messages(engine, convo), state["counted"], ceiling=max_tokens)
    usage.prompt_tokens, usage.cached_prompt_tokens = p, c
    if not cut:
        _settle_uncut(m, spec, stats, completion, thinking_on)
    return cut


def _deadline_cut(m: ThinkingMachine, spec: "SampleSpec") -> bool:
    """The deadline passed mid-stream: a thinking is cut (the answer still comes), an answer just ends."""
    if m.phase == "thinking":
        m.report.stopped = "deadline"
        m.used = min(m.used, spec.budget.max_tokens)
        m.report.used = m.used
        m.phase = "answer"
        return True
    m.interrupt("deadline")
    return False


def _settle_uncut(m: ThinkingMachine, spec: "SampleSpec", stats: StreamStats, completion: int,
                  thinking_on: bool) -> None:
    """An uncut call: the upstream's own counts, where it gives them, replace the delta counts."""
    if m.phase != "done":
        m.stream_ended(stats.finish_reason or "stop")
    if thinking_on and stats.reasoning_tokens is not None:
        m.used = min(stats.reasoning_tokens, spec.budget.max_tokens, completion)
    if stats.reported:
        # everything the upstream billed beyond the thinking is answer (hidden thinking included)
        shown = (min(m.used, spec.budget.max_tokens) if thinking_on else 0) + m.answer_tokens
        m.hidden_tokens = max(0, completion - shown)
        if completion < shown:  # the upstream counted fewer than it streamed: bill its count
            m.answer_tokens = max(0, completion - (min(m.used, spec.budget.max_tokens) if thinking_on else 0))


async def _answer_call(engine: ChatEngine, spec: "SampleSpec", m: ThinkingMachine, follow: list[Message],
                       usage: Usage) -> None:
    """The follow-up turn after a cut: the answer, with the cut thinking as context."""
    stats = StreamStats()
    state = {"counted": 0}
    before = m.answer_tokens

    def on_piece(piece: ChatPiece) -> bool:
        state["counted"] += piece.tokens
        d = m.feed_piece(piece.kind, piece.text, piece.tokens, piece.logprob)
        return d.kind != "stop" and not spec.cancel.cancelled

    try:
        await engine.stream_chat(follow, max_tokens=spec.sampling.max_answer_tokens, spec=spec, thinking=False,
                                 stats=stats, on_piece=on_piece)
    except Exception as exc:
        exc.partial_usage = Usage(  # type: ignore[attr-defined]
            prompt_tokens=usage.prompt_tokens + _count_messages(engine, follow),
            thinking_tokens=m.thinking_tokens(), answer_tokens=m.answer_tokens)
        raise
    m.stream_ended(stats.finish_reason or "stop")
    p, c, completion = engine.settle_usage(stats, _count_messages(engine, follow), state["counted"],
                                           ceiling=spec.sampling.max_answer_tokens)
    # the follow-up re-reads the conversation: that is prompt cost too
    usage.prompt_tokens += p
    usage.cached_prompt_tokens += c
    if stats.reported:
        m.hidden_tokens += max(0, completion - (m.answer_tokens - before))


def _count_messages(engine: ChatEngine, messages: Sequence[Message]) -> int:
    return sum(engine.count_tokens(m.content) + 4 for m in messages)
