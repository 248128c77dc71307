"""An append-only JSONL ledger: one line per request, what it cost.

Written for every request that reached an engine, cancelled ones included,
so nothing already spent goes unaccounted.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path


class Ledger:
    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, entry: dict) -> None:
        if self.path is None:
            return
        line = json.dumps({"ts": round(time.time(), 3), **entry}, sort_keys=True)
        with self._lock, self.path.open("a") as fh:
            fh.write(line + "\n")
