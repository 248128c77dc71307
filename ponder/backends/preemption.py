"""Admission by class and fair share, and preemption between steps: the engine's scheduling decisions.

A mixin of :class:`ponder.backends.engine.Engine` (owner thread only).

* **Order.** The waiting group admitted next is the most urgent class
  (0 interactive, 1 standard, 2 batch), then the earliest deadline, then the
  key furthest behind its weighted share (start-time fair queuing: a group
  of n samples counts n), then arrival.
* **Preemption.** ``max_sequences`` sequences decode at once.  When a group
  of a more urgent class waits and they are all taken, the least urgent
  decoding sequences (the most recently admitted first) are paused at the
  step boundary: they stay in the KV cache, on sequence ids beyond the
  decoding ones, and keep their next token and sampler, so when they resume
  nothing is lost or changed (greedy output identical to an unpaused run).
  They resume, most urgent first, as soon as a decoding place is free and no
  more urgent group waits.  Deadlines keep running while paused; thinking
  budgets count tokens and are untouched.
* **Saving out of the KV cache.** KV cells are never overcommitted.  When a
  more urgent group does not fit the free cells, whole groups of less urgent
  sequences (every live sample of a request, at a step boundary) are paused
  and their cells saved to host memory (``llama_state_seq_get_data``) and
  removed, least urgent and most recent first; they are restored
  (``llama_state_seq_set_data``) when their cells fit again, before they
  resume.  A restored sample holds its own copy of the prompt's cells.
* **Fair share.** Within a class, a key holding more than its weighted
  share of the decoding places (``max_sequences`` x its weight over the
  weights of the keys decoding or waiting in that class) gives back its most
  recently admitted sequences, paused the same way, when another key within
  its share waits: one key's n=16 uses every place while alone and never
  keeps another key's request waiting for its samples to finish.
* **Interrupts while paused.** A paused sequence's cancellation or deadline
  is acted on at the next step boundary, not when it would have resumed: a
  cancelled one ends at once (its places and cells freed); one whose
  deadline cuts its thinking resumes at once, beyond ``max_sequences`` if it
  must, and is never paused again (its answer has ``answer_grace_s``).
"""

from __future__ import annotations

import ctypes
import time
from typing import Any


class Scheduling:
    """Order of admission, and pausing/resuming sequences for a more urgent class."""

    _waiting: Any
    _seqs: list
    _free_slots: list
    max_sequences: int

    def _sched_init(self) -> None:
        #: fair share between keys: the virtual time, and each key's last finish tag
        self._vtime = 0.0
        self._vfinish: dict[str, float] = {}
        self.preemptions = 0
        self.resumed = 0
        #: sequences saved out of the KV cache, and restored into it (since start)
        self.saved = 0
        self.restored = 0

    def _next_index(self) -> int:
        best, best_i = None, 0
        for i, g in enumerate(self._waiting):
            m = g.members[0]
            # ``fair = False`` (benches only): first come, first served within a class
            start = self._start_tag(m.key) if getattr(self, "fair", True) else 0.0
            rank = (m.priority, m.deadline.at if m.deadline is not None else float("inf"), start, g.t_submit)
            if best is None or rank < best:
                best, best_i = rank, i
        return best_i

    def _start_tag(self, key: str) -> float:
        """Start-time fair queuing: a key's next group starts at the virtual time or its last finish tag."""
        return max(self._vtime, self._vfinish.get(key, 0.0))

    def _charge(self, g: Any) -> None:
        """The admitted group's samples count against its key's share."""
        m = g.members[0]
        start = self._start_tag(m.key)
        self._vfinish[m.key] = start + len(g.members) / max(m.weight, 1e-6)
        self._vtime = start

    def _over_share(self, g: Any, running: list, want: int) -> list:
        """Up to ``want`` sequences of ``g``'s class that other keys hold beyond their weighted share of the
        places, when ``g``'s key is within its own: a key's n=16 fills the places while it is alone, and gives
        back its excess at the next step when another key's request arrives."""
        m = g.members[0]
        peers = [s for s in running if s.req.priority == m.priority]
        weights = {s.req.key: s.req.weight for s in peers}
        weights[m.key] = m.weight
        total = sum(max(w, 1e-6) for w in weights.values())
        share = {k: self.max_sequences * max(w, 1e-6) / total for k, w in weights.items()}
        held: dict[str, int] = {}
        for s in peers:
            held[s.req.key] = held.get(s.req.key, 0) + 1
        if held.get(m.key, 0) + len(g.members) > share[m.key]:
            return []  # the waiting key already has its share: it waits its turn
        victims = []
        for s in sorted(peers, key=lambda s: -s.t_admit):
            k = s.req.key
            if len(victims) < want and k != m.key and s.state == "decode" and not s.must_run \
                    and held[k] - 1 >= share[k]:
                victims.append(s)
                held[k] -= 1
        return victims

    def _interrupt_paused(self) -> None:
        """Act on paused sequences' cancellations and deadlines now: end them, or resume them for their answer."""
        now = time.perf_counter()
        for s in [s for s in self._seqs if s.preempted_at is not None and s.state != "done"]:
            r = s.req
            if not (r.cancel.cancelled or (r.deadline is not None and r.deadline.passed)):
                continue
            if s.saved is not None and (r.cancel.cancelled or not self._restore(s)):
                # cancelled, or no cells to answer in: it ends with what it has, never restored
                self._finish(s, "cancelled" if r.cancel.cancelled else "deadline")
                continue
            self._unpause(s, now)
            s.must_run = True
            self._check_interrupt(s)

    def _pause(self, s: Any, now: float) -> None:
        s.preempted_at = now
        self.preemptions += 1

    def _unpause(self, s: Any, now: float) -> None:
        s.unpause(now)
        self.resumed += 1

    def _decoding(self) -> list:
        return [s for s in self._seqs if s.preempted_at is None and s.state != "done"]

    def _make_room(self, g: Any) -> bool:
        """Room for ``g`` among the decoding places, pausing less urgent sequences if its class allows."""
        need = len(g.members)
        if len(self._free_slots) < need:
            return False
        running = self._decoding()
        over = len(running) + need - self.max_sequences
        if over <= 0:
            return True
        if not getattr(self, "preempt", True):
            return False
        prio = g.members[0].priority
        victims = sorted((s for s in running if s.req.priority > prio and s.state == "decode" and not s.must_run),
                         key=lambda s: (-s.req.priority, -s.t_admit))[:over]
        if len(victims) < over and getattr(self, "fair", True):
            victims += self._over_share(g, running, over - len(victims))
        if len(victims) < over:
            return False
        now = time.perf_counter()
        for s in victims:
            self._pause(s, now)
        return True

    def _resume_preempted(self) -> None:
        """Paused sequences go back to decoding, most urgent first, while places are free and nothing more
        urgent waits.  While an interactive sequence decodes, less urgent ones stay paused: it decodes alone
        (as fast as on an idle engine), and a short request costs the long ones only its own few steps."""
        live = [s for s in self._seqs if s.state != "done"]
        if any(s.req.priority == 0 and s.preempted_at is None for s in live) and getattr(self, "preempt", True):
            now = time.perf_counter()
            for s in live:
                if s.req.priority > 0 and s.preempted_at is None and s.state == "decode" and not s.must_run:
                    self._pause(s, now)
            return
        paused = sorted((s for s in live if s.preempted_at is not None), key=lambda s: (s.req.priority, s.t_admit))
        if not paused:
            return
        free = self.max_sequences - len(self._decoding())
        head = min((g.members[0].priority for g in self._waiting), default=None)
        now = time.perf_counter()
        for s in paused:
            if free <= 0 or (head is not None and head < s.req.priority):
                break
            if s.saved is not None and not self._restore(s):
                break
            self._unpause(s, now)
            free -= 1

    # -- saving out of the KV cache ------------------------------------------------
    def _swap_room(self, g: Any, reserve: int) -> bool:
        """Cells for ``g`` (``reserve`` of them) by saving whole groups of less urgent sequences out of the KV."""
        short = self._cells_in_use() + reserve - self.kv_cells
        if short <= 0:
            return True
        if not getattr(self, "preempt", True):
            return False
        prio = g.members[0].priority
        groups: dict[int, list] = {}
        for s in self._seqs:
            groups.setdefault(id(s.group), []).append(s)
        candidates = []
        for members in groups.values():
            if len(members) != members[0].group.live:
                continue
            if all(s.req.priority > prio and s.state == "decode" and s.next_token is not None and not s.must_run
                   and s.saved is None for s in members):
                freed = sum(s.reserved for s in members) + members[0].group.reserved_prompt
                rank = (-members[0].req.priority, -max(s.t_admit for s in members))
                candidates.append((rank, freed, members))
        candidates.sort(key=lambda c: c[0])
        chosen, freed = [], 0
        for _, cells, members in candidates:
            if freed >= short:
                break
            chosen.append(members)
            freed += cells
        if freed < short:
            return False
        for members in chosen:
            for s in members:
                self._save(s)
        return True

    def _save(self, s: Any) -> None:
        """Pause ``s`` with its cells copied to host memory and removed from the KV cache."""
        lc = self._lc
        size = lc.llama_state_seq_get_size(self.ctx, s.slot)
        buf = (ctypes.c_uint8 * size)()
        if lc.llama_state_seq_get_data(self.ctx, buf, size, s.slot) != size:
            raise RuntimeError(f"llama_state_seq_get_data wrote less than the {size} bytes of sequence {s.slot}")
        s.saved = buf
        lc.llama_memory_seq_rm(self.mem, s.slot, -1, -1)
        g = s.group
        self._reserved -= s.reserved + g.reserved_prompt
        g.reserved_prompt = 0
        # restored alone, it holds its own prompt cells besides its continuation
        s.reserved, s.saved_reserve = 0, len(s.prompt) + s.req.max_new
        if s.preempted_at is None:
            self._pause(s, time.perf_counter())
        self.saved += 1

    def _restore(self, s: Any) -> bool:
        """Put a saved sequence's cells back when they fit; False when they do not (yet)."""
        if not self._fits(s.saved_reserve):
            return False
        size = len(s.saved)
        if self._lc.llama_state_seq_set_data(self.ctx, s.saved, size, s.slot) != size:
            raise RuntimeError(f"llama_state_seq_set_data could not restore sequence {s.slot}")
        s.saved = None
        s.reserved, s.saved_reserve = s.saved_reserve, 0
        self._reserved += s.reserved
        self.restored += 1
        return True
