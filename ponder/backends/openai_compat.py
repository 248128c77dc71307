"""OpenAI-compatible upstreams: vLLM, SGLang, llama-server, Ollama, hosted APIs.

Thinking arrives in one of three shapes, all handled:

* ``delta.reasoning_content`` / ``message.reasoning_content`` (DeepSeek API,
  SGLang, vLLM before 0.11),
* ``delta.reasoning`` / ``message.reasoning`` (vLLM 0.11+, OpenRouter, Ollama),
* ``<think>...</think>`` inline in ``content`` (engines run without a
  reasoning parser).

Token counts come from ``usage`` (``completion_tokens_details.reasoning_tokens``
when the engine reports it); while streaming, each delta counts as one token,
which is how these engines stream.  Calls go through one pooled HTTP client
and may run concurrently.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Iterator, Sequence

import httpx

from ponder.backends.base import Backend, BackendInfo, ChatPiece
from ponder.errors import BackendError, InvalidRequest, UpstreamTimeout
from ponder.thinking.split import ThinkSplitter
from ponder.types import CompletionStats, Message, Sampling

REASONING_FIELDS = ("reasoning_content", "reasoning")
_WORDISH = re.compile(r"\w+|[^\w\s]")


def approx_tokens(text: str) -> int:
    """Rough token count for text an upstream did not count for us."""
    return len(_WORDISH.findall(text))


class DeltaParser:
    """Turns the ``delta`` objects of a stream into thinking/answer pieces."""

    def __init__(self) -> None:
        self._splitter = ThinkSplitter()
        self.saw_reasoning_field = False

    def feed(self, delta: dict[str, Any]) -> list[ChatPiece]:
        out: list[ChatPiece] = []
        for name in REASONING_FIELDS:
            r = delta.get(name)
            if r:
                self.saw_reasoning_field = True
                out.append(ChatPiece("thinking", r, 1))
                break
        content = delta.get("content")
        if content:
            if self.saw_reasoning_field:
                # the engine separates thinking itself: content is all answer
                out.append(ChatPiece("answer", content, 1))
            else:
                pieces = self._splitter.feed(content)
                for i, (kind, text) in enumerate(pieces):
                    out.append(ChatPiece(kind, text, 1 if i == 0 else 0))
        return out

    def flush(self) -> list[ChatPiece]:
        return [ChatPiece(k, t, 0) for k, t in self._splitter.flush()]


def parse_message(message: dict[str, Any]) -> tuple[str, str]:
    """``(thinking, answer)`` of a non-streamed ``choices[i].message``."""
    from ponder.thinking.split import split_thinking

    for name in REASONING_FIELDS:
        if message.get(name):
            return message[name], (message.get("content") or "").strip()
    return split_thinking(message.get("content") or "")


class OpenAICompatBackend(Backend):
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        name: str = "upstream",
        native_reasoning: bool = True,
        supports_n: bool = False,
        timeout_s: float = 120.0,
        max_connections: int = 64,
        no_think_body: dict | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.info = BackendInfo(
            name=name, model=model, text_completion=False, native_reasoning=native_reasoning,
            logprobs=True, supports_n=supports_n, context_length=0, prefix_reuse=False, concurrent=True,
        )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout_s
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self._no_think_body = no_think_body if no_think_body is not None else {}

    @classmethod
    def from_lane(cls, lane) -> "OpenAICompatBackend":
        key = os.environ.get(lane.api_key_env) if lane.api_key_env else None
        return cls(
            lane.base_url, lane.upstream_model or lane.model or "default", api_key=key, name=lane.name,
            native_reasoning=True if lane.native_reasoning is None else lane.native_reasoning,
            supports_n=lane.supports_n, timeout_s=lane.timeout_s, max_connections=lane.max_connections,
            no_think_body=dict(lane.no_think_body),
        )

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    # ------------------------------------------------------------------
    def _body(self, messages: Sequence[Message], *, max_tokens: int, sampling: Sampling, thinking: bool,
              stream: bool, n: int = 1) -> dict:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stream": stream,
        }
        if n != 1:
            body["n"] = n
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if stream:
            body["stream_options"] = {"include_usage": True}
        if not thinking:
            body.update(self._no_think_body)
        return body

    def stream_chat(self, messages, *, max_tokens, sampling, thinking, cancel=None, stats=None) -> Iterator[ChatPiece]:
        stats = stats if stats is not None else CompletionStats()
        body = self._body(messages, max_tokens=max_tokens, sampling=sampling, thinking=thinking, stream=True)
        parser = DeltaParser()
        try:
            with self._client.stream("POST", "/chat/completions", json=body) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _http_error(resp)
                for line in resp.iter_lines():
                    if cancel is not None and cancel.cancelled:
                        stats.finish_reason = "cancelled"
                        return
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        obj = json.loads(data)
                    except json.JSONDecodeError:
                        raise BackendError(f"upstream sent a malformed stream line: {data[:200]!r}") from None
                    if "error" in obj and not obj.get("choices"):
                        raise BackendError(f"upstream error: {_error_text(obj)}")
                    if obj.get("usage"):
                        _read_usage(obj["usage"], stats)
                    for choice in obj.get("choices") or []:
                        if choice.get("finish_reason"):
                            stats.finish_reason = "length" if choice["finish_reason"] == "length" else "stop"
                        yield from parser.feed(choice.get("delta") or {})
                yield from parser.flush()
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream {self.base_url} did not answer within {self._timeout:g}s ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise BackendError(f"upstream {self.base_url} failed: {type(exc).__name__}: {exc}") from None

    def chat(self, messages, *, max_tokens, sampling, thinking, n: int = 1) -> tuple[list[tuple[str, str, str]], CompletionStats]:
        """Non-streamed call; returns ``[(thinking, answer, finish_reason)]`` per choice."""
        stats = CompletionStats()
        body = self._body(messages, max_tokens=max_tokens, sampling=sampling, thinking=thinking, stream=False, n=n)
        try:
            resp = self._client.post("/chat/completions", json=body)
        except httpx.TimeoutException:
            raise UpstreamTimeout(f"upstream {self.base_url} did not answer within {self._timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise BackendError(f"upstream {self.base_url} failed: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            raise _http_error(resp)
        obj = resp.json()
        if obj.get("usage"):
            _read_usage(obj["usage"], stats)
        out = []
        for choice in obj.get("choices") or []:
            t, a = parse_message(choice.get("message") or {})
            out.append((t, a, choice.get("finish_reason") or "stop"))
        return out, stats

    def close(self) -> None:
        self._client.close()


def _read_usage(usage: dict, stats: CompletionStats) -> None:
    stats.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    stats.completion_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("completion_tokens_details") or {}
    if details.get("reasoning_tokens") is not None:
        stats.extra["reasoning_tokens"] = int(details["reasoning_tokens"])
    pdetails = usage.get("prompt_tokens_details") or {}
    stats.cached_prompt_tokens = int(pdetails.get("cached_tokens") or 0)


def _error_text(obj: Any) -> str:
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    return str(obj)


def _http_error(resp: httpx.Response) -> Exception:
    try:
        text = _error_text(resp.json())
    except ValueError:
        text = resp.text[:500]
    if resp.status_code in (408, 504):
        return UpstreamTimeout(f"upstream timed out ({resp.status_code}): {text}")
    if 400 <= resp.status_code < 500 and resp.status_code != 429:
        return InvalidRequest(f"upstream rejected the request ({resp.status_code}): {text}")
    return BackendError(f"upstream failed ({resp.status_code}): {text}")
