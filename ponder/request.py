"""ponder's own request: what every API translates into at its edge.

The core (policy, service, run, strategies, backends) knows only this type.
Chat completions (:mod:`ponder.api.request`), and any API added later, parse
their own wire format with their own error shape and build a
:class:`PonderRequest`; ``ponder ask``, the lab and distillation build one
directly.  Like reasoning-gym's configs it is a frozen dataclass with
:meth:`~PonderRequest.validate`, so a request built in code gets the same
checks as one that came over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ponder.errors import InvalidRequest
from ponder.types import Message

VISIBILITIES = ("hidden", "visible", "summary")
CACHE_MODES = ("use", "refresh", "off")
BUILT_IN_TOOLS = ("python", "calculator")


@dataclass(frozen=True)
class OutputFormat:
    """Structured output for the answer: ``json_object``, or ``json_schema`` with its schema.

    ``wire`` keeps the API's own object for upstreams that take it as is.
    """

    type: str
    schema: dict | None = None
    wire: dict | None = None


@dataclass(frozen=True)
class PonderRequest:
    """One request, in ponder's terms.  ``None`` means "the lane or policy decides"."""

    messages: tuple[Message, ...]
    #: a lane name, one of its models, or auto/None (the policy routes)
    model: str | None = None
    #: pins a lane by name (beats ``model``)
    lane: str | None = None
    #: thinking: an effort tier, or a hard cap (wins over the tier), and a minimum
    effort: str | None = None
    max_thinking_tokens: int | None = None
    min_thinking_tokens: int | None = None
    #: tokens reserved for the answer after thinking, and the API field that set it (named in clamps)
    max_answer_tokens: int | None = None
    answer_tokens_field: str = "max_tokens"
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    #: independent choices
    n: int = 1
    visibility: str | None = None
    strategy: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    #: answer within this many seconds; ``deadline_cap_s`` (a header) can only shorten it
    deadline_s: float | None = None
    deadline_cap_s: float | None = None
    cache: str | None = None
    #: built-in tools inside the thinking (None: the lane's)
    tools: tuple[str, ...] | None = None
    #: early exit by probing: True, False, or {probe_every, agree, probe_tokens} (None: the lane's)
    early_exit: Any = None
    #: a scheduling class below the request's own (interactive, standard, batch): it may lower, never raise
    priority: str | None = None
    output_format: OutputFormat | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    #: the client's functions as OpenAI tool dicts, and tool_choice (none|auto|required|{"type": "function", ...})
    client_tools: tuple[dict, ...] = ()
    tool_choice: Any = None
    #: may one answer hold several calls (None: yes)
    parallel_tool_calls: bool | None = None
    stream: bool = False

    def validate(self) -> "PonderRequest":
        """Check what no API's parser can be trusted to have checked; returns self."""
        if not any(m.role == "user" and m.content.strip() for m in self.messages):
            raise InvalidRequest("messages must contain a non-empty user message", param="messages")
        if self.n < 1:
            raise InvalidRequest("n must be at least 1", param="n")
        for name in ("max_thinking_tokens", "min_thinking_tokens"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise InvalidRequest(f"{name} must be >= 0", param=name)
        if self.max_answer_tokens is not None and self.max_answer_tokens < 1:
            raise InvalidRequest(f"{self.answer_tokens_field} must be >= 1", param=self.answer_tokens_field)
        if self.visibility is not None and self.visibility not in VISIBILITIES:
            raise InvalidRequest(f"visibility must be one of {', '.join(VISIBILITIES)}", param="thinking.visibility")
        if self.cache is not None and self.cache not in CACHE_MODES:
            raise InvalidRequest(f"cache must be one of {', '.join(CACHE_MODES)}", param="ponder.cache")
        unknown = [t for t in self.tools or () if t not in BUILT_IN_TOOLS]
        if unknown:
            raise InvalidRequest(f"unknown built-in tool(s): {', '.join(unknown)}", param="ponder.tools")
        from ponder.config_ops import CLASSES

        if self.priority is not None and self.priority not in CLASSES:
            raise InvalidRequest(f"priority must be one of {', '.join(CLASSES)}", param="ponder.priority")
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
        return self

    def question(self) -> str:
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else ""
