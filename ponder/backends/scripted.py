"""A scripted engine for unit tests of control and selection logic.

It never runs a model: each call pops the next scripted continuation (or asks
a callable with the text so far) and streams it word by word through the
same thinking state machine the real engines use, honouring rewrites (a new
"call" continues from the rewritten text), stop strings and cancellation.
It is not a serving backend: the CLI and the gateway cannot be configured
to run on it.
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Callable, Sequence

from ponder.backends.base import Backend, BackendInfo, Completion, Prompt, SampleSpec, prompt_key
from ponder.thinking import control
from ponder.backends.chat import ChatEngine, ChatPiece, StreamStats, chat_sample
from ponder.thinking.control import Clock
from ponder.thinking.completion import CompletionMachine
from ponder.thinking.machine import Event
from ponder.thinking.formats import get_format
from ponder.types import CancelToken, Deadline, Generation, Message, Sampling, Usage

_UNIT = re.compile(r"\s*\S+|\s+")

Responder = Callable[[str], str]


def units(text: str) -> list[str]:
    """The scripted engine's 'tokens': a word with its leading white space."""
    return _UNIT.findall(text)


class ScriptedBackend(Backend, ChatEngine):
    """Replays ``responses`` in order (the last one repeats), or calls ``responder``."""

    def __init__(
        self,
        responses: Sequence[str] | Responder,
        *,
        native_reasoning: bool = False,
        text_completion: bool = True,
        reasoning_field: bool = False,
        logprobs: dict[str, float] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self.info = BackendInfo(
            name="scripted", model="scripted", text_completion=text_completion,
            native_reasoning=native_reasoning, logprobs=logprobs is not None, context_length=1 << 20,
        )
        self._responder = responses if callable(responses) else None
        self._responses = list(responses) if not callable(responses) else []
        self._lock = threading.Lock()
        self._reasoning_field = reasoning_field
        self._logprobs = logprobs
        self._delay = delay_s
        #: every prompt the engine saw, for assertions in tests
        self.prompts: list[str] = []

    def _next(self, prompt: str) -> str:
        with self._lock:
            self.prompts.append(prompt)
            if self._responder is not None:
                return self._responder(prompt)
            if len(self._responses) > 1:
                return self._responses.pop(0)
            return self._responses[0] if self._responses else ""

    def render_chat(self, messages: Sequence[Message]) -> str:
        return "".join(f"<|{m.role}|>{m.content}\n" for m in messages) + "<|assistant|>"

    def count_tokens(self, text: str) -> int:
        return len(units(text))

    def prepare_prompt(self, messages, budget, tools_note=None) -> Prompt:
        if not self.info.text_completion:
            return super().prepare_prompt(messages, budget, tools_note)
        text = control.raw_prompt(self, messages, budget, None, tools_note)
        return Prompt(self.count_tokens(text), prompt_key(messages, budget, tools_note), text)

    # -- text mode: the machine on scripted words ---------------------------------
    async def sample(self, spec: SampleSpec, *, on_event=None) -> Generation:
        clock = Clock()

        def emit(e: Event) -> None:
            clock.saw(e)
            if on_event is not None:
                on_event(e)

        if not self.info.text_completion:
            return await chat_sample(self, spec, on_event=on_event, clock=clock)
        prompt = control.raw_prompt(self, spec.messages, spec.budget, spec.given_thinking,
                                    resume_thinking=spec.resume_thinking)
        m = control.new_machine(spec, cue_tokens=self.count_tokens, on_event=emit)
        usage = Usage(prompt_tokens=self.count_tokens(prompt))
        tools: list[dict] = []
        deadline = spec.deadline
        while m.phase != "done":
            response = self._next(prompt + m.text)
            d = None
            for u in units(response):
                if spec.cancel.cancelled:
                    d = m.interrupt("cancelled")
                    break
                if deadline is not None and deadline.passed:
                    thinking = m.phase == "thinking"
                    d = m.interrupt("deadline")
                    if thinking and d.kind == "rewrite":
                        deadline = Deadline.after(2.0)  # the answer's grace, as the engine gives it
                    break
                d = m.feed(u, 1)
                if self._delay:
                    await asyncio.sleep(self._delay)
                if d.kind == "tool":
                    result, record = await spec.tools.call(d.payload, depth=len(tools))
                    tools.append(record)
                    usage.tool_tokens += self.count_tokens(result)
                    d = m.tool_result(result, answer_now=spec.tools.exhausted(len(tools)))
                if d.kind != "continue":
                    break
            else:
                d = m.end_of_turn()
            if d is None:
                d = m.end_of_turn()
        return control.generation_of(m, usage, clock, tools=tools)

    async def complete(self, prompt: str, *, max_tokens: int, sampling: Sampling, stop: Sequence[str] = (),
                       cancel: CancelToken | None = None) -> Completion:
        m = CompletionMachine(max_tokens, stop)
        response = self._next(prompt)
        for u in units(response):
            if cancel is not None and cancel.cancelled:
                m.interrupt("cancelled")
                break
            if m.feed(u).kind != "continue":
                break
        else:
            m.end_of_turn()
        return Completion(m.out, self.count_tokens(prompt), 0, m.generated, m.stopped_by, m.finish or "stop")

    async def next_token_logprobs(self, prompt: str, candidates: Sequence[str]):
        if self._logprobs is None:
            return None
        self.prompts.append(prompt)
        return {c: self._logprobs.get(c, -30.0) for c in candidates}

    # -- chat mode: an upstream look-alike ----------------------------------------
    async def stream_chat(self, messages, *, max_tokens, spec, thinking, stats: StreamStats, on_piece) -> None:
        prompt = self.render_chat(messages)
        stats.prompt_tokens = self.count_tokens(prompt)
        text = self._next(prompt)
        splitter = get_format(self.info.reasoning_format).splitter()
        n = n_thinking = 0
        stats.finish_reason = "stop"
        stats.reported = True
        try:
            for unit in units(text):
                if n >= max_tokens:
                    stats.finish_reason = "length"
                    break
                n += 1
                for kind, piece in splitter.feed(unit):
                    if kind == "thinking":
                        n_thinking += 1
                    if not on_piece(ChatPiece(kind, piece, 1)):
                        return
                if self._delay:
                    await asyncio.sleep(self._delay)
            for kind, piece in splitter.flush():
                if not on_piece(ChatPiece(kind, piece, 0)):
                    return
        finally:
            stats.completion_tokens = n
            if self._reasoning_field:
                stats.reasoning_tokens = n_thinking
