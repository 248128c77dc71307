"""OpenAI-compatible upstreams: vLLM, SGLang, llama-server, Ollama, hosted APIs.

Calls run on the event loop through one pool of keep-alive connections per
loop (:mod:`ponder.backends.http`), so the gateway's hot path has no thread
hop and no general-purpose client in the way.  Thinking arrives
in one of three shapes, all handled:

* ``delta.reasoning_content`` / ``message.reasoning_content`` (DeepSeek API,
  SGLang, vLLM before 0.11),
* ``delta.reasoning`` / ``message.reasoning`` (vLLM 0.11+, OpenRouter, Ollama),
* ``<think>...</think>`` inline in ``content`` (engines run without a
  reasoning parser).

Nothing an upstream says is trusted blindly:

* ``timeout_s`` is a total deadline per call (connect, first byte, whole
  stream); a dripping upstream is cut at it;
* a streamed call that gets a non-SSE reply, an unparseable chunk, an error
  event, or ends without a finish reason fails (never a short "success");
* ``usage`` is checked against ponder's own count and capped at what the
  call could have produced (a mismatch is logged and ponder's count billed);
* 429 passes through with its Retry-After; errors name the status, never the
  upstream's address or raw reply (those go to the log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from typing import Any, Callable, Sequence

from ponder.backends.dialects import priority_fields
from ponder.telemetry import span
from ponder.backends.base import Backend, BackendInfo, SampleSpec
from ponder.backends.http import ConnectFailed, ConnectionCut, HttpPool, Response
from ponder.errors import (
    BackendError,
    InvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from ponder.backends.chat import ChatEngine, ChatPiece, StreamStats, chat_sample
from ponder.backends.deltas import DeltaParser, logprob_of
from ponder.thinking.machine import Event
from ponder.thinking.formats import get_format
from ponder.tools.client import openai_messages
from ponder.types import Generation, Message

log = logging.getLogger("ponder.upstream")

_WORDISH = re.compile(r"\w+|[^\w\s]")
#: an upstream error body is read at most this far (it is logged, never relayed)
_MAX_ERROR_BODY = 16384
#: a reported count may exceed ponder's own estimate by this factor (tokenizers differ) before it is distrusted
_COUNT_SLACK = 4.0


def approx_tokens(text: str) -> int:
    """Rough token count for text an upstream did not count for us (words and punctuation)."""
    return len(_WORDISH.findall(text))


class OpenAICompatBackend(Backend, ChatEngine):
    #: how the engine takes request priorities (``engine_priority`` of the lane: none, vllm, sglang)
    priority_mode = "none"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        name: str = "upstream",
        native_reasoning: bool = True,
        timeout_s: float = 120.0,
        max_connections: int = 64,
        no_think_body: dict | None = None,
        response_format: bool = True,
        reasoning_format: str = "think",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = name
        self.info = BackendInfo(name=name, model=model, text_completion=False, native_reasoning=native_reasoning,
                                logprobs=True, response_format=response_format,
                                reasoning_format=get_format(reasoning_format).name)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self._max_idle = max_connections
        self._no_think_body = no_think_body if no_think_body is not None else {}
        self._pools: dict[int, HttpPool] = {}

    @classmethod
    def from_lane(cls, lane) -> "OpenAICompatBackend":
        key = os.environ.get(lane.api_key_env) if lane.api_key_env else None
        b = cls(
            lane.base_url, lane.upstream_model or lane.model or "default", api_key=key, name=lane.name,
            native_reasoning=True if lane.native_reasoning is None else lane.native_reasoning,
            timeout_s=lane.timeout_s, max_connections=lane.max_connections,
            no_think_body=dict(lane.no_think_body), reasoning_format=lane.reasoning_format,
        )
        b.priority_mode = lane.engine_priority
        return b

    def _pool(self) -> HttpPool:
        """One connection pool per event loop (the gateway has one; tests and the CLI may make several)."""
        loop = asyncio.get_running_loop()
        p = self._pools.get(id(loop))
        if p is None or p.closed:
            p = HttpPool(self.base_url, self._headers, max_idle=self._max_idle)
            self._pools[id(loop)] = p
        return p

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    # ------------------------------------------------------------------
    def _body(self, messages: Sequence[Message], *, max_tokens: int, spec: SampleSpec, thinking: bool) -> dict:
        sampling = spec.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(messages),
            "max_tokens": max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.top_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = sampling.top_logprobs
        if spec.response_format is not None:
            body["response_format"] = spec.response_format
        if spec.client_tools:
            body["tools"] = list(spec.client_tools)
            if spec.tool_choice is not None:
                body["tool_choice"] = spec.tool_choice
        if not thinking:
            body.update(self._no_think_body)
        body.update(priority_fields(self.priority_mode, spec.sched))
        return body

    async def sample(self, spec: SampleSpec, *, on_event: Callable[[Event], None] | None = None) -> Generation:
        return await chat_sample(self, spec, on_event=on_event)

    async def stream_chat(self, messages, *, max_tokens: int, spec: SampleSpec, thinking: bool, stats: StreamStats,
                          on_piece: Callable[[ChatPiece], bool]) -> None:
        body = self._body(messages, max_tokens=max_tokens, spec=spec, thinking=thinking)
        limit = self.timeout_s
        if spec.deadline is not None:
            limit = min(limit, max(0.05, spec.deadline.left() + 0.5))
        if spec.cancel.cancelled:
            return
        # a cancel (the client left) or the deadline closes the connection at once: both cancel this task
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        fired = []

        def fire() -> None:
            def cancel_task() -> None:
                if not fired and task is not None and not task.done():
                    fired.append(True)
                    task.cancel()
            loop.call_soon_threadsafe(cancel_task)

        spec.cancel.on_cancel(fire)
        try:
            async with asyncio.timeout(limit):
                await self._stream(body, stats, on_piece)
        except TimeoutError:
            raise UpstreamTimeout(f"the upstream of lane {self.name!r} did not finish within {limit:g}s") from None
        except asyncio.CancelledError:
            if fired and task is not None and task.uncancel() == 0:
                stats.finish_reason = stats.finish_reason or "cancelled"
                return  # our own cancel: the stream is closed, the sample ends as cancelled
            raise
        finally:
            spec.cancel.remove_callback(fire)
            fired.append(True)  # a late callback must not cancel whatever this task does next

    async def _stream(self, body: dict, stats: StreamStats, on_piece: Callable[[ChatPiece], bool]) -> None:
        with span("POST /chat/completions", **{"server.address": self.base_url, "ponder.lane": self.name}):
            await self._stream_chat(body, stats, on_piece)

    async def _stream_chat(self, body: dict, stats: StreamStats, on_piece: Callable[[ChatPiece], bool]) -> None:
        parser = DeltaParser(self.info.reasoning_format)
        try:
            try:
                resp = await self._pool().post_json("/chat/completions", body)
            except ConnectionCut as exc:  # reset before any byte came back: nothing was done, a retry is safe
                log.warning("lane %s: connection reset before a response: %s", self.name, exc)
                raise UpstreamUnreachable(f"the upstream of lane {self.name!r} reset the connection before "
                                          "answering") from None
            async with resp:
                if resp.status >= 400:
                    raise await self._http_error(resp)
                ctype = resp.headers.get("content-type", "")
                if "text/event-stream" not in ctype:
                    raw = (await resp.read(500)).decode("utf-8", errors="replace")
                    log.warning("lane %s: non-SSE reply (%s) to a streamed call: %r", self.name, ctype, raw)
                    raise BackendError(f"the upstream of lane {self.name!r} sent a non-streaming reply "
                                       "to a streamed call")
                done = False
                async for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        async for _ in resp.iter_bytes():  # drain the terminator: the connection is reused
                            pass
                        break
                    try:
                        obj = json.loads(data)
                    except json.JSONDecodeError:
                        log.warning("lane %s: malformed stream line: %r", self.name, data[:300])
                        raise BackendError(f"the upstream of lane {self.name!r} sent a malformed stream chunk") \
                            from None
                    if not isinstance(obj, dict):
                        raise BackendError(f"the upstream of lane {self.name!r} sent a malformed stream chunk")
                    if "error" in obj and not obj.get("choices"):
                        log.warning("lane %s: error event: %r", self.name, str(obj)[:500])
                        raise BackendError(f"the upstream of lane {self.name!r} reported an error mid-stream")
                    if isinstance(obj.get("usage"), dict):
                        _read_usage(obj["usage"], stats)
                    for choice in obj.get("choices") or []:
                        if not isinstance(choice, dict):
                            continue
                        if choice.get("finish_reason"):
                            stats.finish_reason = str(choice["finish_reason"])
                        lp = logprob_of(choice.get("logprobs"))
                        for piece in parser.feed(choice.get("delta") or {}, lp):
                            if not on_piece(piece):
                                return  # leaving the block closes the connection: the upstream stops
                if stats.finish_reason is None:
                    raise BackendError(f"the upstream stream of lane {self.name!r} ended without a finish reason"
                                       + ("" if done else " (cut short)"))
                for piece in parser.flush():
                    if not on_piece(piece):
                        return
        except ConnectFailed as exc:
            log.warning("lane %s: cannot connect to %s: %s", self.name, self.base_url, exc)
            raise UpstreamUnreachable(f"the upstream of lane {self.name!r} is unreachable") from None
        except ConnectionCut as exc:
            log.warning("lane %s: %s", self.name, exc)
            if stats.finish_reason is None:
                raise BackendError(f"the upstream stream of lane {self.name!r} was cut off") from None

    async def _http_error(self, resp: Response) -> Exception:
        try:
            raw = (await resp.read(_MAX_ERROR_BODY)).decode("utf-8", errors="replace")
        except ConnectionCut:
            raw = ""
        log.warning("lane %s: upstream answered %s: %r", self.name, resp.status, raw[:1000])
        code = resp.status
        if code == 429:
            retry = _retry_after(resp.headers.get("retry-after"))
            return UpstreamRateLimited(f"the upstream of lane {self.name!r} is rate-limiting; retry shortly",
                                       retry_after_s=retry)
        if code in (408, 504):
            return UpstreamTimeout(f"the upstream of lane {self.name!r} timed out (HTTP {code})")
        if 400 <= code < 500:
            return InvalidRequest(f"the upstream of lane {self.name!r} rejected the request (HTTP {code})",
                                  code="upstream_rejected")
        return BackendError(f"the upstream of lane {self.name!r} failed (HTTP {code})")

    def settle_usage(self, stats: StreamStats, counted_prompt: int, counted_completion: int, *,
                     ceiling: int) -> tuple[int, int, int]:
        """Bill what the upstream reports when it is plausible; ponder's own count otherwise."""
        prompt, completion = counted_prompt, counted_completion
        if stats.reported:
            rp, rc = stats.prompt_tokens, stats.completion_tokens
            ok_prompt = 0 <= rp <= counted_prompt * _COUNT_SLACK + 64
            ok_completion = 0 <= rc <= ceiling + 8 and rc <= max(counted_completion * _COUNT_SLACK + 64, 0)
            if ok_prompt:
                prompt = rp
            if ok_completion:
                completion = rc
            if not (ok_prompt and ok_completion):
                log.warning("lane %s: implausible upstream usage (prompt %s, completion %s) against ponder's "
                            "count (prompt %s, completion %s, ceiling %s): billing ponder's count",
                            self.name, rp, rc, counted_prompt, counted_completion, ceiling)
                stats.reasoning_tokens = None if not ok_completion else stats.reasoning_tokens
        completion = min(completion, ceiling)
        cached = min(max(0, stats.cached_prompt_tokens), prompt)
        return prompt, cached, completion

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for p in pools:
            try:
                await p.aclose()
            except RuntimeError:  # bound to a loop that is already closed
                pass


def _retry_after(value: str | None) -> float:
    try:
        return max(1.0, min(3600.0, float(value))) if value else 1.0
    except ValueError:
        return 1.0


def _read_usage(usage: dict, stats: StreamStats) -> None:
    def num(v: Any) -> int:
        try:
            return max(0, int(v))
        except (TypeError, ValueError):
            return 0

    stats.reported = True
    stats.prompt_tokens = num(usage.get("prompt_tokens"))
    stats.completion_tokens = num(usage.get("completion_tokens"))
    details = usage.get("completion_tokens_details") or {}
    if isinstance(details, dict) and details.get("reasoning_tokens") is not None:
        stats.reasoning_tokens = num(details["reasoning_tokens"])
    pdetails = usage.get("prompt_tokens_details") or {}
    if isinstance(pdetails, dict):
        stats.cached_prompt_tokens = num(pdetails.get("cached_tokens"))
