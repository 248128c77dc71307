"""What the embedded engine does with each sequence after a step: sample, let its controller decide, act.

A sequence's controller (the thinking machine, a plain completion) sees every
token and answers with a :class:`~ponder.thinking.machine.Decision`: go on,
stop, rewrite the continuation (a "Wait," cue, the closing of a capped
think: the KV is trimmed with ``seq_rm`` and the new text prefilled next
step), or pause for a tool.  A mixin of :class:`~ponder.backends.engine.Engine`,
run only by its owner thread.
"""

from __future__ import annotations

import codecs
import logging
import time

import numpy as np

from ponder.backends.prompt_cache import common_prefix
from ponder.backends.samplers import top_alternatives
from ponder.backends.sequences import Job, Seq, ToolRequest
from ponder.errors import BackendError
from ponder.thinking.machine import Decision
from ponder.types import Deadline, TokenLogprob

log = logging.getLogger("ponder.engine")


class SequenceControl:
    def _check_interrupt(self, s: Seq) -> bool:
        r = s.req
        reason = None
        if r.cancel.cancelled:
            reason = "cancelled"
        elif r.deadline is not None and r.deadline.passed:
            reason = "deadline"
        if reason is None:
            return False
        if r.controller is None:
            self._finish(s, reason)
            return True
        thinking = getattr(r.controller, "phase", None) == "thinking"
        d = r.controller.interrupt(reason)
        if reason == "deadline" and thinking and d.kind == "rewrite":
            r.deadline = Deadline(time.monotonic() + r.answer_grace_s)
        return self._act(s, d, reason)

    def _sample(self, outputs: list[tuple[Seq, int]]) -> None:
        for s, idx in outputs:
            if s.state == "done":
                continue
            try:
                self._sample_one(s, idx)
            except Exception as exc:  # a controller bug fails its own sequence, never the engine
                log.exception("sequence failed")
                self._fail(s, BackendError(f"generation failed: {type(exc).__name__}: {exc}"))

    def _sample_one(self, s: Seq, idx: int) -> None:
        lc = self._lc
        r = s.req
        row = np.ctypeslib.as_array(lc.llama_get_logits_ith(self.ctx, idx), shape=(self.n_vocab,))
        if r.score_ids is not None:
            lse = self._logsumexp(row)
            s.cont = []
            self._finish(s, "scored", scores={t: float(row[t] - lse) for t in r.score_ids})
            return
        if self._check_interrupt(s):
            return
        ctrl = r.controller
        sampler = s.sampler
        if s.grammar_sampler is not None and getattr(ctrl, "phase", "answer") == "answer":
            sampler = s.grammar_sampler
        tok = lc.llama_sampler_sample(sampler, self.ctx, idx)
        lse = self._logsumexp(row)
        piece = self.piece(tok)
        top = ()
        if r.sampling.top_logprobs:
            top = top_alternatives(row, r.sampling.top_logprobs, lse, lambda t: self.piece(t).decode("utf-8", errors="replace"))
        if lc.llama_vocab_is_eog(self.vocab, tok):
            # the end-of-turn token is sampled but never evaluated: it is not counted
            self._act(s, ctrl.end_of_turn(), "stop")
            return
        s.generated += 1
        text = s.decoder.decode(piece)
        s.cont.append(tok)
        s.cont_bytes.append(piece)
        s.next_token = tok
        tlp = TokenLogprob(piece.decode("utf-8", errors="replace"), float(row[tok] - lse), top)
        d = ctrl.feed(text, 1, tlp)
        if self._act(s, d, "stop"):
            return
        if s.positions >= self.n_ctx and s.state == "decode":
            self._act(s, ctrl.interrupt("context"), "length")

    def _act(self, s: Seq, d: Decision, reason: str) -> bool:
        """Carry out a controller decision; True when the sequence ended."""
        if d.kind == "continue":
            return False
        if d.kind == "stop":
            self._finish(s, reason if reason != "stop" else "stop")
            return True
        if d.kind == "rewrite":
            self._rewrite(s, d)
            return False
        if d.kind == "tool":
            s.state = "paused"
            s.paused_since = time.perf_counter()
            # the tool call's own tokens are in the KV up to the marker; nothing to feed until resumed
            s.req.post(ToolRequest(d.payload, s))
            return False
        raise BackendError(f"unknown controller decision {d.kind!r}")  # pragma: no cover

    def _resume(self, s: Seq, text: str, answer_now: bool = False) -> None:
        if s.state != "paused":
            return
        s.state = "decode"
        s.paused_since = None
        self._act(s, s.req.controller.tool_result(text, answer_now=answer_now), "stop")

    def _rewrite(self, s: Seq, d: Decision) -> None:
        """Make the sequence's continuation ``text[:keep] + append``: trim the KV, prefill the new text."""
        text = s.req.controller.text
        keep_b = len(text[: d.keep].encode("utf-8"))
        # the first continuation token that reaches past the kept bytes
        j, acc = 0, 0
        while j < len(s.cont_bytes) and acc + len(s.cont_bytes[j]) <= keep_b:
            acc += len(s.cont_bytes[j])
            j += 1
        tail = text.encode("utf-8")[acc:keep_b] + d.append.encode("utf-8")
        try:
            tail_text = tail.decode("utf-8")
            consistent = b"".join(s.cont_bytes[:j]) == text.encode("utf-8")[:acc]
        except UnicodeDecodeError:
            consistent = False
        if consistent:
            new_cont = s.cont[:j] + self.tokenize(tail_text)
        else:
            # byte bookkeeping lost (replacement characters): re-tokenize the whole continuation
            full = self.tokenize(text[: d.keep] + d.append)
            j = common_prefix(s.cont, full)
            new_cont = full
        injected = len(new_cont) - j
        s.injected += injected
        keep_eval = min(s.n_eval, len(s.prompt) + j)
        self._lc.llama_memory_seq_rm(self.mem, s.slot, keep_eval, -1)
        s.n_eval = keep_eval
        s.cont = new_cont
        s.cont_bytes = [self.piece(t) for t in new_cont]
        s.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        s.next_token = None
        feed = (s.prompt + s.cont)[keep_eval:]
        if len(s.prompt) + len(s.cont) >= self.n_ctx:
            self._act(s, s.req.controller.interrupt("context"), "length")
            return
        if feed:
            s.state = "prefill"
            self._jobs.append(Job(feed, keep_eval, [s]))
        else:
            s.state = "decode"

