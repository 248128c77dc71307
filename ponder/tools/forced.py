"""Forced tool calls: ``tool_choice`` required or named, guaranteed by a grammar on the answer.

On an engine that takes a grammar, the answer phase of a request whose
``tool_choice`` forces a call is constrained to exactly one
``<tool_call>{"name": …, "arguments": …}</tool_call>`` whose name is one of
the allowed functions and whose arguments follow that function's JSON
schema; the thinking before it stays free.  On an upstream the choice is
passed through, and an answer without the forced call is an error
(:class:`~ponder.errors.ToolChoiceIgnored`), never a success.
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

from ponder.errors import InvalidRequest, ToolChoiceIgnored

OPEN, CLOSE = "<tool_call>", "</tool_call>"


def forced_names(tools: Sequence[dict], tool_choice: Any) -> list[str] | None:
    """The functions a call must name (None: no call is forced)."""
    if tool_choice == "required":
        return [t["function"]["name"] for t in tools]
    if isinstance(tool_choice, dict):
        return [(tool_choice.get("function") or {}).get("name")]
    return None


def call_schema(tools: Sequence[dict], names: Sequence[str]) -> dict:
    """The JSON schema of one call object to any of ``names``."""
    alternatives = []
    for t in tools:
        fn = t["function"]
        if fn["name"] not in names:
            continue
        # a function without parameters takes none; free strings and arrays are bounded so that a call the
        # grammar starts always fits the answer room and closes
        params = bounded(fn.get("parameters") or {"type": "object", "properties": {}, "additionalProperties": False})
        alternatives.append({"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
                             "required": ["name", "arguments"]})
    return alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}


#: bounds for what a schema leaves open (a forced call must close within the answer room)
MAX_STRING, MAX_ITEMS = 64, 8


def bounded(schema: Any) -> Any:
    """The schema with a ``maxLength`` on free strings and a ``maxItems`` on arrays that have none."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded(v) if k in ("items", "anyOf", "oneOf", "allOf", "additionalProperties", "prefixItems")
           else v for k, v in schema.items()}
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: bounded(v) for k, v in schema["properties"].items()}
    kind = schema.get("type")
    if kind == "string" and not {"maxLength", "enum", "const", "pattern", "format"} & set(schema):
        out["maxLength"] = MAX_STRING
    if kind == "array" and "maxItems" not in schema:
        out["maxItems"] = MAX_ITEMS
    return out


def call_grammar(tools: Sequence[dict], tool_choice: Any) -> str | None:
    """A GBNF grammar for exactly one call the choice allows (None when the choice forces nothing)."""
    names = forced_names(tools, tool_choice)
    if not names:
        return None
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        body = json_schema_to_gbnf(json.dumps(call_schema(tools, names)))
    except Exception as exc:
        raise InvalidRequest(f"the tools' parameter schemas cannot be turned into a grammar for a forced call: "
                             f"{exc}", param="tools") from None
    body = re.sub(r"(?m)^root ::=", "tool-call-json ::=", body)
    return f'root ::= "{OPEN}" tool-call-json "{CLOSE}"\n' + body


def check_forced_call(plan: Any, result: Any) -> None:
    """A forced ``tool_choice`` must come back as a call: an answer without one is an error, not a success."""
    from ponder.tools.client import split_calls

    names = forced_names(plan.client_tools, plan.tool_choice) if plan.client_tools else None
    if not names:
        return
    calls = split_calls(result.answer, [t["function"]["name"] for t in plan.client_tools])[1]
    if not any(c["function"]["name"] in names for c in (calls if plan.parallel_tool_calls else calls[:1])):
        raise ToolChoiceIgnored(f"tool_choice required a call to {' or '.join(names)}, and the engine on lane "
                                f"{plan.lane.name!r} answered without one", param="tool_choice")
