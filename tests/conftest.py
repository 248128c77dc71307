import socket

import pytest

from ponder.backends.scripted import ScriptedBackend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_backend():
    """The real embedded engine with the default tiny model (loaded once)."""
    from ponder.backends.llama_cpp import LlamaCppBackend

    b = LlamaCppBackend(n_ctx=2048)
    yield b
    b.close()


@pytest.fixture
def scripted():
    return ScriptedBackend


@pytest.fixture(scope="module")
def upstream():
    """A misbehaving-on-demand local upstream (tests/faulty.py), one per test module."""
    from faulty import Faulty

    f = Faulty(delay=0.05)
    yield f
    f.close()
