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
  more urgent group waits.  KV cells are never overcommitted: a group that
  does not fit the cells waits, preemption or not (saving a paused sequence
  out of the cache is not built).  Deadlines keep running while paused;
  thinking budgets count tokens and are untouched.
"""

from __future__ import annotations

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

    def _next_index(self) -> int:
        best, best_i = None, 0
        for i, g in enumerate(self._waiting):
            m = g.members[0]
            start = max(self._vtime, self._vfinish.get(m.key, 0.0))
            rank = (m.priority, m.deadline.at if m.deadline is not None else float("inf"), start, g.t_submit)
            if best is None or rank < best:
                best, best_i = rank, i
        return best_i

    def _charge(self, g: Any) -> None:
        """The admitted group's samples count against its key's share."""
        m = g.members[0]
        start = max(self._vtime, self._vfinish.get(m.key, 0.0))
        self._vfinish[m.key] = start + len(g.members) / max(m.weight, 1e-6)
        self._vtime = start

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
        victims = sorted((s for s in running if s.req.priority > prio and s.state == "decode"),
                         key=lambda s: (-s.req.priority, -s.t_admit))[:over]
        if len(victims) < over:
            return False
        now = time.perf_counter()
        for s in victims:
            s.preempted_at = now
            self.preemptions += 1
        return True

    def _resume_preempted(self) -> None:
        """Paused sequences go back to decoding, most urgent first, while places are free and nothing more
        urgent waits.  While an interactive sequence decodes, less urgent ones stay paused: it decodes alone
        (as fast as on an idle engine), and a short request costs the long ones only its own few steps."""
        live = [s for s in self._seqs if s.state != "done"]
        if any(s.req.priority == 0 and s.preempted_at is None for s in live) and getattr(self, "preempt", True):
            now = time.perf_counter()
            for s in live:
                if s.req.priority > 0 and s.preempted_at is None and s.state == "decode":
                    s.preempted_at = now
                    self.preemptions += 1
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
            s.preempted_s += now - s.preempted_at
            s.preempted_at = None
            self.resumed += 1
            free -= 1
