"""What flows between the embedded engine's owner thread and the requests it serves.

A request submits :class:`SeqRequest` objects (one per sample) and receives
:class:`Admitted`, :class:`ToolRequest`, :class:`Done` or :class:`Failed`
through each one's ``post``; the owner thread keeps a :class:`Seq` per
running sequence.  Plain data, so the scheduler in :mod:`ponder.backends.engine`
reads as scheduling.
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ponder.thinking.machine import Decision
from ponder.types import CancelToken, Deadline, Sampling, TokenLogprob


class Controller(Protocol):
    """What the engine needs from a sequence's controller (see :mod:`ponder.thinking.machine`)."""

    text: str

    def feed(self, text: str, tokens: int = 1, logprob: TokenLogprob | None = None) -> Decision: ...

    def end_of_turn(self) -> Decision: ...

    def interrupt(self, reason: str) -> Decision: ...


# -- what travels from the owner thread to a sequence's consumer -----------------


@dataclass(frozen=True)
class Admitted:
    """The sequence got a slot: how long it waited and how much of its prompt was already in the KV."""

    queue_s: float
    cached_tokens: int


@dataclass(frozen=True)
class ToolRequest:
    """The controller asked for a tool; the sequence is paused (keeping its slot) until resumed."""

    payload: str
    #: pass back to :meth:`Engine.resume` with the tool's result
    handle: Any = None


@dataclass(frozen=True)
class Done:
    """The sequence ended; its counts are exact."""

    generated: int
    prompt_tokens: int
    cached_tokens: int
    reason: str
    #: logprobs of candidate tokens (score requests)
    scores: dict[int, float] | None = None
    #: injected tokens (cues, closings, tool results) that were prefilled
    injected_tokens: int = 0
    #: seconds it spent paused for a more urgent class
    preempted_s: float = 0.0


@dataclass(frozen=True)
class Failed:
    error: BaseException


@dataclass
class SeqRequest:
    """One sequence to run.  ``post`` is called from the owner thread with every event."""

    controller: Controller | None
    post: Callable[[object], None]
    #: the sample's own decoding settings, as planned (its ``grammar`` applies once the controller enters its
    #: answer phase; ``top_logprobs`` alternatives are recorded per token)
    sampling: Sampling = Sampling()
    #: most tokens the continuation may occupy (thinking cap + cues + answer): reserved in the KV
    max_new: int = 512
    cancel: CancelToken = field(default_factory=CancelToken)
    #: past this, thinking is cut (the sample still answers within ``answer_grace_s``), then the sequence stops
    deadline: Deadline | None = None
    answer_grace_s: float = 2.0
    #: score request: return the log-probabilities of these next tokens after the prompt, sample nothing
    score_ids: tuple[int, ...] | None = None
    #: scheduling: class rank (0 most urgent), the key whose fair share it counts against, the key's weight
    priority: int = 1
    key: str = ""
    weight: float = 1.0


@dataclass
class Group:
    """Sequences submitted together with one prompt (prefilled once)."""

    prompt: list[int]
    members: list[SeqRequest]
    t_submit: float = field(default_factory=time.perf_counter)


@dataclass
class Job:
    """Tokens to prefill at given positions for a set of sequences."""

    tokens: list[int]
    start_pos: int
    seqs: list["Seq"]
    done: int = 0


class Seq:
    __slots__ = ("req", "slot", "prompt", "cont", "cont_bytes", "n_eval", "next_token", "sampler", "grammar_sampler",
                 "decoder", "state", "generated", "cached", "t_admit", "group", "injected", "logits_idx", "reserved",
                 "paused_since", "preempted_at", "preempted_s", "must_run", "saved", "saved_reserve")

    def __init__(self, req: SeqRequest, slot: int, prompt: list[int], group: "GroupState") -> None:
        self.req = req
        self.slot = slot
        self.prompt = prompt
        #: continuation token ids (what follows the prompt; the last may not be evaluated yet)
        self.cont: list[int] = []
        self.cont_bytes: list[bytes] = []
        #: tokens (prompt + continuation) already in the KV cache
        self.n_eval = 0
        self.next_token: int | None = None
        self.sampler = None
        self.grammar_sampler = None
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.state = "prefill"  # prefill | decode | paused | done
        self.generated = 0
        self.cached = 0
        self.injected = 0
        self.t_admit = time.perf_counter()
        self.group = group
        self.logits_idx: int | None = None
        self.reserved = req.max_new
        self.paused_since: float | None = None
        #: paused for a more urgent class (ponder.backends.preemption): since when, and for how long in all
        self.preempted_at: float | None = None
        self.preempted_s = 0.0
        #: its deadline cut it while paused: it decodes to its answer and is not paused again
        self.must_run = False
        #: its KV cells saved to host memory while paused (ponder.backends.preemption), and the cells it needs back
        self.saved = None
        self.saved_reserve = 0

    def unpause(self, now: float) -> None:
        """Back from a pause for a more urgent class: its length joins ``preempted_s``."""
        if self.preempted_at is not None:
            self.preempted_s += now - self.preempted_at
            self.preempted_at = None

    @property
    def positions(self) -> int:
        return len(self.prompt) + len(self.cont)


@dataclass
class GroupState:
    prompt_len: int
    live: int
    reserved_prompt: int


class EngineStats(Protocol):
    active: int
    waiting: int
