"""The one interface every engine implements.

Two ways to drive an engine:

* **text continuation** (``stream_text``): the prompt is raw text (the chat
  template already applied) and generation continues it.  This is what lets
  ponder enforce thinking budgets to the token: stop at ``</think>``, inject a
  cue, continue.  The embedded llama.cpp engine supports it, and it reuses the
  evaluated prefix between calls, so continuing costs only the new tokens.
* **chat** (``stream_chat``): OpenAI-style messages in, thinking/answer pieces
  out.  Every backend supports it; it is all a hosted API offers.

The thinking controller picks text mode when ``info.text_completion`` is true.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from typing import ContextManager, Iterator, Literal, Sequence

from ponder.types import CancelToken, CompletionStats, Message, Piece, Sampling


@dataclass(frozen=True)
class BackendInfo:
    """What the controller and strategies need to know about an engine."""

    name: str
    model: str
    #: supports ``stream_text`` (raw continuation of rendered prompts)
    text_completion: bool
    #: the model's template thinks natively in ``<think>`` tags (R1, Qwen3)
    native_reasoning: bool = False
    #: gives per-token log-probabilities
    logprobs: bool = False
    #: one call can return ``n`` samples sharing the prompt
    supports_n: bool = False
    context_length: int = 0
    #: samples of the same prompt reuse the evaluated prompt state
    prefix_reuse: bool = False
    #: calls may run concurrently (remote engines); False means serialized
    concurrent: bool = False


@dataclass(frozen=True)
class ChatPiece:
    """A streamed piece of a chat answer, already split by channel."""

    kind: Literal["thinking", "answer"]
    text: str
    tokens: int = 1
    logprob: float | None = None


class Backend(abc.ABC):
    """An engine.  Implementations must be safe to call from several threads."""

    info: BackendInfo

    # -- text mode -------------------------------------------------------
    def render_chat(self, messages: Sequence[Message]) -> str:
        """Apply the model's chat template, ending with the assistant turn open."""
        raise NotImplementedError(f"{self.info.name} has no text-continuation mode")

    def stream_text(
        self,
        prompt: str,
        *,
        max_tokens: int,
        sampling: Sampling,
        stop: Sequence[str] = (),
        cancel: CancelToken | None = None,
        stats: CompletionStats | None = None,
    ) -> Iterator[Piece]:
        """Continue ``prompt``; yield pieces; fill ``stats`` when done.

        Generation ends at EOS, at ``max_tokens``, at a stop string (which is
        not yielded; ``stats.stopped_by`` names it) or when ``cancel`` fires.
        Closing the iterator early also ends generation.
        """
        raise NotImplementedError(f"{self.info.name} has no text-continuation mode")

    # -- chat mode -------------------------------------------------------
    @abc.abstractmethod
    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        sampling: Sampling,
        thinking: bool,
        cancel: CancelToken | None = None,
        stats: CompletionStats | None = None,
    ) -> Iterator[ChatPiece]:
        """Stream a chat completion split into thinking and answer pieces.

        ``thinking=False`` asks the engine not to think (where it can).
        """

    # -- helpers -----------------------------------------------------------
    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` costs on this model (exact where the tokenizer is local)."""

    def token_logprobs(self, prompt: str, candidates: Sequence[str]) -> dict[str, float] | None:
        """Log-probability of each candidate as the next token after ``prompt``.

        Used by model-judged scorers ("yes"/"no").  ``None`` when unsupported.
        """
        return None

    def exclusive(self) -> ContextManager:
        """Hold the engine for a whole multi-call sample.

        Serialized engines return their (re-entrant) lock so no other request
        runs between the think and answer calls of one sample; concurrent
        engines return a no-op context.
        """
        return contextlib.nullcontext()

    def close(self) -> None:
        """Release engine resources."""
