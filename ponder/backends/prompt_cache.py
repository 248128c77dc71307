"""Finished prompts kept in the KV cache, so the next request that starts alike skips their prefill.

The embedded engine has more llama.cpp sequence ids than decode slots; the
spare ones hold the KV of recently finished prompts (LRU).  A new sequence
whose prompt starts like a cached or a live one copies those cells
(``seq_cp``) instead of evaluating them again.  Only the owner thread uses it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable, Sequence


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PromptCache:
    def __init__(self, lc: Any, mem: Any, first_slot: int, n_slots: int, min_reuse: int) -> None:
        self._lc, self._mem = lc, mem
        self.min_reuse = min_reuse
        #: cache slot -> prompt tokens, least recently used first
        self.entries: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        self._free = list(range(first_slot, first_slot + n_slots))
        self.n_slots = n_slots
        #: KV cells the cached prompts hold
        self.cells = 0

    def __len__(self) -> int:
        return len(self.entries)

    def donor(self, prompt: Sequence[int], live: Iterable[Any]) -> tuple[int, int]:
        """(slot, tokens in common) of the cached or live sequence that shares the longest prefix with ``prompt``."""
        best, best_len = -1, 0
        for slot, toks in self.entries.items():
            n = common_prefix(toks, prompt)
            if n > best_len:
                best, best_len = slot, n
        for s in live:
            n = common_prefix((s.prompt + s.cont)[: s.n_eval], prompt)
            if n > best_len:
                best, best_len = s.slot, n
        return best, best_len

    def used(self, slot: int) -> None:
        if slot in self.entries:
            self.entries.move_to_end(slot)

    def keep(self, s: Any, room: int) -> None:
        """Keep a finished sequence's prompt (``room``: KV cells free for it)."""
        if not self.n_slots or s.n_eval < max(self.min_reuse, 16):
            return
        n = min(len(s.prompt), s.n_eval)
        toks = tuple(s.prompt[:n])
        for slot, have in self.entries.items():
            if have[:n] == toks:
                self.entries.move_to_end(slot)
                return
        if n > room:
            return
        if not self._free:
            self.evict()
        slot = self._free.pop()
        self._lc.llama_memory_seq_cp(self._mem, s.slot, slot, 0, n)
        self.entries[slot] = toks
        self.cells += n

    def evict(self) -> None:
        """Drop the least recently used prompt and free its cells."""
        slot, toks = self.entries.popitem(last=False)
        self._lc.llama_memory_seq_rm(self._mem, slot, -1, -1)
        self._free.append(slot)
        self.cells -= len(toks)
