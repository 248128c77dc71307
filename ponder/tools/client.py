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

import hashlib
import json
import uuid
from dataclasses import replace
from typing import Any, Sequence

from ponder.types import Message

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
#: strict=False: a grammar-made string may hold a raw newline, which strict JSON refuses
_DECODER = json.JSONDecoder(strict=False)


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


def split_calls(answer: str, names: Sequence[str], *, salt: str = "") -> tuple[str | None, list[dict]]:
    """(content left over or None, OpenAI tool_calls) of an answer; calls to unknown functions stay text.

    A call's JSON is read with a JSON decoder, so a ``</tool_call>`` inside one of its strings does not end it.
    With a ``salt`` (the request id) the call ids are stable: the same answer split twice names its calls alike.
    """
    calls: list[dict] = []
    rest: list[str] = []
    pos = 0
    while (start := answer.find(_OPEN, pos)) >= 0:
        parsed = _read_call(answer, start)
        if parsed is None:
            rest.append(answer[pos:start + len(_OPEN)])
            pos = start + len(_OPEN)
            continue
        obj, end = parsed
        if obj.get("name") not in names:
            rest.append(answer[pos:end])
        else:
            rest.append(answer[pos:start])
            block = answer[start:end]
            cid = hashlib.sha256(f"{salt}|{len(calls)}|{block}".encode()).hexdigest()[:24] if salt \
                else uuid.uuid4().hex[:24]
            args = obj.get("arguments", {})
            calls.append({"id": f"call_{cid}", "type": "function",
                          "function": {"name": obj["name"],
                                       "arguments": args if isinstance(args, str) else json.dumps(args)}})
        pos = end
    rest.append(answer[pos:])
    text = "".join(rest).strip()
    return (text or None), calls


def _read_call(answer: str, start: int) -> tuple[dict, int] | None:
    """The call object after ``<tool_call>`` at ``start`` and the index past its ``</tool_call>``, or None."""
    i = start + len(_OPEN)
    while i < len(answer) and answer[i].isspace():
        i += 1
    try:
        obj, j = _DECODER.raw_decode(answer, i)
    except ValueError:
        return None
    while j < len(answer) and answer[j].isspace():
        j += 1
    if not isinstance(obj, dict) or not answer.startswith(_CLOSE, j):
        return None
    return obj, j + len(_CLOSE)


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
