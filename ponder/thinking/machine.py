"""Thinking control for one sequence: a small state machine driven by each new token.

Every engine runs the same rules, token by token:

* **hard max** — thinking stops at exactly the cap; the block is closed and
  an answer cue written, so a capped request still answers;
* **min** — an early end of thinking (``</think>`` or end of turn) is
  suppressed and a continuation cue ("Wait,") written instead;
* **loop guard** — a trace whose tail repeats itself stops thinking early;
* **answer phase** — stop strings, the answer's token limit, end-of-turn text
  the model writes, and stray think tags (never shown as an answer; a
  reopened ``<think>`` block in the answer goes back to the thinking).

Drivers feed tokens and act on the returned :class:`Decision`:

* the embedded engine feeds raw text (:meth:`ThinkingMachine.feed`) and
  executes ``rewrite`` by rolling its KV back to ``keep`` characters of
  :attr:`ThinkingMachine.text` and prefilling ``append``;
* chat-only upstreams feed pieces already split into thinking and answer
  (:meth:`ThinkingMachine.feed_piece`) and execute ``cut`` by closing the
  stream and asking for the answer in a follow-up turn.

The machine never touches an engine: it is plain logic, tested on its own.
"""

from __future__ import annotations


from typing import Callable, Literal

from ponder.thinking import prompts
from ponder.thinking.formats import get_format
from ponder.thinking.extract import answer_like, explicit_answer, has_explicit_result, last_stated_result
from ponder.thinking.decisions import (  # noqa: F401  (re-exported: what drivers import from here)
    CONTINUE,
    STOP,
    AnswerDelta,
    Decision,
    Event,
    LoopGuardSettings,
    Monitor,
    ThinkingDelta,
    earliest as _earliest,
)
from ponder.thinking.formats import partial_suffix as _partial
from ponder.thinking.loop_guard import text_units
from ponder.thinking.tool_calls import _FENCE_CALL, _FENCE_OPEN, TOOL_CLOSE, TOOL_OPEN, ToolCalls
from ponder.types import (
    AnswerSource,
    FinishReason,
    StopReason,
    ThinkingBudget,
    ThinkingReport,
    TokenLogprob,
)

#: the machine drives think-tag thinking (the text engines are prompted, or trained, to write it)
OPEN, CLOSE = get_format("think").open, get_format("think").close
#: template text that means "the turn is over" when a model writes it as text
END_MARKERS = ("<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>", "<|end|>",
               "<｜end▁of▁sentence｜>", "</s>")
class ThinkingMachine(ToolCalls):
    """One sequence's thinking budget, loop guard and answer phase."""

    def __init__(
        self,
        budget: ThinkingBudget,
        *,
        max_answer_tokens: int,
        stop: tuple[str, ...] = (),
        loop_guard: LoopGuardSettings = LoopGuardSettings(),
        cue_tokens: Callable[[str], int] = lambda s: len(s.split()) or 1,
        on_event: Callable[[Event], None] | None = None,
        tools: bool = False,
        fenced_python: bool = False,
        structured: bool = False,
    ) -> None:
        self.budget = budget
        self.max_answer_tokens = max_answer_tokens
        self.stops = tuple(s for s in stop if s)
        self.guard = loop_guard.make()
        self.cue_tokens = cue_tokens
        self.on_event = on_event or (lambda e: None)
        self.tools = tools
        #: a fenced ```python block in the thinking is a call of the python tool (models that do not
        #: know the <tool_call> format write code this way)
        self.fenced_python = fenced_python and tools
        #: the answer must follow a grammar (structured output): it always gets its answer phase, and the
        #: answer is that text, never a result read from the thinking
        self.structured = structured
        self.phase: Literal["thinking", "answer", "done"] = "thinking" if budget.enabled else "answer"
        self.report = ThinkingReport(budget=budget.max_tokens, min=budget.min_tokens, effort=budget.effort)
        #: the continuation as the model sees it (raw mode): what follows the prompt in the KV
        self.text = ""
        self.thinking = ""
        self.answer = ""
        #: thinking tokens: generated tokens plus continuation cues
        self.used = 0
        self.answer_tokens = 0
        #: tokens generated while thinking was off or after it was cut (chat mode): billed as answer
        self.hidden_tokens = 0
        self.finish: FinishReason | None = None
        self.logprobs: list[TokenLogprob] = []
        self.monitor: Monitor | None = None
        self.early_stopped = False
        self._pending = ""       # thinking text not yet classified (a partial tag may be forming)
        self._apending = ""      # answer text not yet classified
        self._inner_think = False  # inside a <think> block the model reopened in the answer
        self._answer_started = False
        self._tool_at: int | None = None
        #: what the model generated in each phase, before any classification (for regression fixtures)
        self.raw = {"thinking": "", "answer": ""}
        #: how thinking ended as the model produced it: "tag", "eog", "budget", "repetition", ...
        self.thinking_end: str | None = None

    # ------------------------------------------------------------------ raw mode
    def feed(self, text: str, tokens: int = 1, logprob: TokenLogprob | None = None) -> Decision:
        """One generated token's text (raw continuation mode)."""
        if self.phase == "done":
            return STOP
        self.text += text
        self.raw[self.phase] += text
        if logprob is not None:
            self.logprobs.append(TokenLogprob(logprob.token, logprob.logprob, logprob.top, self.phase))
            if self.monitor is not None and self.monitor(self.logprobs[-1]):
                return self._stop_early()
        if self.phase == "thinking":
            self.used += tokens
            return self._thinking_raw(text, logprob)
        return self._answer_step(text, tokens, logprob)

    def end_of_turn(self) -> Decision:
        """The model produced its end-of-generation token."""
        if self.phase == "thinking":
            # the model ended its turn inside the think.  If it stated its result there, that is its answer:
            # asking it to go on after a forced close only gets a second, unrelated reply
            self._pending = ""
            self.thinking_end = "eog"
            if not self.structured and self.used >= self.budget.min_tokens and has_explicit_result(self.thinking):
                self.report.stopped = "end"
                self.report.used = min(self.used, self.budget.max_tokens)
                self.phase = "answer"
                return self._finish("stop")
            return self._thinking_ended(len(self.text))
        if self.phase == "answer":
            return self._finish("stop")
        return STOP

    def _thinking_raw(self, text: str, logprob: TokenLogprob | None) -> Decision:
        self._pending += text
        base = len(self.text) - len(self._pending)
        if self.fenced_python:
            fenced = _FENCE_CALL.search(self._pending)
            if fenced is not None and (_earliest(self._pending[:fenced.start()], (CLOSE, *END_MARKERS, TOOL_CLOSE))
                                       is None):
                return self._fenced_call(base, fenced)
        hit = _earliest(self._pending, (CLOSE, *END_MARKERS) + ((TOOL_CLOSE,) if self.tools else ()))
        if hit is not None:
            i, marker = hit
            if marker == TOOL_CLOSE:
                return self._tool_call(base + i + len(marker), i + len(marker))
            self._emit_thinking(self._pending[:i])
            self._pending = ""
            self.thinking_end = "tag" if marker == CLOSE else "end-marker"
            return self._thinking_ended(base + i)
        # a call's opening tag may arrive in pieces (one character a token on some tokenizers): hold it too
        hold = max(_partial(self._pending, m) for m in (CLOSE, OPEN, *END_MARKERS) + ((TOOL_OPEN,) if self.tools
                                                                                      else ()))
        if self.tools and TOOL_OPEN in self._pending:
            hold = len(self._pending) - self._pending.index(TOOL_OPEN)
        if self.fenced_python:
            opened = _FENCE_OPEN.search(self._pending)
            if opened is not None:
                hold = max(hold, len(self._pending) - opened.start())
            else:
                hold = max(hold, _partial(self._pending, "```python\n"), _partial(self._pending, "```py\n"))
        emit = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(emit):]
        if self._emit_thinking(emit):
            return self._cut("repetition", len(self.text) - len(self._pending))
        if self.used >= self.budget.max_tokens:
            return self._cut("budget", len(self.text) - len(self._pending))
        return CONTINUE

    def _thinking_ended(self, keep: int) -> Decision:
        """The model closed its thinking (or ended its turn) at ``keep``."""
        if self.used < self.budget.min_tokens:
            cue = prompts.CONTINUE_CUE
            n = self.cue_tokens(cue)
            if self.used + n < self.budget.max_tokens:
                self.used += n
                self.report.continuations += 1
                self._emit_thinking(cue)
                return self._rewrite(keep, cue)
        self.report.stopped = "end"
        return self._to_answer(keep, cue=False)

    def force_answer(self, reason: StopReason = "budget") -> Decision:
        """End thinking now (as a cap would) and move to the answer phase."""
        if self.phase != "thinking":
            return CONTINUE if self.phase == "answer" else STOP
        return self._cut(reason, len(self.text) - len(self._pending))

    def _cut(self, reason: StopReason, keep: int) -> Decision:
        self.thinking_end = reason
        self.report.stopped = reason
        self.report.truncated = reason == "budget"
        self.used = min(self.used, self.budget.max_tokens)
        return self._to_answer(keep, cue=True)

    def _to_answer(self, keep: int, *, cue: bool) -> Decision:
        self._pending = ""
        self.report.used = min(self.used, self.budget.max_tokens)
        self.phase = "answer"
        keep = len(self.text[:keep].rstrip())
        return self._rewrite(keep, prompts.CLOSE_THINKING + (prompts.ANSWER_CUE if cue else ""))

    def _rewrite(self, keep: int, append: str) -> Decision:
        self.text = self.text[:keep] + append
        return Decision("rewrite", keep, append)

    # ------------------------------------------------------------------ chat mode
    def feed_piece(self, kind: str, text: str, tokens: int = 1, logprob: TokenLogprob | None = None) -> Decision:
        """A piece an upstream already labelled thinking or answer."""
        if self.phase == "done":
            return STOP
        if kind == "thinking":
            if self.phase != "thinking":
                # thinking while it is off or after a cut: billed (as answer), never shown
                self.hidden_tokens += tokens
                return CONTINUE
            if self.used + tokens > self.budget.max_tokens:
                self.report.stopped, self.report.truncated = "budget", True
                return self._chat_cut()
            self.used += tokens
            if logprob is not None:
                self.logprobs.append(TokenLogprob(logprob.token, logprob.logprob, logprob.top, "thinking"))
                if self.monitor is not None and self.monitor(self.logprobs[-1]):
                    return self._stop_early()
            visible = text.replace(OPEN, "").replace(CLOSE, "")
            if self._emit_thinking(visible):
                self.report.stopped = "repetition"
                return self._chat_cut()
            return CONTINUE
        if self.phase == "thinking":
            self.report.stopped = "end" if self.budget.enabled else "none"
            self.report.used = self.used
            self.phase = "answer"
        if logprob is not None:
            self.logprobs.append(TokenLogprob(logprob.token, logprob.logprob, logprob.top, "answer"))
        return self._answer_step(text, tokens, logprob)

    def _answer_step(self, text: str, tokens: int, logprob: TokenLogprob | None) -> Decision:
        """Answer text of either mode: count it, pass it through the answer filter, stop at the answer limit."""
        self.answer_tokens += tokens
        d = self._answer_text(text, logprob)
        if d is STOP:
            return d
        if self.answer_tokens >= self.max_answer_tokens:
            return self._finish("length")
        return CONTINUE

    def _stop_early(self) -> Decision:
        """A strategy's monitor gave up on this trace (its confidence fell too low)."""
        self.early_stopped = True
        if self.phase == "thinking":
            self.report.stopped = "confidence"
            self.used = min(self.used, self.budget.max_tokens)
        return self._finish("stop")

    def _chat_cut(self) -> Decision:
        self.used = min(self.used, self.budget.max_tokens)
        self.report.used = self.used
        self.phase = "answer"
        return Decision("cut")

    def stream_ended(self, finish: str = "stop") -> None:
        """A chat stream ended (finish reason from the upstream)."""
        if self.phase == "thinking":
            # the upstream stopped while still thinking: no answer phase happened
            self.report.stopped = "budget" if finish == "length" else "end"
            self.report.truncated = finish == "length"
            self.report.used = self.used
            self.phase = "answer"
        if self.phase == "answer" and self.finish is None:
            self._finish("length" if finish == "length" else "stop")

    # ------------------------------------------------------------------ both modes
    def interrupt(self, reason: Literal["cancelled", "deadline", "context"]) -> Decision:
        """Stop now (client gone, deadline, context full).

        A deadline or a full context in the thinking phase still answers
        (like a budget cut); in the answer phase, or on cancellation, the
        sample ends where it is.
        """
        if self.phase == "done":
            return STOP
        if reason != "cancelled" and self.phase == "thinking" and self.budget.enabled:
            return self._cut(reason, len(self.text) - len(self._pending))
        if self.phase == "thinking":
            self.report.stopped = reason
            self.report.used = min(self.used, self.budget.max_tokens)
        return self._finish("cancelled" if reason == "cancelled" else ("deadline" if reason == "deadline"
                                                                       else "length"))

    def _finish(self, reason: FinishReason) -> Decision:
        if self.phase == "done":
            return STOP
        if self._apending and not self._inner_think:
            tail = self._apending
            if not any(m.startswith(tail.strip()) for m in (OPEN, CLOSE, *END_MARKERS) if tail.strip()):
                self._emit_answer(tail)
        self._apending = ""
        if self.phase == "thinking":
            self.report.used = min(self.used, self.budget.max_tokens)
        self.phase = "done"
        self.finish = reason
        return STOP

    # ------------------------------------------------------------------ text handling
    def _emit_thinking(self, text: str, *, guard: bool = True) -> bool:
        """Show thinking text; returns True when the loop guard fires."""
        text = text.replace(OPEN, "")
        if not text:
            return False
        self.thinking += text
        self.on_event(ThinkingDelta(text, min(self.used, self.budget.max_tokens)))
        return guard and self.guard.feed_many(text_units(text))

    def _emit_answer(self, text: str, logprob: TokenLogprob | None = None) -> None:
        if not self._answer_started:
            text = text.lstrip()
            if not text:
                return
            self._answer_started = True
        self.answer += text
        self.on_event(AnswerDelta(text, (logprob,) if logprob is not None else ()))

    def _answer_text(self, text: str, logprob: TokenLogprob | None) -> Decision:
        """Classify answer text: stop strings, end markers, stray or reopened think tags."""
        self._apending += text
        while self._apending:
            if self._inner_think:
                i = self._apending.find(CLOSE)
                if i < 0:
                    hold = _partial(self._apending, CLOSE)
                    self.thinking += self._apending[: len(self._apending) - hold]
                    self._apending = self._apending[len(self._apending) - hold:]
                    return CONTINUE
                self.thinking += self._apending[:i]
                self._apending = self._apending[i + len(CLOSE):]
                self._inner_think = False
                continue
            hit = _earliest(self._apending, (*self.stops, *END_MARKERS, OPEN, CLOSE))
            if hit is None:
                hold = max((_partial(self._apending, m) for m in (*self.stops, *END_MARKERS, OPEN, CLOSE)), default=0)
                emit = self._apending[: len(self._apending) - hold]
                self._apending = self._apending[len(emit):]
                if emit:
                    self._emit_answer(emit, logprob)
                return CONTINUE
            i, marker = hit
            if i:
                self._emit_answer(self._apending[:i], logprob)
            self._apending = self._apending[i + len(marker):]
            if marker == OPEN:
                self._inner_think = True
                if self.thinking and not self.thinking.endswith("\n"):
                    self.thinking += "\n"
            elif marker == CLOSE:
                continue  # a stray closing tag: dropped
            else:
                self._apending = ""
                return self._finish("stop")  # a stop string or end-of-turn text
        return CONTINUE

    # ------------------------------------------------------------------ the result
    def final_answer(self) -> tuple[str, AnswerSource]:
        """The answer a client sees, and where it came from.

        A tag, a template token or an empty string is never an answer: when
        the answer phase produced nothing else, the last stated result of the
        thinking is the answer.
        """
        answer = self.answer.strip()
        if self.structured:
            return (answer, "answer") if answer else ("", "none")
        explicit_thinking = has_explicit_result(self.thinking)
        if answer and (explicit_answer(answer) or not explicit_thinking and answer_like(answer)):
            return answer, "answer"
        if answer and not explicit_thinking:
            return answer, "answer"
        fallback = last_stated_result(self.thinking)
        if fallback:
            return fallback, "thinking"
        return (answer, "answer") if answer else ("", "none")

    def thinking_tokens(self) -> int:
        return min(self.used, self.budget.max_tokens) if self.budget.enabled else 0
