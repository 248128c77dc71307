"""The embedded engine: one llama.cpp context, one owner thread, batched decoding.

Exactly one thread (the owner) touches the llama.cpp context.  Everything
that wants tokens — every sample of every request, summaries, judges, the
llm router — submits sequences here and receives events through its handle.
Each step decodes one token for every active sequence in a single
``llama_decode`` batch, together with chunks of prompts still being
prefilled, so decoding never stalls behind a long prompt:

* **continuous admission** — sequences join between steps when a slot and
  their worst-case KV cells are free (otherwise they wait, FIFO), and leave
  the moment they finish or are cancelled, freeing their cells at once;
* **prefix sharing** — N samples of one prompt are prefilled once (every
  prompt token carries all N sequence ids) and each samples from the same
  last-token logits; a sequence whose prompt starts like a live or recently
  finished one copies those KV cells (``seq_cp``) instead of re-evaluating
  them (a small LRU of finished prompts is kept in spare sequence slots);
* **per-sequence control** — each sequence carries a controller (the
  thinking state machine, or a plain completion) that sees every token and
  may roll the sequence back and inject text (a "Wait," cue, the closing of
  a capped think, a tool result) — the KV is trimmed with ``seq_rm`` and the
  new text prefilled in the next step;
* **log-probabilities** of every sampled token (and top-k on request) are
  read from the logits the step already produced.

Sampling per sequence uses llama.cpp's own sampler chain (top-k, top-p,
temperature, seeded distribution; greedy at temperature 0; a grammar for
structured answers), the same chain ``Llama.generate`` builds, so a single
sequence with a fixed seed reproduces the sequential path token for token
(with flash attention off, as ``Llama`` has it by default).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

from ponder.backends.control import SequenceControl
from ponder.backends.preemption import Scheduling
from ponder.backends.threads import Governor
from ponder.backends.llama_runtime import LlamaRuntime
from ponder.backends.prompt_cache import PromptCache
from ponder.backends.samplers import LogSumExp, free_samplers, make_samplers
from ponder.backends.sequences import Admitted, Done, Failed, Group, GroupState, Job, Seq, SeqRequest
from ponder.errors import BackendError, ContextOverflow

log = logging.getLogger("ponder.engine")



class Engine(SequenceControl, Scheduling, LlamaRuntime):
    """Owns one llama.cpp context and schedules every sequence on it."""

    def __init__(self, model_path: str | Path, *, n_ctx: int = 4096, kv_cells: int | None = None,
                 max_sequences: int = 16, cache_slots: int = 4, n_threads: int | None = None, n_batch: int = 512,
                 flash_attn: bool | None = None, min_reuse: int = 8) -> None:
        super().__init__(model_path, n_ctx=n_ctx, kv_cells=kv_cells, max_sequences=max_sequences,
                         cache_slots=cache_slots, n_threads=n_threads, n_batch=n_batch, flash_attn=flash_attn,
                         min_reuse=min_reuse)
        lc = self._lc
        self._logsumexp = LogSumExp(self.n_vocab)
        self._cond = threading.Condition()
        self._incoming: deque[Group] = deque()
        self._waiting: deque[Group] = deque()
        self._seqs: list[Seq] = []
        self._jobs: list[Job] = []
        # decoding places, then (past the prompt cache's ids) ids for sequences paused by a more urgent class
        self._free_slots = list(range(max_sequences)) + list(range(max_sequences + cache_slots,
                                                                   2 * max_sequences + cache_slots))
        #: finished prompts kept in spare sequence slots
        self.cache = PromptCache(lc, self.mem, max_sequences, cache_slots, min_reuse)
        #: KV cells reserved by running sequences (their prompts and worst-case continuations)
        self._reserved = 0
        self._resumes: deque[tuple[Seq, str, bool]] = deque()
        #: mailboxes that received events this step: flushed once per step (one wake-up per loop, not per token)
        self.dirty: set = set()
        self._closed = False
        self.steps = 0
        self.tokens_decoded = 0
        self._sched_init()
        #: backs the thread count off when decoding collapses on a shared CPU (ponder.backends.threads)
        self.governor = Governor(self.n_threads, self._set_threads)
        self._thread = threading.Thread(target=self._run, name=f"ponder-engine-{self.path.stem}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ any thread
    def submit(self, prompt: list[int], members: Sequence[SeqRequest]) -> None:
        """Queue sequences that share ``prompt``; events arrive through each member's ``post``."""
        if self._closed:
            raise BackendError("the engine is shut down")
        if len(prompt) >= self.n_ctx:
            raise ContextOverflow(f"the prompt is {len(prompt)} tokens; the model's context holds {self.n_ctx}",
                                  param="messages")
        if not prompt:
            raise BackendError("empty prompt")
        with self._cond:
            self._incoming.append(Group(list(prompt), list(members)))
            self._cond.notify()

    def resume(self, handle: Any, text: str, *, answer_now: bool = False) -> None:
        """Continue a sequence paused for a tool with the tool's result (then its answer, if ``answer_now``)."""
        with self._cond:
            self._resumes.append((handle, text, answer_now))
            self._cond.notify()

    def load(self) -> dict:
        """What is running and waiting right now (for admission, shedding and metrics)."""
        with self._cond:
            waiting = sum(len(g.members) for g in self._waiting) + sum(len(g.members) for g in self._incoming)
            return {"active": len(self._seqs), "waiting": waiting, "max_sequences": self.max_sequences,
                    "kv_cells": self.kv_cells, "kv_reserved": self._cells_in_use(), "cached_prompts": len(self.cache),
                    "threads": self.governor.threads, "decode_tokens_per_second": round(self.governor.rate, 2),
                    "preempted": sum(1 for s in self._seqs if s.preempted_at is not None),
                    "preemptions": self.preemptions, "resumed": self.resumed,
                    "saved_out": sum(1 for s in self._seqs if s.saved is not None),
                    "kv_saved": self.saved, "kv_restored": self.restored}

    def _set_threads(self, n: int) -> None:
        """Owner thread only (between steps)."""
        self._lc.llama_set_n_threads(self.ctx, n, n)
        self.n_threads = n

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)
        self.free()

    # ------------------------------------------------------------------ owner thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._incoming and not self._seqs and not self._waiting \
                        and not self._resumes:
                    self._cond.wait()
                if self._closed:
                    break
                while self._incoming:
                    self._waiting.append(self._incoming.popleft())
                resumes = list(self._resumes)
                self._resumes.clear()
            try:
                for seq, text, answer_now in resumes:
                    self._resume(seq, text, answer_now)
                self._drop_dead_waiting()
                for s in [s for s in self._seqs if s.state == "paused"]:
                    self._check_interrupt(s)
                self._interrupt_paused()
                self._admit()
                ran = self._step()
                self._flush_mail()
                if not ran:
                    # nothing could run: only paused or waiting sequences; do not spin
                    with self._cond:
                        self._cond.wait(timeout=0.02)
            except Exception as exc:  # pragma: no cover - a bug or an engine failure: fail everything running
                log.exception("engine step failed")
                for seq in list(self._seqs):
                    self._fail(seq, BackendError(f"engine failure: {type(exc).__name__}: {exc}"))
                self._flush_mail()
        err = BackendError("the engine shut down")
        for seq in list(self._seqs):
            self._fail(seq, err)
        for g in list(self._waiting):
            for m in g.members:
                m.post(Failed(err))
        self._waiting.clear()
        self._flush_mail()

    def _cells_in_use(self) -> int:
        return self._reserved + self.cache.cells

    def _flush_mail(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for box in dirty:
            box.flush()

    def _drop_dead_waiting(self) -> None:
        keep: deque[Group] = deque()
        for g in self._waiting:
            alive = []
            for m in g.members:
                if m.cancel.cancelled:
                    m.post(Done(0, len(g.prompt), 0, "cancelled"))
                elif m.deadline is not None and m.deadline.passed:
                    m.post(Done(0, len(g.prompt), 0, "deadline"))
                else:
                    alive.append(m)
            if alive:
                g.members = alive
                keep.append(g)
        self._waiting = keep

    def _admit(self) -> None:
        self._resume_preempted()  # a paused sequence goes before a new group of its own class
        while self._waiting:
            i = self._next_index()
            if i:  # the chosen group to the front; the others keep their order behind it
                g = self._waiting[i]
                del self._waiting[i]
                self._waiting.appendleft(g)
            g = self._waiting[0]
            need_slots = len(g.members)
            if need_slots > self.max_sequences:
                # more samples than slots: admit what fits now, the rest waits as its own group
                head = Group(g.prompt, g.members[: self.max_sequences], g.t_submit)
                tail = Group(g.prompt, g.members[self.max_sequences:], g.t_submit)
                self._waiting[0] = head
                self._waiting.insert(1, tail)
                continue
            reserve = len(g.prompt) + sum(m.max_new for m in g.members)
            if not (self._fits(reserve) or self._swap_room(g, reserve)) or not self._make_room(g):
                break
            self._waiting.popleft()
            self._charge(g)
            self._start_group(g, reserve)
        self._resume_preempted()

    def _fits(self, reserve: int) -> bool:
        while self._cells_in_use() + reserve > self.kv_cells and len(self.cache):
            self.cache.evict()
        return self._cells_in_use() + reserve <= self.kv_cells or (not self._seqs and reserve >= self.kv_cells)

    def _start_group(self, g: Group, reserve: int) -> None:
        self._reserved += reserve
        state = GroupState(len(g.prompt), len(g.members), len(g.prompt))
        seqs = []
        donor, common = self.cache.donor(g.prompt, [s for s in self._seqs if s.saved is None])
        reuse = min(common, len(g.prompt) - 1) if common >= self.min_reuse else 0
        for m in g.members:
            slot = self._free_slots.pop()
            s = Seq(m, slot, g.prompt, state)
            make_samplers(self._lc, self.vocab, s)
            if reuse:
                self._lc.llama_memory_seq_cp(self.mem, donor, slot, 0, reuse)
            s.n_eval = reuse
            s.cached = reuse
            seqs.append(s)
            m.post(Admitted(time.perf_counter() - g.t_submit, reuse))
        if reuse:
            self.cache.used(donor)
        self._seqs.extend(seqs)
        self._jobs.append(Job(g.prompt[reuse:], reuse, seqs))

    # -- one step ---------------------------------------------------------------
    def _step(self) -> bool:
        lc = self._lc
        b = self.batch
        n = 0
        outputs: list[tuple[Seq, int]] = []  # (sequence, batch index of its logits)
        now_seqs = [s for s in self._seqs if s.state == "decode" and s.next_token is not None
                    and s.preempted_at is None]
        # decoding sequences first: one token each
        for s in now_seqs:
            # an interrupt may end the sequence, or rewrite it (a deadline's answer cue: its next token is gone
            # and the new text is prefilled as a job below): either way it has no token to decode this step
            if self._check_interrupt(s) or s.next_token is None or s.state != "decode":
                continue
            pos = s.n_eval
            self._add(n, s.next_token, pos, (s.slot,), True)
            s.n_eval += 1
            s.next_token = None
            outputs.append((s, n))
            n += 1
        n_decode = n
        # then prompt / injected-text chunks in the room left
        finished_jobs = []
        progress = {id(job): job.done for job in self._jobs}
        for job in list(self._jobs):
            if n >= self.n_batch:
                break
            job.seqs = [s for s in job.seqs if s.state != "done"]
            if not job.seqs:
                self._jobs.remove(job)
                continue
            room = self.n_batch - n
            chunk = job.tokens[job.done: job.done + room]
            slots = tuple(s.slot for s in job.seqs)
            for k, tok in enumerate(chunk):
                last = job.done + k == len(job.tokens) - 1
                self._add(n, tok, job.start_pos + job.done + k, slots, last)
                if last:
                    for s in job.seqs:
                        outputs.append((s, n))
                n += 1
            job.done += len(chunk)
            if job.done >= len(job.tokens):
                finished_jobs.append(job)
        if n == 0:
            return False
        b.n_tokens = n
        t0 = time.perf_counter()
        ret = lc.llama_decode(self.ctx, b)
        if ret != 0:
            self._decode_failed(ret, outputs, progress)
            return True
        if n == n_decode:  # decode-only steps: the governor compares like with like (prefill is cheaper)
            self.governor.step(n, time.perf_counter() - t0)
        self.steps += 1
        self.tokens_decoded += n
        for job in finished_jobs:
            if job in self._jobs:
                self._jobs.remove(job)
            for s in job.seqs:
                s.n_eval = job.start_pos + len(job.tokens)
                s.state = "decode"
        self._sample(outputs)
        return True

    def _add(self, i: int, token: int, pos: int, slots: tuple[int, ...], logits: bool) -> None:
        b = self.batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = len(slots)
        for j, sl in enumerate(slots):
            b.seq_id[i][j] = sl
        b.logits[i] = 1 if logits else 0

    def _decode_failed(self, ret: int, outputs, progress: dict[int, int]) -> None:
        """The batch did not fit the KV (llama.cpp left the memory as it was): undo, make room, retry."""
        for s, _ in outputs:
            if s.state == "decode" and s.next_token is None and s.cont:
                s.n_eval -= 1
                s.next_token = s.cont[-1]
        for job in self._jobs:
            job.done = progress.get(id(job), job.done)
        if ret == 1 and len(self.cache):
            while len(self.cache):
                self.cache.evict()
            return
        victim = max(self._seqs, key=lambda s: s.t_admit) if self._seqs else None
        if victim is not None:
            self._fail(victim, BackendError(f"llama_decode failed ({ret}): the KV cache is full"))

    def _finish(self, s: Seq, reason: str, scores: dict[int, float] | None = None, *, post: bool = True) -> None:
        if s.state == "done":
            return
        s.state = "done"
        lc = self._lc
        g = s.group
        g.live -= 1
        self._reserved -= s.reserved
        if g.live == 0:
            self._reserved -= g.reserved_prompt
            if s.saved is None:
                self.cache.keep(s, self.kv_cells - self._cells_in_use())
        s.saved = None
        lc.llama_memory_seq_rm(self.mem, s.slot, -1, -1)
        free_samplers(lc, s)
        self._seqs.remove(s)
        self._free_slots.append(s.slot)
        if post:
            s.unpause(time.perf_counter())
            s.req.post(Done(s.generated, len(s.prompt), s.cached, reason, scores, s.injected, s.preempted_s))

    def _fail(self, s: Seq, err: BaseException) -> None:
        if s.state == "done":
            return
        self._finish(s, "error", post=False)
        s.req.post(Failed(err))
