"""Client tools (OpenAI ``tools``): the model's call goes back to the client as ``tool_calls``.

Inside ponder a call is text, ``<tool_call>{"name": …, "arguments": {…}}</tool_call>``,
whatever the engine: the embedded model writes it (it is told the functions
in its system prompt, Hermes/Qwen style), and an upstream's structured
``delta.tool_calls`` are rendered to the same text as they stream in.  At the
end, :func:`split_calls` turns the answer into ``content`` and ``tool_calls``.
A follow-up request carries the assistant's ``tool_calls`` and the ``tool``
messages; the embedded engine reads them as text (:func:`as_text_turns`), an
upstream gets them as structured messages.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from typing import Any, Sequence

from ponder.types import Message

_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def tools_prompt(tools: Sequence[dict], tool_choice: Any) -> str:
    """The system note that tells a text-completion model about the client's functions."""
    fns = [t["function"] for t in tools]
    lines = ["You may call these functions. They are described in JSON inside <tools></tools>:", "<tools>"]
    lines += [json.dumps({k: v for k, v in f.items() if v is not None}) for f in fns]
    lines += ["</tools>", "To call a function, reply with exactly (one line per call):",
              '<tool_call>{"name": FUNCTION_NAME, "arguments": {ARGUMENTS AS JSON}}</tool_call>',
              "and nothing else; the results come back in the next turn."]
    if tool_choice == "required":
        lines.append("You must call at least one function now.")
    elif isinstance(tool_choice, dict):
        lines.append(f"You must call the function {tool_choice['function']['name']} now.")
    return "\n".join(lines)


def render_call(name: str, arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            pass
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def split_calls(answer: str, names: Sequence[str]) -> tuple[str | None, list[dict]]:
    """(content left over or None, OpenAI tool_calls) of an answer; calls to unknown functions stay text."""
    calls: list[dict] = []

    def take(m: re.Match) -> str:
        try:
            obj = json.loads(m.group(1))
        except ValueError:
            return m.group(0)
        if not isinstance(obj, dict) or obj.get("name") not in names:
            return m.group(0)
        args = obj.get("arguments", {})
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": obj["name"],
                                   "arguments": args if isinstance(args, str) else json.dumps(args)}})
        return ""

    rest = _CALL.sub(take, answer).strip()
    return (rest or None), calls


def as_text_turns(messages: Sequence[Message]) -> list[Message]:
    """Assistant tool calls and tool results as plain turns, for chat templates without tool roles."""
    out: list[Message] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            calls = "\n".join(render_call(c["name"], c["arguments"]) for c in m.tool_calls)
            out.append(Message("assistant", (m.content + "\n" + calls).strip()))
        elif m.role == "tool":
            block = f"<tool_response>\n{m.content}\n</tool_response>"
            if out and out[-1].role == "user" and out[-1].content.startswith("<tool_response>"):
                out[-1] = replace(out[-1], content=out[-1].content + "\n" + block)
            else:
                out.append(Message("user", block))
        else:
            out.append(m)
    return out


def openai_messages(messages: Sequence[Message]) -> list[dict]:
    """Messages for an upstream chat API, tool turns in their structured form."""
    out = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            out.append({"role": "assistant", "content": m.content or None, "tool_calls": [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in m.tool_calls]})
        elif m.role == "tool":
            out.append({"role": "tool", "content": m.content, "tool_call_id": m.tool_call_id or ""})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def system_note(toolbox: Any, client_tools: Sequence[dict], tool_choice: Any) -> str | None:
    """Everything a text engine's prompt says about tools: ponder's built-in ones and the client's functions."""
    notes = [toolbox.prompt()] if toolbox is not None else []
    if client_tools:
        notes.append(tools_prompt(client_tools, tool_choice))
    return "\n\n".join(notes) or None
