"""A self-hosted engine driven the way ponder drives its own: one text, continued token by token.

Where an upstream offers raw completions (llama.cpp's ``llama-server``,
vLLM, SGLang: each spoken through its dialect in
:mod:`ponder.backends.dialects`), ponder renders the
model's own chat template itself and continues one text through think ->
close -> answer with streamed completions.  The per-sequence thinking
machine sees every token: a capped thinking is closed exactly at the cap,
an early close is replaced by ``Wait,`` until the minimum, a tool call
inside the thinking pauses the text while the tool runs.  Each rewrite is a
new completion of the same text plus what changed, so the engine's prefix
cache serves the part it has seen (``cache_prompt``); the answer phase gets
the engine's own grammar for structured output and forced tool calls.

Step-level search (``complete``) and model judges (``next_token_logprobs``)
use the same endpoint, so beam, DVTS, MCTS and PRM scoring run here too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable, Sequence

from ponder.telemetry import span
from ponder.backends.base import BackendInfo, Completion, EventSink, Prompt, SampleSpec, prompt_key
from ponder.backends.dialects import DIALECTS
from ponder.backends.http import ConnectFailed, ConnectionCut
from ponder.backends.openai_compat import OpenAICompatBackend, approx_tokens
from ponder.backends.replicas import AFFINITY_CHARS, Replica, Replicas
from ponder.backends.text_driver import drive
from ponder.backends.text_group import drive_group, groupable
from ponder.errors import BackendError, UpstreamTimeout, UpstreamUnreachable
from ponder.thinking import control
from ponder.thinking.formats import get_format
from ponder.thinking.machine import Event
from ponder.types import CancelToken, Generation, Message, Sampling

log = logging.getLogger("ponder.upstream")


class TextEngineBackend(OpenAICompatBackend):
    """An upstream engine with raw completions (see the module docstring); chat calls still work as a chat lane."""

    def __init__(self, urls: str | list[str], model: str, *, props: dict, name: str = "upstream", timeout_s: float = 120.0,
                 max_connections: int = 64, api_key: str | None = None, reasoning_format: str = "think",
                 eject_s: float = 10.0, dialect: str = "llama-server", health_interval_s: float = 0.0) -> None:
        urls = [urls] if isinstance(urls, str) else list(urls)
        super().__init__(urls[0], model, api_key=api_key, name=name, timeout_s=timeout_s,
                         max_connections=max_connections, reasoning_format=reasoning_format)
        #: the fleet (one replica for a plain base_url): prefix affinity, ejection, failover
        self.replicas = Replicas(urls, eject_s=eject_s)
        self.replicas.watch(health_interval_s, self._headers)
        from ponder.backends.llama_cpp import template_formatter

        self.dialect = DIALECTS[dialect](model)
        template = props.get("chat_template") or ""
        self._formatter = template_formatter(template, props.get("bos_token") or "", props.get("eos_token") or "")
        gen = props.get("default_generation_settings") or {}
        self.info = BackendInfo(name=name, model=model, text_completion=True,
                                native_reasoning=get_format(reasoning_format).detect(template), logprobs=True,
                                context_length=int(gen.get("n_ctx") or props.get("n_ctx") or 0), grammar=True,
                                reasoning_format=reasoning_format)
        #: the engine's slots per replica (llama-server's ``total_slots``): each sample's calls are pinned to one
        self.slots_per_replica = int(props.get("total_slots") or 0)
        #: exact token counts of the few texts ponder injects (measured at start-up with the engine's tokenizer)
        self.known_counts: dict[str, int] = dict(props.get("_counts") or {})

    # -- text ------------------------------------------------------------------------------
    def render_chat(self, messages: Sequence[Message]) -> str:
        return self._formatter(messages)

    def count_tokens(self, text: str) -> int:
        return self.known_counts.get(text) or approx_tokens(text)

    def prepare_prompt(self, messages, budget, tools_note: str | None = None) -> Prompt:
        text = control.raw_prompt(self, messages, budget, None, tools_note)
        return Prompt(approx_tokens(text), prompt_key(messages, budget, tools_note), text)

    # -- one sample: the machine over streamed completions -----------------------------------
    async def sample(self, spec: SampleSpec, *, on_event: Callable[[Event], None] | None = None) -> Generation:
        return await drive(self, spec, on_event)

    async def sample_many(self, spec: SampleSpec, n: int, *, start: int = 0,
                          on_event: EventSink | None = None) -> list[Generation]:
        """``n`` samples; on an engine that prefills one prompt for several (llama-server's ``n_cmpl``), in
        groups of its slots (:mod:`ponder.backends.text_group`), else one call each."""
        if groupable(self, spec, n):
            return await drive_group(self, spec, n, start, on_event)
        return await super().sample_many(spec, n, start=start, on_event=on_event)

    # -- raw continuations and judges ------------------------------------------------------------
    async def complete(self, prompt: str, *, max_tokens: int, sampling: Sampling, stop: Sequence[str] = (),
                       cancel: CancelToken | None = None) -> Completion:
        body = self.dialect.completion_body(prompt, max_tokens=max_tokens, sampling=sampling, stop=stop,
                                            n_probs=0, grammar=None, stream=False)
        text, end = self.dialect.result(await self.post(self.dialect.path, body, cancel))
        finish = {"word": "stop", "stop": "stop", "length": "length"}.get(end.reason, "stop")
        return Completion(text, end.prompt_tokens, end.cached_tokens, end.predicted, end.stopping_word, finish)

    async def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> dict[str, float] | None:
        """Log-probabilities of each candidate as the next token, from the engine's top alternatives (a
        candidate outside them gets -inf): by token id where the engine gives ids, else by token text."""
        obj = await self.post(self.dialect.path, self.dialect.score_body(prompt, 50), None)
        top = self.dialect.top_candidates(obj)
        if not self.dialect.scores_by_id:
            return {c: top.get(c, float("-inf")) for c in candidates}
        ids = {c: await self.first_token(c) for c in candidates}
        return {c: top.get(i, float("-inf")) if i is not None else float("-inf") for c, i in ids.items()}

    async def first_token(self, text: str) -> int | None:
        obj = await self.post("/tokenize", self.dialect.tokenize_body(text), None)
        toks = obj.get("tokens") or []
        return int(toks[0]) if toks else None

    # -- HTTP ----------------------------------------------------------------------------------
    async def post(self, path: str, body: dict, cancel: CancelToken | None) -> dict:
        """One non-streamed call to a native endpoint, on the replica its prompt belongs to (failing over)."""
        ranked = self.replicas.ranked(str(body.get("prompt") or body.get("content") or "")[:AFFINITY_CHARS])

        async def on(replica: Replica) -> dict:
            with span(f"POST {path}", **{"server.address": replica.url, "ponder.lane": self.name}):
                return await self._post_to(replica, path, body)

        return await self.replicas.call(ranked, on)

    async def _post_to(self, replica: Replica, path: str, body: dict) -> dict:
        try:
            async with asyncio.timeout(self.timeout_s):
                resp = await self.root_pool(replica).post_json(path, body, accept="application/json")
                async with resp:
                    if resp.status >= 400:
                        raise await self._http_error(resp)
                    return json.loads(await resp.read(16 << 20))
        except TimeoutError:
            raise UpstreamTimeout(f"the upstream of lane {self.name!r} did not answer within {self.timeout_s:g}s") \
                from None
        except ConnectFailed:
            raise UpstreamUnreachable(f"the upstream of lane {self.name!r} is unreachable") from None
        except (ConnectionCut, ValueError) as exc:
            raise BackendError(f"the upstream of lane {self.name!r} sent a broken reply ({type(exc).__name__})") \
                from None

    def root_pool(self, replica: Replica):
        """Keep-alive connections to a replica's native endpoints (one pool per event loop)."""
        from ponder.backends.http import HttpPool

        loop = id(asyncio.get_running_loop())
        p = replica.pools.get(loop)
        if p is None or p.closed:
            p = replica.pools[loop] = HttpPool(replica.root, self._headers, max_idle=self._max_idle)
        return p

    async def aclose(self) -> None:
        self.replicas.close()
        for r in self.replicas.replicas:
            for p in list(r.pools.values()):
                await p.aclose()
            r.pools.clear()
        await super().aclose()

