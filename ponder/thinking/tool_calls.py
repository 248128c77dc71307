"""Tool calls inside the thinking: the part of the thinking machine that pauses for a tool and reads its result.

A call is ``<tool_call>{...}</tool_call>`` (or, for the python tool, a
complete fenced ```python block).  The machine answers with a ``tool``
decision; the driver runs the tool and hands its result back through
:meth:`ToolCalls.tool_result`, which appends it to the thinking.  A mixin of
:class:`~ponder.thinking.machine.ThinkingMachine`.
"""

from __future__ import annotations

import json
import re

from ponder.thinking.decisions import Decision

TOOL_OPEN = "<tool_call>"
TOOL_CLOSE = "</tool_call>"
#: a fenced python block (``` python / ```py), complete: its closing fence ends a line
_FENCE_CALL = re.compile(r"```[ \t]*(?:python|py)[ \t]*\n(.*?)\n[ \t]*```", re.S)
_FENCE_OPEN = re.compile(r"```[ \t]*(?:python|py)[ \t]*(?:\n|$)")


class ToolCalls:
    def _tool_call(self, end: int, end_in_pending: int) -> Decision:
        block = self._pending[:end_in_pending]
        start = block.find(TOOL_OPEN)
        self._emit_thinking(block)
        self._pending = ""
        payload = block[start + len(TOOL_OPEN): len(block) - len(TOOL_CLOSE)] if start >= 0 else ""
        self._tool_at = end
        return Decision("tool", keep=end, payload=payload.strip())

    def _fenced_call(self, base: int, m: "re.Match") -> Decision:
        """A complete ```python block: run it as the python tool, its output follows the block."""
        block = self._pending[: m.end()]
        self._emit_thinking(block)
        self._pending = ""
        self._tool_at = base + m.end()
        return Decision("tool", keep=base + m.end(), payload=json.dumps({"name": "python",
                                                                        "arguments": {"code": m.group(1)}}))

    def tool_result(self, text: str, *, answer_now: bool = False) -> Decision:
        """Append a tool's result to the thinking; the model reads it and thinks on.

        The result's tokens are input the model reads, not thinking it wrote:
        the driver counts them as ``tool_tokens``.  ``answer_now``: a tool
        limit is reached, so thinking ends here and the answer phase begins.
        """
        keep = self._tool_at if self._tool_at is not None else len(self.text)
        self._tool_at = None
        block = f"\n<tool_response>\n{text}\n</tool_response>\n"
        self._emit_thinking(block, guard=False)
        if answer_now and self.phase == "thinking":
            self.text = self.text[:keep] + block
            return self._cut("tools", len(self.text))
        if self.used >= self.budget.max_tokens:
            self.text = self.text[:keep] + block
            return self._cut("budget", len(self.text))
        return self._rewrite(keep, block)
