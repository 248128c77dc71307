"""The Responses API (``POST /v1/responses``) request, and its translation into ponder's request.

Field mapping (see the README's "Responses API" section):

* ``input`` (a string or items: messages, ``function_call``,
  ``function_call_output``, ``reasoning``) and ``instructions`` -> the conversation;
  ``previous_response_id`` puts the stored conversation first;
* ``reasoning.effort`` -> the effort tier; ``reasoning.summary``
  (auto|concise|detailed) -> ponder's summary visibility;
* ``max_output_tokens`` -> the answer room after thinking;
* ``tools`` (functions) and ``tool_choice``, ``parallel_tool_calls`` -> client tools;
* ``text.format`` (json_object / json_schema) -> structured output;
* ``ponder`` and ``thinking`` -> the same extensions as chat completions.

Anything else a client may send and ponder cannot honour (other tool types,
``background``, ``include`` of encrypted reasoning) is a 400 naming it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ponder.api.request import PonderOptions, ThinkingOptions, read_object, validation_error
from ponder.errors import InvalidRequest
from ponder.request import OutputFormat, PonderRequest
from ponder.types import Message


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ReasoningOptions(_Open):
    effort: str | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class TextFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextOptions(_Open):
    format: TextFormat | None = None


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)

    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = None
    reasoning: ReasoningOptions | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextOptions | None = None
    store: bool = True
    stream: bool = False
    metadata: dict[str, Any] | None = None
    user: str | None = None
    include: list[str] | None = None
    truncation: Literal["disabled", "auto"] | None = None
    background: bool | None = None
    thinking: ThinkingOptions | None = None
    ponder: PonderOptions | None = None


def parse_responses_body(raw: bytes, *, max_bytes: int, max_depth: int) -> ResponsesRequest:
    body = read_object(raw, max_bytes=max_bytes, max_depth=max_depth)
    if body.get("background"):
        raise InvalidRequest("background responses are not supported by ponder", param="background",
                             code="unsupported_parameter")
    for inc in body.get("include") or []:
        if inc == "reasoning.encrypted_content":
            raise InvalidRequest("include reasoning.encrypted_content is not supported: ponder keeps conversations "
                                 "server-side (previous_response_id)", param="include", code="unsupported_parameter")
    if body.get("truncation") == "auto":
        raise InvalidRequest("truncation: auto is not supported (a prompt that does not fit is refused)",
                             param="truncation", code="unsupported_parameter")
    try:
        return ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def conversation_of(req: ResponsesRequest, history: list[Message]) -> list[Message]:
    """The messages of this turn: the stored history, then ``instructions`` and the input items."""
    items = [{"role": "user", "content": req.input}] if isinstance(req.input, str) else req.input
    out = list(history)
    if req.instructions:
        out.insert(0, Message("system", req.instructions))
    for i, item in enumerate(items):
        _item(item, i, out)
    return out


def _item(item: dict, i: int, out: list[Message]) -> None:
    kind = item.get("type", "message")
    where = f"input.{i}"
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "system", "developer", "assistant"):
            raise InvalidRequest(f"{where}.role must be user, system, developer or assistant", param=f"{where}.role")
        out.append(Message("system" if role == "developer" else role, _text(item.get("content"), where)))
    elif kind == "function_call":
        call = {"id": _str(item, "call_id", where), "name": _str(item, "name", where),
                "arguments": item.get("arguments") or "{}"}
        if out and out[-1].role == "assistant" and out[-1].tool_calls:
            prev = out[-1]
            out[-1] = Message("assistant", prev.content, prev.tool_calls + (call,))
        else:
            out.append(Message("assistant", "", (call,)))
    elif kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else _text(output, where)
        out.append(Message("tool", text, tool_call_id=_str(item, "call_id", where)))
    elif kind == "reasoning":
        pass  # earlier thinking: reasoning templates drop it from the context, and so does ponder
    else:
        raise InvalidRequest(f"{where}: input items of type {kind!r} are not supported (message, function_call, "
                             "function_call_output, reasoning)", param=f"{where}.type")


def _str(item: dict, name: str, where: str) -> str:
    v = item.get(name)
    if not isinstance(v, str) or not v:
        raise InvalidRequest(f"{where}.{name} is required (a string)", param=f"{where}.{name}")
    return v


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content must be a string or a list of text parts", param=f"{where}.content")
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text", "text") or not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{where}.content.{j}: parts of type {kind!r} are not supported (text only)",
                                 param=f"{where}.content.{j}.type")
        parts.append(part["text"])
    return "".join(parts)


def _tools(req: ResponsesRequest) -> tuple[tuple[dict, ...], Any]:
    tools = []
    for i, t in enumerate(req.tools or []):
        if t.get("type") != "function" or not isinstance(t.get("name"), str):
            raise InvalidRequest(f"tools.{i}: only function tools (type function, with a name) are supported",
                                 param=f"tools.{i}.type")
        fn = {k: t[k] for k in ("name", "description", "parameters") if t.get(k) is not None}
        tools.append({"type": "function", "function": fn})
    choice = req.tool_choice
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
            raise InvalidRequest("tool_choice must be none, auto, required or {\"type\": \"function\", \"name\": ...}",
                                 param="tool_choice")
        choice = {"type": "function", "function": {"name": choice["name"]}}
    return tuple(tools), choice


def _format(req: ResponsesRequest) -> OutputFormat | None:
    fmt = req.text.format if req.text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_schema" and fmt.schema_ is None:
        raise InvalidRequest("text.format.schema is required when type is json_schema", param="text.format.schema")
    wire: dict[str, Any] = {"type": fmt.type}
    if fmt.type == "json_schema":
        wire["json_schema"] = {"name": fmt.name or "response", "schema": fmt.schema_, "strict": fmt.strict}
    return OutputFormat(fmt.type, fmt.schema_, wire)


def to_ponder(req: ResponsesRequest, history: list[Message]) -> PonderRequest:
    """ponder's own request for a Responses request (``history``: the stored conversation it continues)."""
    p = req.ponder
    summary = req.reasoning and (req.reasoning.summary or req.reasoning.generate_summary)
    visibility = "summary" if summary else (req.thinking.visibility if req.thinking else None)
    tools, choice = _tools(req)
    return PonderRequest(
        messages=tuple(conversation_of(req, history)), model=req.model, lane=p.lane if p else None,
        effort=req.reasoning.effort if req.reasoning else None, max_answer_tokens=req.max_output_tokens,
        answer_tokens_field="max_output_tokens", temperature=req.temperature, top_p=req.top_p,
        visibility=visibility, strategy=p.strategy if p else None, params=dict(p.params) if p else {},
        deadline_s=p.deadline_s if p else None, cache=p.cache if p else None,
        early_exit=p.early_exit if p else None, priority=p.priority if p else None,
        tools=tuple(p.tools) if p and p.tools is not None else None, output_format=_format(req),
        client_tools=tools, tool_choice=choice, parallel_tool_calls=req.parallel_tool_calls, stream=req.stream,
    ).validate()


def echo_of(req: ResponsesRequest) -> dict:
    """The request's settings a ``response`` object repeats."""
    fmt = req.text.format.model_dump(by_alias=True, exclude_none=True) if req.text and req.text.format \
        else {"type": "text"}
    summary = req.reasoning and (req.reasoning.summary or req.reasoning.generate_summary)
    return {"instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": req.previous_response_id,
            "reasoning": {"effort": req.reasoning.effort if req.reasoning else None, "summary": summary or None},
            "store": req.store, "temperature": req.temperature, "text": {"format": fmt},
            "tool_choice": req.tool_choice or "auto", "tools": req.tools or [], "top_p": req.top_p,
            "truncation": req.truncation or "disabled", "metadata": req.metadata or {}, "user": req.user}
