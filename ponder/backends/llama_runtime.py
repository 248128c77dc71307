"""One llama.cpp model and context, loaded with the settings the engine schedules on.

:class:`LlamaRuntime` loads the GGUF, creates one context whose KV cells
are one unified pool (prefixes are shared with ``seq_cp`` instead of
copied), sizes its threads, and offers what any thread may ask of the
vocabulary (tokenize, token pieces).  The scheduler that drives it is
:class:`ponder.backends.engine.Engine`.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

from ponder.errors import BackendError


class LlamaRuntime:
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
        """Load the model and create the context (no thread is started here)."""
        import llama_cpp as lc
        from llama_cpp import _internals

        quiet_llama(lc)
        self._lc = lc
        self.path = Path(model_path)
        self.n_ctx = n_ctx
        self.max_sequences = max_sequences
        self.cache_slots = cache_slots
        self.kv_cells = max(n_ctx, kv_cells or n_ctx * min(4, max_sequences))
        self.n_batch = n_batch
        self.min_reuse = min_reuse
        self.n_threads, how = (n_threads, "configured") if n_threads else default_threads()
        logging.getLogger("ponder.engine").info("engine %s: %d thread(s) (%s)", self.path.stem, self.n_threads, how)
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
        # decoding places, cached prompts, and as many ids again for sequences paused by a more urgent class
        cp.n_seq_max = 2 * max_sequences + cache_slots
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
        self._pieces: dict[int, bytes] = {}

    # -- what any thread may ask of the vocabulary ---------------------------------------
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

    def free(self) -> None:
        """Free the batch, the context and the model (after the owner thread has stopped)."""
        lc = self._lc
        lc.llama_batch_free(self.batch)
        lc.llama_free(self.ctx)
        self.model.close()


_LOG_CALLBACK = None


def quiet_llama(lc) -> None:
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


def default_threads() -> tuple[int, str]:
    """(threads, why): llama.cpp's workers spin, so a core is left free when there are several; the CPUs
    counted are those the process may use (affinity, cgroup quota), not the machine's cores."""
    from ponder.backends.threads import usable_cpus

    n, how = usable_cpus()
    if n <= 2:
        return n, how
    return max(1, min(n - 1, 16)), how + ", one left free"
