"""The embedded backend: llama.cpp in this process, scheduled by :class:`~ponder.backends.engine.Engine`.

This module is the asyncio side.  A sample becomes a sequence submitted to
the engine's owner thread with its own thinking state machine; the owner
thread posts the machine's events to the request's event loop, and the
coroutine that awaits them builds the :class:`Generation`.  N samples of one
request are one submission: their prompt is prefilled once.  Cancelling the
awaiting coroutine (a client that left) stops the sequence at the next step.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from ponder.backends.base import (
    CONTROL_SLACK,
    Backend,
    BackendInfo,
    Completion,
    EventSink,
    Prompt,
    SampleSpec,
    prompt_key,
)
from ponder.backends.engine import Engine
from ponder.backends.sequences import Admitted, Done, Failed, SeqRequest, ToolRequest
from ponder.backends.models import model_label, resolve_model
from ponder.thinking import control
from ponder.thinking.formats import get_format
from ponder.thinking.completion import CompletionMachine
from ponder.thinking.machine import Event
from ponder.types import CancelToken, Generation, Message, Sampling, ThinkingBudget, Usage



class LlamaCppBackend(Backend):
    """A GGUF model run by llama.cpp in this process."""

    def __init__(
        self,
        model: str | None = None,
        *,
        n_ctx: int = 4096,
        kv_cells: int | None = None,
        max_sequences: int = 16,
        cache_slots: int = 4,
        n_threads: int | None = None,
        n_batch: int = 512,
        flash_attn: bool | None = None,
        name: str = "embedded",
    ) -> None:
        path = resolve_model(model)
        self.path: Path = path
        self.engine = Engine(path, n_ctx=n_ctx, kv_cells=kv_cells, max_sequences=max_sequences,
                             cache_slots=cache_slots, n_threads=n_threads, n_batch=n_batch, flash_attn=flash_attn)
        meta = self.engine.metadata or {}
        template = meta.get("tokenizer.chat_template") or _CHATML
        self._formatter = _make_formatter(self.engine, template)
        self.info = BackendInfo(
            name=name,
            model=model_label(model),
            text_completion=True,
            native_reasoning=get_format("think").detect(template),
            logprobs=True,
            context_length=n_ctx,
            max_sequences=max_sequences,
            grammar=True,
        )

    # -- text ----------------------------------------------------------------------
    def render_chat(self, messages: Sequence[Message]) -> str:
        return self._formatter(messages)

    def count_tokens(self, text: str) -> int:
        return len(self.engine.tokenize(text))

    def _prompt_ids(self, text: str) -> list[int]:
        return self.engine.tokenize(text, add_bos=self._add_bos(text))

    def _add_bos(self, text: str) -> bool:
        bos = self._formatter.bos_token
        return bool(self._formatter.add_bos) and not (bos and text.startswith(bos))

    def prepare_prompt(self, messages, budget: ThinkingBudget, tools_note: str | None = None) -> Prompt:
        text = control.raw_prompt(self, messages, budget, None, tools_note)
        ids = tuple(self._prompt_ids(text))
        return Prompt(len(ids), prompt_key(messages, budget, tools_note), text, ids)

    def load(self) -> dict:
        return self.engine.load()

    # -- samples -------------------------------------------------------------------
    async def sample(self, spec: SampleSpec, *, on_event: Callable[[Event], None] | None = None) -> Generation:
        sink = (lambda i, e: on_event(e)) if on_event is not None else None
        return (await self._draw(spec, [0], sink))[0]

    async def sample_many(self, spec: SampleSpec, n: int, *, start: int = 0,
                          on_event: EventSink | None = None) -> list[Generation]:
        if n <= 0:
            return []
        return await self._draw(spec, [start + i for i in range(n)], on_event, relabel=start)

    async def _draw(self, spec: SampleSpec, offsets: list[int], on_event: EventSink | None,
                    relabel: int = 0) -> list[Generation]:
        loop = asyncio.get_running_loop()
        ids = self._ids_for(spec)
        think = 0 if spec.given_thinking is not None else spec.budget.max_tokens
        max_new = think + spec.sampling.max_answer_tokens + CONTROL_SLACK
        if spec.tools is not None:
            max_new += spec.tools.max_result_tokens * spec.tools.max_calls
        runs = []
        for off in offsets:
            s = spec.seeded(off)
            q: asyncio.Queue = asyncio.Queue()
            post = _poster(loop, q, self.engine)
            clock = control.Clock()
            machine = control.new_machine(s, cue_tokens=self.count_tokens, on_event=post)
            prio, key, weight = spec.sched or (1, "", 1.0)
            req = SeqRequest(machine, post, sampling=s.sampling, max_new=max_new, cancel=s.cancel.child(),
                             deadline=s.deadline, answer_grace_s=s.answer_grace_s, priority=prio, key=key,
                             weight=weight)
            runs.append((off, q, machine, req, clock))
        self.engine.submit(ids, [r[3] for r in runs])
        tasks = [asyncio.ensure_future(self._consume(spec, len(ids), off - relabel, q, m, req, clock, on_event))
                 for off, q, m, req, clock in runs]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for _, _, _, req, _ in runs:
                req.cancel.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _ids_for(self, spec: SampleSpec) -> list[int]:
        """The sample's prompt ids: the ones prepared with the request when they fit this sample, else rendered now."""
        note = spec.tools_note()
        p = spec.prompt
        if spec.given_thinking is None and spec.resume_thinking is None and p is not None and p.ids is not None \
                and p.serves(spec.messages, spec.budget, note):
            return list(p.ids)
        return self._prompt_ids(control.raw_prompt(self, spec.messages, spec.budget, spec.given_thinking, note,
                                                   resume_thinking=spec.resume_thinking))

    async def _consume(self, spec: SampleSpec, n_prompt: int, index: int, q: asyncio.Queue, machine, req: SeqRequest,
                       clock: control.Clock, on_event: EventSink | None) -> Generation:
        usage = Usage(prompt_tokens=n_prompt)
        tools: list[dict] = []
        try:
            while True:
                ev = await q.get()
                if isinstance(ev, Admitted):
                    clock.queue_s = ev.queue_s
                    usage.cached_prompt_tokens = ev.cached_tokens
                elif isinstance(ev, Done):
                    usage.cached_prompt_tokens = ev.cached_tokens
                    clock.preempted_s = ev.preempted_s
                    finish = None
                    if machine.phase != "done":
                        finish = {"cancelled": "cancelled", "deadline": "deadline", "error": "stop"}.get(ev.reason)
                        if finish is None:
                            finish = "length" if ev.reason == "length" else "stop"
                    if req.cancel.cancelled and machine.finish is None:
                        finish = "cancelled"
                    return control.generation_of(machine, usage, clock, finish=finish, tools=tools)
                elif isinstance(ev, Failed):
                    raise ev.error
                elif isinstance(ev, ToolRequest):
                    result, record = await spec.tools.call(ev.payload, depth=len(tools))
                    tools.append(record)
                    usage.tool_tokens += self.count_tokens(result)
                    # past a limit the sequence is told so and moves to its answer
                    self.engine.resume(ev.handle, result, answer_now=spec.tools.exhausted(len(tools)))
                else:
                    clock.saw(ev)
                    if on_event is not None:
                        on_event(index, ev)
        except asyncio.CancelledError:
            req.cancel.cancel()
            raise

    async def complete(self, prompt: str, *, max_tokens: int, sampling: Sampling, stop: Sequence[str] = (),
                       cancel: CancelToken | None = None) -> Completion:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        post = _poster(loop, q, self.engine)
        m = CompletionMachine(max_tokens, stop)
        ids = self._prompt_ids(prompt)
        # a raw step: no grammar (that is for answers) and no alternatives
        req = SeqRequest(m, post, sampling=replace(sampling, grammar=None, top_logprobs=0), max_new=max_tokens + 8,
                         cancel=(cancel or CancelToken()).child())
        self.engine.submit(ids, [req])
        cached = 0
        try:
            while True:
                ev = await q.get()
                if isinstance(ev, Admitted):
                    cached = ev.cached_tokens
                elif isinstance(ev, Done):
                    return Completion(m.out, len(ids), ev.cached_tokens or cached, m.generated, m.stopped_by,
                                      m.finish or ("cancelled" if ev.reason == "cancelled" else "stop"))
                elif isinstance(ev, Failed):
                    raise ev.error
        except asyncio.CancelledError:
            req.cancel.cancel()
            raise

    async def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> dict[str, float] | None:
        ids = {c: self.engine.token_id(c) for c in candidates}
        want = tuple(sorted({i for i in ids.values() if i is not None}))
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        req = SeqRequest(None, _poster(loop, q, self.engine), score_ids=want, max_new=1)
        self.engine.submit(self._prompt_ids(prompt), [req])
        while True:
            ev = await q.get()
            if isinstance(ev, Done):
                scores = ev.scores or {}
                return {c: (scores.get(i, float("-inf")) if i is not None else float("-inf")) for c, i in ids.items()}
            if isinstance(ev, Failed):
                raise ev.error

    async def aclose(self) -> None:
        await asyncio.to_thread(self.engine.close)

    def close(self) -> None:
        self.engine.close()


class _Mailbox:
    """Events for one event loop, delivered once per engine step (one wake-up of the loop, not one per token)."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.engine, self.loop = engine, loop
        self.items: list = []

    def put(self, q: asyncio.Queue, ev: object) -> None:  # owner thread
        self.items.append((q, ev))
        self.engine.dirty.add(self)

    def flush(self) -> None:  # owner thread, end of a step
        items, self.items = self.items, []
        if items:
            try:
                self.loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop is gone (shutdown): nobody is waiting any more
                pass


def _deliver(items: list) -> None:
    for q, ev in items:
        q.put_nowait(ev)


_MAILBOXES: dict[tuple[int, int], _Mailbox] = {}


def _poster(loop: asyncio.AbstractEventLoop, q: asyncio.Queue, engine: Engine):
    key = (id(engine), id(loop))
    box = _MAILBOXES.get(key)
    if box is None or box.loop is not loop:
        box = _MAILBOXES[key] = _Mailbox(engine, loop)

    def post(ev: object) -> None:
        box.put(q, ev)
    return post


_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class _Formatter:
    """Renders the GGUF's own chat template (Jinja, sandboxed)."""

    def __init__(self, template: str, bos_token: str, eos_token: str, add_bos: bool) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.bos_token = bos_token
        self.add_bos = add_bos
        self._fmt = Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token=bos_token)

    def __call__(self, messages: Sequence[Message]) -> str:
        try:
            result = self._fmt(messages=[{"role": m.role, "content": m.content} for m in messages])
        except Exception as exc:  # a template that rejects the conversation (e.g. roles out of order)
            from ponder.errors import InvalidRequest

            raise InvalidRequest(f"the model's chat template rejected the conversation: {exc}",
                                 param="messages") from None
        return result.prompt


def template_formatter(template: str, bos: str = "", eos: str = "", add_bos: bool = False) -> _Formatter:
    """A renderer of a model's own chat template (the embedded engine's, or one an upstream publishes)."""
    return _Formatter(template or _CHATML, bos, eos, add_bos)


def _make_formatter(engine: Engine, template: str) -> _Formatter:
    model = engine.model
    eos_id, bos_id = model.token_eos(), model.token_bos()
    eos = model.token_get_text(eos_id) if eos_id != -1 else ""
    bos = model.token_get_text(bos_id) if bos_id != -1 else ""
    add_bos = bool(engine.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true")
    return _Formatter(template, bos, eos, add_bos)

