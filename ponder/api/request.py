"""The chat-completions request ponder accepts.

Standard OpenAI fields plus ponder's extensions.  Types are strict
(``stream: "yes"`` is a 400, not true; ``max_thinking_tokens: true`` is a
400, not 1).  Unknown *top-level* fields are accepted and ignored (OpenAI
clients send many, e.g. ``user``), but fields ponder knows and cannot honour
(penalties, ``logit_bias``) are refused by name instead of being silently
dropped, and the ``ponder`` and ``thinking`` objects are closed: a typo there
is a 400 naming the field.  ``ponder ask`` builds this same object, so CLI
and gateway share one code path.

:func:`parse_body` reads raw bytes with every limit checked before work:
body size, JSON nesting depth, text that is not valid UTF-8 (lone
surrogates), message count and size.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ponder.errors import InvalidRequest, PayloadTooLarge
from ponder.request import OutputFormat, PonderRequest
from ponder.types import Message

Visibility = Literal["hidden", "visible", "summary"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: str
    arguments: str = ""


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    #: assistant turns replayed by clients may carry earlier thinking
    reasoning_content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type == "text":
                parts.append(part.text or "")
            else:
                raise InvalidRequest(
                    f"content part of type {part.type!r} is not supported (text only)", param="messages"
                )
        return "".join(parts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: bool = False


class ThinkingOptions(_Closed):
    visibility: Visibility | None = None


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: str = "response"
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("json_schema.schema is required when type is json_schema")
        return self


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDef(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["function"]
    function: FunctionDef


class PonderOptions(_Closed):
    """ponder's extension object: strategy and its parameters, lane pinning, deadline, cache, tools."""

    strategy: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    #: pin a lane by name (same as naming it in ``model``)
    lane: str | None = None
    #: answer within this many seconds (queueing, strategy and every attempt included)
    deadline_s: float | None = Field(None, gt=0, le=86400)
    #: the answer cache: "use" (read and write), "refresh" (write only), "off"
    cache: Literal["use", "refresh", "off"] | None = None
    #: built-in tools the model may call inside its thinking
    tools: list[Literal["python", "calculator"]] | None = None
    #: stop thinking once probes of the trace agree: true (defaults), false, or {probe_every, agree, probe_tokens}
    early_exit: bool | dict[str, int] | None = None
    #: a lower scheduling class than the request would get (interactive > standard > batch); never a higher one
    priority: Literal["interactive", "standard", "batch"] | None = None


#: fields ponder knows but cannot honour: refused when set to anything but their neutral value
_UNSUPPORTED = {
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "logit_bias": ({},),
    "functions": ([],),
    "function_call": ("none", "auto"),
    "audio": (),
    "modalities": (["text"],),
    "prediction": (),
    "web_search_options": (),
}


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    messages: list[ChatMessage]
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    reasoning_effort: str | None = None
    max_thinking_tokens: int | None = Field(None, ge=0)
    min_thinking_tokens: int | None = Field(None, ge=0)
    thinking: ThinkingOptions | None = None
    ponder: PonderOptions | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[ToolDef] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None

    @field_validator("messages")
    @classmethod
    def _non_empty(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if not v:
            raise ValueError("messages must not be empty")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        if isinstance(v, list) and any(not s for s in v) or v == "":
            raise ValueError("stop sequences must not be empty")
        return v

    @model_validator(mode="after")
    def _logprobs(self) -> "ChatCompletionRequest":
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
        return self

    def chat(self) -> list[Message]:
        out = []
        for m in self.messages:
            text = m.text()
            if m.role == "assistant" and m.tool_calls:
                calls = tuple({"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                              for c in m.tool_calls)
                out.append(Message("assistant", text, tool_calls=calls))
                continue
            if m.role == "tool":
                out.append(Message("tool", text, tool_call_id=m.tool_call_id))
                continue
            out.append(Message(m.role if m.role != "developer" else "system", text))
        if not any(m.role == "user" and m.content.strip() for m in out):
            raise InvalidRequest("messages must contain a non-empty user message", param="messages")
        return out

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def to_ponder(self, *, deadline_cap_s: float | None = None) -> PonderRequest:
        """ponder's own request (the core never sees this API's types)."""
        p = self.ponder
        rf = self.response_format
        fmt = None
        if rf is not None and rf.type != "text":
            fmt = OutputFormat(rf.type, rf.json_schema.schema_ if rf.json_schema else None,
                               rf.model_dump(by_alias=True, exclude_none=True))
        return PonderRequest(
            messages=tuple(self.chat()), model=self.model, lane=p.lane if p else None,
            effort=self.reasoning_effort, max_thinking_tokens=self.max_thinking_tokens,
            min_thinking_tokens=self.min_thinking_tokens,
            max_answer_tokens=self.max_completion_tokens or self.max_tokens,
            answer_tokens_field="max_completion_tokens" if self.max_completion_tokens else "max_tokens",
            temperature=self.temperature, top_p=self.top_p, seed=self.seed, stop=self.stops(), n=self.n,
            visibility=self.thinking.visibility if self.thinking else None,
            strategy=p.strategy if p else None, params=dict(p.params) if p else {},
            deadline_s=p.deadline_s if p else None, deadline_cap_s=deadline_cap_s,
            cache=p.cache if p else None, tools=tuple(p.tools) if p and p.tools is not None else None,
            early_exit=p.early_exit if p else None, priority=p.priority if p else None, output_format=fmt, logprobs=bool(self.logprobs), top_logprobs=self.top_logprobs or 0,
            client_tools=tuple(t.model_dump(exclude_none=True) for t in self.tools or ()),
            tool_choice=self.tool_choice, parallel_tool_calls=self.parallel_tool_calls, stream=self.stream,
        ).validate()


def parse_request(body: Any) -> ChatCompletionRequest:
    """Validate a JSON body; raise :class:`InvalidRequest` naming the field."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    for name, neutral in _UNSUPPORTED.items():
        if name in body and body[name] is not None and body[name] not in neutral:
            raise InvalidRequest(f"{name} is not supported by ponder; remove it or send its neutral value",
                                 param=name, code="unsupported_parameter")
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError) -> InvalidRequest:
    """A pydantic validation error as one 400 naming the field (any API's request model)."""
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-after"))
    # a field of a union type reports each alternative; name the field, not the alternative
    loc = _trim_union(loc)
    msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
    return InvalidRequest(f"{loc}: {msg}" if loc else msg, param=loc or None)


def _trim_union(loc: str) -> str:
    parts = [p for p in loc.split(".") if p not in ("str", "list[ContentPart]", "dict[str,any]", "list[str]",
                                                    "int", "float", "bool", "constrained-str",
                                                    "list[dict[str,any]]")]
    return ".".join(p for p in parts if not p.startswith("literal[") and not p.startswith("function-"))


# ---------------------------------------------------------------------------
# raw bytes -> request, with every limit checked before work
# ---------------------------------------------------------------------------


def parse_body(raw: bytes, *, max_bytes: int, max_depth: int, max_messages: int,
               max_message_chars: int) -> ChatCompletionRequest:
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"the request body is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        body = json.loads(text or "null")
    except RecursionError:
        raise InvalidRequest(f"the JSON body is nested too deeply (limit {max_depth} levels)") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON body: {exc}") from None
    check_json(body, max_depth=max_depth)
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        msgs = body["messages"]
        if len(msgs) > max_messages:
            raise InvalidRequest(f"messages holds {len(msgs)} messages; the limit is {max_messages}",
                                 param="messages")
        for i, m in enumerate(msgs):
            if isinstance(m, dict):
                size = _text_size(m.get("content"))
                if size > max_message_chars:
                    raise InvalidRequest(f"messages.{i}.content is {size} characters; the limit is "
                                         f"{max_message_chars}", param=f"messages.{i}.content")
    return parse_request(body)


def check_json(obj: Any, *, max_depth: int) -> None:
    """Nesting depth within the limit; every string valid Unicode (no lone surrogates).  Iterative."""
    stack: list[tuple[Any, int, str]] = [(obj, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > max_depth:
                where = path if len(path) <= 60 else path[:60] + "..."
                raise InvalidRequest(f"the JSON body is nested too deeply at {where or 'the top'} "
                                     f"(limit {max_depth} levels)", param=path.split(".")[0] or None)
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for k, v in items:
                if isinstance(k, str):
                    _check_text(k, path)
                stack.append((v, depth + 1, f"{path}.{k}" if path else str(k)))
        elif isinstance(node, str):
            _check_text(node, path)


def _check_text(s: str, path: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{path or 'the body'}: the text holds a lone surrogate (not valid Unicode)",
                             param=path or None) from None


def _text_size(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p.get("text") or "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def read_object(raw: bytes, *, max_bytes: int, max_depth: int) -> dict:
    """A request body as a JSON object, with the size, depth and text limits checked (any API)."""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"the request body is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        body = json.loads(raw.decode("utf-8") or "null")
    except (UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON body ({type(exc).__name__})") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    check_json(body, max_depth=max_depth)
    return body
