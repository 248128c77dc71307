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

import codecs
import ctypes
import logging
import os
import random
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from ponder.errors import BackendError, ContextOverflow
from ponder.thinking.machine import Decision
from ponder.types import CancelToken, Deadline, TokenLogprob

log = logging.getLogger("ponder.engine")


class Controller(Protocol):
    """What the engine needs from a sequence's controller (see :mod:`ponder.thinking.machine`)."""

    text: str

    def feed(self, text: str, tokens: int = 1, logprob: TokenLogprob | None = None) -> Decision: ...

    def end_of_turn(self) -> Decision: ...

    def interrupt(self, reason: str) -> Decision: ...


# -- what travels from the owner thread to a sequence's consumer -----------------


@dataclass(frozen=True)
class Admitted:
    """The sequence got a slot: how long it waited and how much of its prompt was already in the KV."""

    queue_s: float
    cached_tokens: int


@dataclass(frozen=True)
class ToolRequest:
    """The controller asked for a tool; the sequence is paused (keeping its slot) until resumed."""

    payload: str
    #: pass back to :meth:`Engine.resume` with the tool's result
    handle: Any = None


@dataclass(frozen=True)
class Done:
    """The sequence ended; its counts are exact."""

    generated: int
    prompt_tokens: int
    cached_tokens: int
    reason: str
    #: logprobs of candidate tokens (score requests)
    scores: dict[int, float] | None = None
    #: injected tokens (cues, closings, tool results) that were prefilled
    injected_tokens: int = 0


@dataclass(frozen=True)
class Failed:
    error: BaseException


@dataclass
class SeqRequest:
    """One sequence to run.  ``post`` is called from the owner thread with every event."""

    controller: Controller | None
    post: Callable[[object], None]
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    seed: int | None = None
    top_logprobs: int = 0
    #: a GBNF grammar applied once the controller enters its answer phase
    grammar: str | None = None
    #: most tokens the continuation may occupy (thinking cap + cues + answer): reserved in the KV
    max_new: int = 512
    cancel: CancelToken = field(default_factory=CancelToken)
    #: past this, thinking is cut (the sample still answers within ``answer_grace_s``), then the sequence stops
    deadline: Deadline | None = None
    answer_grace_s: float = 2.0
    #: score request: return the log-probabilities of these next tokens after the prompt, sample nothing
    score_ids: tuple[int, ...] | None = None


@dataclass
class _Group:
    """Sequences submitted together with one prompt (prefilled once)."""

    prompt: list[int]
    members: list[SeqRequest]
    t_submit: float = field(default_factory=time.perf_counter)


@dataclass
class _Job:
    """Tokens to prefill at given positions for a set of sequences."""

    tokens: list[int]
    start_pos: int
    seqs: list["_Seq"]
    done: int = 0


class _Seq:
    __slots__ = ("req", "slot", "prompt", "cont", "cont_bytes", "n_eval", "next_token", "sampler", "grammar_sampler",
                 "decoder", "state", "generated", "cached", "t_admit", "group", "injected", "logits_idx", "reserved",
                 "paused_since")

    def __init__(self, req: SeqRequest, slot: int, prompt: list[int], group: "_GroupState") -> None:
        self.req = req
        self.slot = slot
        self.prompt = prompt
        #: continuation token ids (what follows the prompt; the last may not be evaluated yet)
        self.cont: list[int] = []
        self.cont_bytes: list[bytes] = []
        #: tokens (prompt + continuation) already in the KV cache
        self.n_eval = 0
        self.next_token: int | None = None
        self.sampler = None
        self.grammar_sampler = None
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.state = "prefill"  # prefill | decode | paused | done
        self.generated = 0
        self.cached = 0
        self.injected = 0
        self.t_admit = time.perf_counter()
        self.group = group
        self.logits_idx: int | None = None
        self.reserved = req.max_new
        self.paused_since: float | None = None

    @property
    def positions(self) -> int:
        return len(self.prompt) + len(self.cont)


@dataclass
class _GroupState:
    prompt_len: int
    live: int
    reserved_prompt: int


class EngineStats(Protocol):
    active: int
    waiting: int


class Engine:
    """Owns one llama.cpp context and schedules every sequence on it."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 4096,
        kv_cells: int | None = None,
        max_sequences: int = 16,
        cache_slots: int = 4,
        n_threads: int | None = None,
        n_batch: int = 512,
        flash_attn: bool | None = None,
        min_reuse: int = 8,
    ) -> None:
        import llama_cpp as lc
        from llama_cpp import _internals

        _quiet_llama(lc)
        self._lc = lc
        self.path = Path(model_path)
        self.n_ctx = n_ctx
        self.max_sequences = max_sequences
        self.cache_slots = cache_slots
        self.kv_cells = max(n_ctx, kv_cells or n_ctx * min(4, max_sequences))
        self.n_batch = n_batch
        self.min_reuse = min_reuse
        self.n_threads = n_threads or default_threads()
        lc.llama_backend_init()
        mp = lc.llama_model_default_params()
        try:
            self.model = _internals.LlamaModel(path_model=str(self.path), params=mp, verbose=False)
        except Exception as exc:
            raise BackendError(f"could not load model {self.path}: {exc}") from exc
        self.vocab = lc.llama_model_get_vocab(self.model.model)
        self.n_vocab = self.model.n_vocab()
        cp = lc.llama_context_default_params()
        cp.n_ctx = self.kv_cells
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        cp.n_seq_max = max_sequences + cache_slots
        cp.kv_unified = True  # one pool of cells: prefixes are shared (seq_cp) instead of copied
        cp.n_threads = self.n_threads
        cp.n_threads_batch = self.n_threads
        # flash attention: -1 auto, 0 off, 1 on
        cp.flash_attn_type = -1 if flash_attn is None else int(bool(flash_attn))
        ctx = lc.llama_init_from_model(self.model.model, cp)
        if not ctx:
            self.model.close()
            raise BackendError(f"could not create a llama.cpp context for {self.path} ({self.kv_cells} cells)")
        self.ctx = ctx
        self.mem = lc.llama_get_memory(ctx)
        self.batch = lc.llama_batch_init(n_batch, 0, max_sequences + cache_slots)
        self.metadata = self.model.metadata()
        self._pieces: dict[int, bytes] = {}
        self._lse_buf = np.empty(self.n_vocab, dtype=np.float32)
        self._cond = threading.Condition()
        self._incoming: deque[_Group] = deque()
        self._waiting: deque[_Group] = deque()
        self._seqs: list[_Seq] = []
        self._jobs: list[_Job] = []
        self._free_slots = list(range(max_sequences))
        self._cache: OrderedDict[int, tuple[int, ...]] = OrderedDict()  # cache slot -> prompt tokens (LRU)
        self._free_cache = list(range(max_sequences, max_sequences + cache_slots))
        self._reserved = 0
        self._resumes: deque[tuple[_Seq, str, bool]] = deque()
        #: mailboxes that received events this step: flushed once per step (one wake-up per loop, not per token)
        self.dirty: set = set()
        self._closed = False
        self.steps = 0
        self.tokens_decoded = 0
        self._thread = threading.Thread(target=self._run, name=f"ponder-engine-{self.path.stem}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ any thread
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        """Tokens of ``text`` (reads only the vocabulary: safe from any thread)."""
        return self.model.tokenize(text.encode("utf-8", errors="replace"), add_bos, special)

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (special tokens rendered as their text)."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = self._lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        out = buf.raw[:max(0, n)]
        self._pieces[token] = out
        return out

    def token_id(self, text: str) -> int | None:
        ids = self.model.tokenize(text.encode("utf-8"), False, False)
        return ids[0] if ids else None

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
            self._incoming.append(_Group(list(prompt), list(members)))
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
                    "kv_cells": self.kv_cells, "kv_reserved": self._reserved, "cached_prompts": len(self._cache)}

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)
        lc = self._lc
        lc.llama_batch_free(self.batch)
        lc.llama_free(self.ctx)
        self.model.close()

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

    def _logsumexp(self, row: np.ndarray) -> float:
        """log(sum(exp(row))) into a reused buffer (no allocation per token)."""
        m = float(row.max())
        buf = self._lse_buf
        np.subtract(row, m, out=buf)
        np.exp(buf, out=buf)
        return m + float(np.log(buf.sum()))

    def _flush_mail(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for box in dirty:
            box.flush()

    def _drop_dead_waiting(self) -> None:
        keep: deque[_Group] = deque()
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
        while self._waiting:
            g = self._waiting[0]
            need_slots = len(g.members)
            if need_slots > self.max_sequences:
                # more samples than slots: admit what fits now, the rest waits as its own group
                head = _Group(g.prompt, g.members[: self.max_sequences], g.t_submit)
                tail = _Group(g.prompt, g.members[self.max_sequences:], g.t_submit)
                self._waiting[0] = head
                self._waiting.insert(1, tail)
                continue
            reserve = len(g.prompt) + sum(m.max_new for m in g.members)
            if len(self._free_slots) < need_slots or not self._fits(reserve):
                return
            self._waiting.popleft()
            self._start_group(g, reserve)

    def _fits(self, reserve: int) -> bool:
        while self._reserved + reserve > self.kv_cells and self._cache:
            self._evict_cache()
        return self._reserved + reserve <= self.kv_cells or (not self._seqs and reserve >= self.kv_cells)

    def _start_group(self, g: _Group, reserve: int) -> None:
        self._reserved += reserve
        state = _GroupState(len(g.prompt), len(g.members), len(g.prompt))
        seqs = []
        donor, common = self._find_donor(g.prompt)
        reuse = min(common, len(g.prompt) - 1) if common >= self.min_reuse else 0
        for m in g.members:
            slot = self._free_slots.pop()
            s = _Seq(m, slot, g.prompt, state)
            self._make_sampler(s)
            if reuse:
                self._lc.llama_memory_seq_cp(self.mem, donor, slot, 0, reuse)
            s.n_eval = reuse
            s.cached = reuse
            seqs.append(s)
            m.post(Admitted(time.perf_counter() - g.t_submit, reuse))
        if reuse and donor in self._cache:
            self._cache.move_to_end(donor)
        self._seqs.extend(seqs)
        self._jobs.append(_Job(g.prompt[reuse:], reuse, seqs))

    def _find_donor(self, prompt: list[int]) -> tuple[int, int]:
        best, best_len = -1, 0
        for slot, toks in self._cache.items():
            n = _common(toks, prompt)
            if n > best_len:
                best, best_len = slot, n
        for s in self._seqs:
            evaluated = (s.prompt + s.cont)[: s.n_eval]
            n = _common(evaluated, prompt)
            if n > best_len:
                best, best_len = s.slot, n
        return best, best_len

    def _make_sampler(self, s: _Seq) -> None:
        lc = self._lc
        r = s.req
        if r.score_ids is not None:
            return
        seed = r.seed if r.seed is not None else random.getrandbits(31)
        s.sampler = self._chain(r, seed, None)
        if r.grammar:
            s.grammar_sampler = self._chain(r, seed + 1, r.grammar)

    def _chain(self, r: SeqRequest, seed: int, grammar: str | None):
        lc = self._lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if grammar:
            g = lc.llama_sampler_init_grammar(self.vocab, grammar.encode("utf-8"), b"root")
            if not g:
                lc.llama_sampler_free(chain)
                raise BackendError("the structured-output grammar could not be compiled")
            lc.llama_sampler_chain_add(chain, g)
        if r.temperature <= 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        else:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(r.top_k))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(r.top_p, 1))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(r.temperature))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    # -- one step ---------------------------------------------------------------
    def _step(self) -> bool:
        lc = self._lc
        b = self.batch
        n = 0
        outputs: list[tuple[_Seq, int]] = []  # (sequence, batch index of its logits)
        now_seqs = [s for s in self._seqs if s.state == "decode" and s.next_token is not None]
        # decoding sequences first: one token each
        for s in now_seqs:
            if self._check_interrupt(s):
                continue
            pos = s.n_eval
            self._add(n, s.next_token, pos, (s.slot,), True)
            s.n_eval += 1
            s.next_token = None
            outputs.append((s, n))
            n += 1
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
        ret = lc.llama_decode(self.ctx, b)
        if ret != 0:
            self._decode_failed(ret, outputs, progress)
            return True
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
        if ret == 1 and self._cache:
            while self._cache:
                self._evict_cache()
            return
        victim = max(self._seqs, key=lambda s: s.t_admit) if self._seqs else None
        if victim is not None:
            self._fail(victim, BackendError(f"llama_decode failed ({ret}): the KV cache is full"))

    def _check_interrupt(self, s: _Seq) -> bool:
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

    def _sample(self, outputs: list[tuple[_Seq, int]]) -> None:
        for s, idx in outputs:
            if s.state == "done":
                continue
            try:
                self._sample_one(s, idx)
            except Exception as exc:  # a controller bug fails its own sequence, never the engine
                log.exception("sequence failed")
                self._fail(s, BackendError(f"generation failed: {type(exc).__name__}: {exc}"))

    def _sample_one(self, s: _Seq, idx: int) -> None:
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
        if r.top_logprobs:
            k = min(r.top_logprobs, self.n_vocab)
            ids = np.argpartition(row, -k)[-k:]
            ids = ids[np.argsort(-row[ids])]
            top = tuple((self.piece(int(t)).decode("utf-8", errors="replace"), float(row[t] - lse)) for t in ids)
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

    def _act(self, s: _Seq, d: Decision, reason: str) -> bool:
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

    def _resume(self, s: _Seq, text: str, answer_now: bool = False) -> None:
        if s.state != "paused":
            return
        s.state = "decode"
        s.paused_since = None
        self._act(s, s.req.controller.tool_result(text, answer_now=answer_now), "stop")

    def _rewrite(self, s: _Seq, d: Decision) -> None:
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
            j = _common(s.cont, full)
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
            self._jobs.append(_Job(feed, keep_eval, [s]))
        else:
            s.state = "decode"

    def _finish(self, s: _Seq, reason: str, scores: dict[int, float] | None = None, *, post: bool = True) -> None:
        if s.state == "done":
            return
        s.state = "done"
        lc = self._lc
        g = s.group
        g.live -= 1
        self._reserved -= s.reserved
        if g.live == 0:
            self._reserved -= g.reserved_prompt
            self._maybe_cache(s)
        lc.llama_memory_seq_rm(self.mem, s.slot, -1, -1)
        for smp in (s.sampler, s.grammar_sampler):
            if smp is not None:
                lc.llama_sampler_free(smp)
        s.sampler = s.grammar_sampler = None
        self._seqs.remove(s)
        self._free_slots.append(s.slot)
        if post:
            s.req.post(Done(s.generated, len(s.prompt), s.cached, reason, scores, s.injected))

    def _fail(self, s: _Seq, err: BaseException) -> None:
        if s.state == "done":
            return
        self._finish(s, "error", post=False)
        s.req.post(Failed(err))

    def _maybe_cache(self, s: _Seq) -> None:
        """Keep a finished prompt's KV in a spare slot (LRU), so the next request that starts alike skips it."""
        if not self.cache_slots or s.n_eval < max(self.min_reuse, 16):
            return
        n = min(len(s.prompt), s.n_eval)
        toks = tuple(s.prompt[:n])
        for slot, have in self._cache.items():
            if have[:n] == toks:
                self._cache.move_to_end(slot)
                return
        if self._reserved + n > self.kv_cells:
            return
        if not self._free_cache:
            self._evict_cache()
        slot = self._free_cache.pop()
        self._lc.llama_memory_seq_cp(self.mem, s.slot, slot, 0, n)
        self._cache[slot] = toks
        self._reserved += n

    def _evict_cache(self) -> None:
        slot, toks = self._cache.popitem(last=False)
        self._lc.llama_memory_seq_rm(self.mem, slot, -1, -1)
        self._free_cache.append(slot)
        self._reserved -= len(toks)


_LOG_CALLBACK = None


def _quiet_llama(lc) -> None:
    """Route llama.cpp's own log lines to the ``ponder.llama`` logger at debug level (they are noise here)."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return
    llama_log = logging.getLogger("ponder.llama")

    @lc.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level == 4:  # ggml's GGML_LOG_LEVEL_ERROR
            llama_log.warning("%s", text.decode("utf-8", errors="replace").rstrip())
        elif llama_log.isEnabledFor(logging.DEBUG):
            llama_log.debug("%s", text.decode("utf-8", errors="replace").rstrip())

    _LOG_CALLBACK = callback  # keep a reference: llama.cpp holds only the pointer
    lc.llama_log_set(callback, ctypes.c_void_p(0))


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n





def default_threads() -> int:
    """llama.cpp's worker threads spin: leave a core free when there are several, use the one there is otherwise."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n <= 2:
        return n
    return max(1, min(n - 1, 16))
