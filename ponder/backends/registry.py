"""Build the backend a lane names."""

from __future__ import annotations

from ponder.backends.base import Backend
from ponder.config import LaneConfig


def build_backend(lane: LaneConfig) -> Backend:
    if lane.backend == "llama_cpp":
        from ponder.backends.llama_cpp import LlamaCppBackend

        return LlamaCppBackend(lane.model, n_ctx=lane.n_ctx, kv_cells=lane.kv_cells, max_sequences=lane.max_sequences,
                               n_threads=lane.n_threads, flash_attn=lane.flash_attn, name=lane.name)
    if lane.backend == "openai":
        from ponder.backends.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend.from_lane(lane)
    raise ValueError(f"unknown backend {lane.backend!r}")  # config validation prevents this
