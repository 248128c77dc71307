"""The one interface every engine implements.

Strategies never know which engine they run on: they ask a backend for
samples (:meth:`Backend.sample`, :meth:`Backend.sample_many`), each generated
under a thinking budget by the per-sequence state machine of
:mod:`ponder.thinking.machine`, and receive token events while it runs.

* The embedded llama.cpp engine drives the machine token by token inside its
  owner thread and decodes every sequence of every request in one batch.
* OpenAI-compatible upstreams drive the same machine over a streamed chat
  call on the event loop; N samples are N concurrent streams.

Backends that can continue raw text (``info.text_completion``) also offer
:meth:`Backend.complete` (step-level search) and next-token log-probabilities
(model judges).
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable, Sequence

from ponder.thinking.machine import Event, LoopGuardSettings, Monitor
from ponder.types import CancelToken, Deadline, Generation, Message, Sampling, ThinkingBudget


#: room a text-continuation sequence needs beyond its thinking cap and answer: the cues and the closing of a
#: cut think (the context check before work and the engine's KV reservation both use it)
CONTROL_SLACK = 48


@dataclass(frozen=True)
class BackendInfo:
    """What the controller and strategies need to know about an engine."""

    name: str
    model: str
    #: can continue raw text (exact thinking control, step-level search)
    text_completion: bool
    #: the model's template thinks natively (R1, Qwen3, gpt-oss), in ``reasoning_format``
    native_reasoning: bool = False
    #: how the model marks its thinking (a name in :mod:`ponder.thinking.formats`)
    reasoning_format: str = "think"
    #: gives per-token log-probabilities
    logprobs: bool = False
    #: tokens one sequence may hold (0: unknown, a remote engine)
    context_length: int = 0
    #: sequences decoded together in one step (0: a remote engine, concurrency is its business)
    max_sequences: int = 0
    #: can constrain the answer with a grammar (structured output)
    grammar: bool = False
    #: passes ``response_format`` through to the engine (upstreams that support it)
    response_format: bool = False


@dataclass(frozen=True)
class Prompt:
    """A sample's prompt, rendered and tokenized once when its request is prepared.

    ``key`` says what it was rendered from (the conversation, whether thinking
    is on, the tools note); a backend reuses it only for a sample with the
    same key, so a budget clamped to zero or another conversation (a
    critique, a judge) renders its own.
    """

    n_tokens: int
    key: tuple
    #: the rendered text and its token ids (None where an API renders the chat itself)
    text: str | None = None
    ids: tuple[int, ...] | None = None

    def serves(self, messages: Sequence[Message], budget: ThinkingBudget, tools_note: str | None) -> bool:
        """Was this prompt rendered (here, not only counted) from exactly this conversation, thinking and note?"""
        return self.text is not None and self.key == prompt_key(messages, budget, tools_note)


def prompt_key(messages: Sequence[Message], budget: ThinkingBudget, tools_note: str | None) -> tuple:
    return (tuple(messages), budget.enabled, tools_note)


@dataclass(frozen=True)
class SampleSpec:
    """One sample to generate under thinking control."""

    messages: tuple[Message, ...]
    budget: ThinkingBudget
    sampling: Sampling
    loop_guard: LoopGuardSettings = LoopGuardSettings()
    cancel: CancelToken = field(default_factory=CancelToken, compare=False)
    deadline: Deadline | None = None
    #: once the deadline cuts the thinking, the answer still gets this long (``server.answer_grace_s``)
    answer_grace_s: float = 2.0
    #: hand the model this thinking as if it had thought it, then let it answer (the lab's audit)
    given_thinking: str | None = None
    #: think on from this text (left open): a probed trace's next segment (text engines only)
    resume_thinking: str | None = None
    #: built-in tools the model may call inside its thinking (:class:`ponder.tools.ToolBox`)
    tools: Any = field(default=None, compare=False)
    #: makes a per-sample monitor that may stop a trace early (confidence-based early termination)
    monitor: Callable[[], Monitor] | None = field(default=None, compare=False)
    #: an OpenAI ``response_format`` for upstreams that take it as is
    response_format: dict | None = None
    #: the client's functions (OpenAI ``tools``) and its ``tool_choice``: calls go back to the client
    client_tools: tuple = field(default=(), compare=False)
    tool_choice: Any = None
    #: the prompt as prepared with the request (reused when its key matches this sample)
    prompt: Prompt | None = field(default=None, compare=False)
    #: scheduling on an engine that admits by class: (class rank, key, weight); None: standard, no key
    sched: tuple | None = field(default=None, compare=False)

    def tools_note(self) -> str | None:
        """The system note about tools (built-in and the client's) that text engines add to the prompt."""
        from ponder.tools.client import system_note

        return system_note(self.tools, self.client_tools, self.tool_choice)

    def seeded(self, offset: int) -> "SampleSpec":
        """The same sample with seed + offset (independent draws of one request)."""
        seed = self.sampling.seed
        if seed is None or not offset:
            return self
        return replace(self, sampling=self.sampling.with_seed(seed + offset))


@dataclass
class Completion:
    """A raw text continuation (step-level search)."""

    text: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    #: the stop string that ended it, if any
    stopped_by: str | None
    finish_reason: str


#: ``on_event(index, event)``: index of the sample among those drawn together
EventSink = Callable[[int, Event], None]


class Backend(abc.ABC):
    """An engine."""

    info: BackendInfo

    @abc.abstractmethod
    async def sample(self, spec: SampleSpec, *, on_event: Callable[[Event], None] | None = None) -> Generation:
        """One sample under ``spec.budget``; events as they happen."""

    async def sample_many(self, spec: SampleSpec, n: int, *, start: int = 0,
                          on_event: EventSink | None = None) -> list[Generation]:
        """``n`` independent samples (seeds ``seed + start + i``), drawn together."""
        async def one(i: int) -> Generation:
            sink = (lambda e: on_event(i, e)) if on_event is not None else None
            return await self.sample(spec.seeded(start + i), on_event=sink)

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def complete(self, prompt: str, *, max_tokens: int, sampling: Sampling, stop: Sequence[str] = (),
                       cancel: CancelToken | None = None) -> Completion:
        """Continue raw text ``prompt`` (text-completion engines only)."""
        raise NotImplementedError(f"{self.info.name} has no text-continuation mode")

    async def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> dict[str, float] | None:
        """Log-probability of each candidate's first token right after raw ``prompt``; None when unsupported."""
        return None

    def render_chat(self, messages: Sequence[Message]) -> str:
        """Apply the model's chat template, ending with the assistant turn open."""
        raise NotImplementedError(f"{self.info.name} has no chat template of its own")

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` costs on this model (exact where the tokenizer is local)."""

    def prepare_prompt(self, messages: Sequence[Message], budget: ThinkingBudget,
                       tools_note: str | None = None) -> Prompt:
        """The prompt of a sample, counted (and, on text engines, rendered and tokenized) once.

        The count is what the context check before any work uses; engines
        that render the chat themselves reuse the rendering for the samples.
        """
        n = sum(self.count_tokens(m.content) + 4 for m in messages)
        if tools_note:
            n += self.count_tokens(tools_note)
        return Prompt(n, prompt_key(messages, budget, tools_note))

    def load(self) -> dict:
        """Sequences running and waiting (embedded engines); empty for remote ones."""
        return {}

    def capabilities(self) -> frozenset[str]:
        """What this engine turned out to offer (see :mod:`ponder.backends.registry`)."""
        caps = set()
        if self.info.text_completion:
            caps |= {"text_completion", "builtin_tools"}
        if self.info.grammar:
            caps.add("grammar")
        if self.info.response_format:
            caps.add("response_format")
        return frozenset(caps)

    async def aclose(self) -> None:
        """Release engine resources (the lifespan hook calls this)."""


async def gather_all(aws: Sequence[Awaitable]) -> list:
    """``asyncio.gather`` that cancels the siblings when one fails (and waits for them to stop)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
