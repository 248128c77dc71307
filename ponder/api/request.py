"""The chat-completions request ponder accepts.

Standard OpenAI fields plus ponder's extensions.  Unknown *top-level* fields
are accepted and ignored (OpenAI clients send many, e.g. ``user``), but the
``ponder`` and ``thinking`` objects are strict: a typo there is a 400 naming
the field.  ``ponder ask`` builds this same object, so CLI and gateway share
one code path.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ponder.errors import InvalidRequest
from ponder.types import Message

Visibility = Literal["hidden", "visible", "summary"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    #: assistant turns replayed by clients may carry earlier thinking
    reasoning_content: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            else:
                raise InvalidRequest(
                    f"content part of type {part.get('type')!r} is not supported (text only)", param="messages"
                )
        return "".join(parts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ThinkingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    visibility: Visibility | None = None


class PonderOptions(BaseModel):
    """ponder's extension object: strategy and its parameters, lane pinning."""

    model_config = ConfigDict(extra="forbid")
    strategy: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    #: pin a lane by name (same as naming it in ``model``)
    lane: str | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

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
        return v

    def chat(self) -> list[Message]:
        out = [Message(m.role if m.role != "developer" else "system", m.text()) for m in self.messages]
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


def parse_request(body: Any) -> ChatCompletionRequest:
    """Validate a JSON body; raise :class:`InvalidRequest` naming the field."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        raise InvalidRequest(f"{loc}: {msg}", param=loc) from None
