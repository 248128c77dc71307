"""Anthropic's Messages API (``POST /v1/messages``) request, and its translation into ponder's request.

Field mapping (see the README's "Anthropic Messages API" section):

* ``thinking: {type: "enabled", budget_tokens: N}`` -> the thinking cap N;
  ``{type: "disabled"}`` or no ``thinking`` -> no thinking (effort none);
* ``max_tokens`` -> thinking plus answer, as Anthropic defines it: the
  answer room is ``max_tokens - budget_tokens``, and a budget that does not
  leave room (``budget_tokens >= max_tokens``) is a 400;
* ``system``, ``messages`` (text, ``tool_use``, ``tool_result``; earlier
  ``thinking`` blocks are dropped, as reasoning templates drop them);
* ``tools`` (custom tools) and ``tool_choice`` (auto, any, tool, none;
  ``disable_parallel_tool_use``) -> the client's functions;
* ``stop_sequences``, ``temperature``, ``top_p``, ``top_k``; ``ponder`` is the
  same extension object as in chat completions.

Unlike Anthropic, ponder takes budgets below 1,024 tokens (its models are small).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ponder.api.request import PonderOptions, read_object, validation_error
from ponder.errors import InvalidRequest
from ponder.request import PonderRequest
from ponder.types import Message


class ThinkingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["enabled", "disabled"]
    budget_tokens: int | None = Field(None, ge=1)


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str
    max_tokens: int = Field(..., ge=1)
    messages: list[dict[str, Any]] = Field(..., min_length=1)
    system: str | list[dict[str, Any]] | None = None
    thinking: ThinkingConfig | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    stream: bool = False
    metadata: dict[str, Any] | None = None
    ponder: PonderOptions | None = None

    @model_validator(mode="after")
    def _budget_fits(self) -> "MessagesRequest":
        t = self.thinking
        if t is not None and t.type == "enabled":
            if t.budget_tokens is None:
                raise InvalidRequest("thinking.budget_tokens is required when thinking is enabled",
                                     param="thinking.budget_tokens")
            if t.budget_tokens >= self.max_tokens:
                raise InvalidRequest(f"max_tokens ({self.max_tokens}) must be greater than thinking.budget_tokens "
                                     f"({t.budget_tokens}): max_tokens counts the thinking too",
                                     param="thinking.budget_tokens")
        return self


def parse_messages_body(raw: bytes, *, max_bytes: int, max_depth: int) -> MessagesRequest:
    body = read_object(raw, max_bytes=max_bytes, max_depth=max_depth)
    try:
        return MessagesRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def conversation_of(req: MessagesRequest) -> list[Message]:
    out: list[Message] = []
    if req.system:
        out.append(Message("system", req.system if isinstance(req.system, str)
                           else _texts(req.system, "system")))
    for i, m in enumerate(req.messages):
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"messages.{i}.role must be user or assistant", param=f"messages.{i}.role")
        content = m.get("content")
        if isinstance(content, str):
            out.append(Message(role, content))
            continue
        if not isinstance(content, list):
            raise InvalidRequest(f"messages.{i}.content must be a string or a list of content blocks",
                                 param=f"messages.{i}.content")
        _blocks(role, content, f"messages.{i}.content", out)
    return out


def _blocks(role: str, blocks: list, where: str, out: list[Message]) -> None:
    text, calls = [], []
    for j, b in enumerate(blocks):
        kind = b.get("type") if isinstance(b, dict) else None
        at = f"{where}.{j}"
        if kind == "text" and isinstance(b.get("text"), str):
            text.append(b["text"])
        elif kind == "tool_use" and role == "assistant":
            calls.append({"id": _field(b, "id", at), "name": _field(b, "name", at),
                          "arguments": json.dumps(b.get("input") or {})})
        elif kind == "tool_result" and role == "user":
            result = b.get("content")
            body = result if isinstance(result, str) else _texts(result or [], f"{at}.content")
            if b.get("is_error"):
                body = f"error: {body}"
            out.append(Message("tool", body, tool_call_id=_field(b, "tool_use_id", at)))
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            pass  # earlier thinking: dropped from the context, as reasoning templates drop it
        else:
            raise InvalidRequest(f"{at}: content blocks of type {kind!r} are not supported here (text, tool_use, "
                                 "tool_result, thinking)", param=f"{at}.type")
    if text or calls:
        out.append(Message(role, "".join(text), tuple(calls)))


def _texts(blocks: Any, where: str) -> str:
    if not isinstance(blocks, list):
        raise InvalidRequest(f"{where} must be a string or a list of text blocks", param=where)
    parts = []
    for j, b in enumerate(blocks):
        if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
            raise InvalidRequest(f"{where}.{j}: only text blocks are supported here", param=f"{where}.{j}.type")
        parts.append(b["text"])
    return "\n".join(parts)


def _field(b: dict, name: str, where: str) -> str:
    v = b.get(name)
    if not isinstance(v, str) or not v:
        raise InvalidRequest(f"{where}.{name} is required (a string)", param=f"{where}.{name}")
    return v


def _tools(req: MessagesRequest) -> tuple[tuple[dict, ...], Any, bool | None]:
    tools = []
    for i, t in enumerate(req.tools or []):
        if t.get("type", "custom") != "custom" or not isinstance(t.get("name"), str):
            raise InvalidRequest(f"tools.{i}: only custom tools (a name and an input_schema) are supported",
                                 param=f"tools.{i}")
        fn = {"name": t["name"], "parameters": t.get("input_schema") or {"type": "object"}}
        if t.get("description"):
            fn["description"] = t["description"]
        tools.append({"type": "function", "function": fn})
    tc = req.tool_choice
    if tc is None:
        return tuple(tools), None, None
    if tc.type == "tool" and not tc.name:
        raise InvalidRequest("tool_choice.name is required when type is tool", param="tool_choice.name")
    choice = {"auto": "auto", "any": "required", "none": "none"}.get(tc.type) or \
        {"type": "function", "function": {"name": tc.name}}
    return tuple(tools), choice, (False if tc.disable_parallel_tool_use else None)


def to_ponder(req: MessagesRequest) -> PonderRequest:
    p = req.ponder
    enabled = req.thinking is not None and req.thinking.type == "enabled"
    budget = req.thinking.budget_tokens if enabled else 0
    tools, choice, parallel = _tools(req)
    return PonderRequest(
        messages=tuple(conversation_of(req)), model=req.model, lane=p.lane if p else None,
        effort=None if enabled else "none", max_thinking_tokens=budget if enabled else None,
        max_answer_tokens=req.max_tokens - budget, answer_tokens_field="max_tokens",
        temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, stop=tuple(req.stop_sequences or ()),
        visibility="visible", strategy=p.strategy if p else None, params=dict(p.params) if p else {},
        deadline_s=p.deadline_s if p else None, cache=p.cache if p else None,
        early_exit=p.early_exit if p else None, priority=p.priority if p else None,
        tools=tuple(p.tools) if p and p.tools is not None else None,
        client_tools=tools, tool_choice=choice, parallel_tool_calls=parallel, stream=req.stream,
    ).validate()
