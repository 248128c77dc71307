"""Run a plan in its own thread and hand its events to the event loop.

The embedded engine is re-entrant only from the thread that holds it, so one
request's whole generation runs in one dedicated thread.  Events cross to
the asyncio side through an ``asyncio.Queue``; the thread always ends with
:data:`END` (after an :class:`WorkerError` if it failed).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass(frozen=True)
class WorkerError:
    error: BaseException


END = object()


def start(loop: asyncio.AbstractEventLoop, produce: Callable[[], Iterator], *, on_exit: Callable[[], None] | None = None) -> asyncio.Queue:
    queue: asyncio.Queue = asyncio.Queue()

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # loop closed (server shutting down)
            pass

    def target() -> None:
        try:
            for item in produce():
                put(item)
        except BaseException as exc:  # handed to the request, never lost
            put(WorkerError(exc))
        finally:
            if on_exit is not None:
                try:
                    loop.call_soon_threadsafe(on_exit)
                except RuntimeError:
                    pass
            put(END)

    threading.Thread(target=target, name="ponder-worker", daemon=True).start()
    return queue
