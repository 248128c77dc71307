"""The few pieces of text ponder injects into a model's context.

Kept in one place so they can be tuned (and read) together.
"""

from __future__ import annotations

from ponder.thinking.formats import get_format
from ponder.types import Message

_THINK = get_format("think")

#: Asks a model that was not trained to reason to think inside tags first.
THINK_INSTRUCTION = (
    f"Think step by step inside {_THINK.open} and {_THINK.close} before you answer. "
    f"After {_THINK.close}, write only the final answer."
)

#: Appended when the model tries to stop thinking before the minimum (s1's
#: budget forcing uses the same word).
CONTINUE_CUE = "\nWait,"

#: Closes the thinking block when the cap cuts it.
CLOSE_THINKING = _THINK.close_text

#: Written after a cut think, so the model goes straight to the answer.
ANSWER_CUE = "Final answer:"

#: Chat-only upstreams cannot be continued mid-message, so a cut think is
#: handed back as context with this instruction.
FORCED_ANSWER_INSTRUCTION = (
    "Your thinking time is over. Using the reasoning above, reply now with only the final answer."
)


def with_think_instruction(messages: list[Message]) -> list[Message]:
    """Prepend (or extend) the system prompt with :data:`THINK_INSTRUCTION`."""
    if messages and messages[0].role in ("system", "developer"):
        first = messages[0]
        return [Message(first.role, f"{first.content.rstrip()}\n\n{THINK_INSTRUCTION}"), *messages[1:]]
    return [Message("system", THINK_INSTRUCTION), *messages]


def with_system_note(messages: list[Message], note: str) -> list[Message]:
    """Add ``note`` to the system prompt (creating one when there is none)."""
    if messages and messages[0].role in ("system", "developer"):
        first = messages[0]
        return [Message(first.role, f"{first.content.rstrip()}\n\n{note}"), *messages[1:]]
    return [Message("system", note), *messages]
