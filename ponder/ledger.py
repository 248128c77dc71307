"""The ledger: one durable row per request — who, which lane, how many tokens, what it cost.

Accounting is write-ahead: a request's row is opened at admission
(``status: running``), its spend is flushed while it runs (at least every
``ledger.flush_interval_s``), and it is completed when the request ends.
After a crash (``kill -9``), the rows a dead process left running are shown
as ``interrupted`` with the tokens they had streamed.

* ``sqlite:///PATH`` (default ``runs/ledger.db``): WAL mode, written by one
  writer thread that batches commits, so the request path never waits on
  the disk; several gateway processes may share the file.
* ``jsonl:///PATH``: an append-only log of the same events.
* ``off``: nothing is written.

``ponder usage`` reads it; :func:`export_jsonl` writes a JSONL export.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from ponder.config import LedgerConfig
from ponder.types import Usage

_COLUMNS = ("prompt_tokens", "cached_prompt_tokens", "thinking_tokens", "answer_tokens", "tool_tokens")


class Ledger:
    """The interface (and the ``off`` ledger)."""

    def open(self, row: dict) -> None:
        pass

    def progress(self, request_id: str, usage: Usage, cost_usd: float) -> None:
        pass

    def complete(self, row: dict) -> None:
        pass

    def flush(self, timeout: float = 5.0) -> None:
        pass

    def close(self) -> None:
        pass

    def rows(self, *, key: str | None = None, since: float | None = None) -> list[dict]:
        return []


def open_ledger(cfg: LedgerConfig) -> Ledger:
    url = cfg.url
    if url == "off":
        return Ledger()
    if url.startswith("sqlite:///"):
        return SqliteLedger(url.removeprefix("sqlite:///"))
    return JsonlLedger(url.removeprefix("jsonl:///"))


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SqliteLedger(Ledger):
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS requests (
        id TEXT PRIMARY KEY,
        started REAL, ended REAL, updated REAL,
        key TEXT, lane TEXT, model TEXT, strategy TEXT,
        status TEXT, http_status INTEGER,
        prompt_tokens INTEGER DEFAULT 0, cached_prompt_tokens INTEGER DEFAULT 0,
        thinking_tokens INTEGER DEFAULT 0, answer_tokens INTEGER DEFAULT 0, tool_tokens INTEGER DEFAULT 0,
        cost_usd REAL DEFAULT 0, pid INTEGER, data TEXT, flags TEXT
    );
    CREATE INDEX IF NOT EXISTS requests_started ON requests(started);
    CREATE INDEX IF NOT EXISTS requests_key ON requests(key);
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        conn.executescript(self.SCHEMA)
        if "flags" not in {r[1] for r in conn.execute("PRAGMA table_info(requests)")}:
            conn.execute("ALTER TABLE requests ADD COLUMN flags TEXT")  # a ledger written before answer flags
        conn.commit()
        conn.close()
        self._q: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._writer, name="ponder-ledger", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    # -- the request path: enqueue only --------------------------------------------
    def open(self, row: dict) -> None:
        self._q.put(("open", dict(row, pid=os.getpid(), now=time.time())))

    def progress(self, request_id: str, usage: Usage, cost_usd: float) -> None:
        self._q.put(("progress", {"id": request_id, "usage": usage.to_dict(), "cost_usd": cost_usd,
                                  "now": time.time()}))

    def complete(self, row: dict) -> None:
        self._q.put(("complete", dict(row, now=time.time())))

    def flush(self, timeout: float = 5.0) -> None:
        done = threading.Event()
        self._q.put(("flush", done))
        done.wait(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(("stop", None))
        self._thread.join(timeout=10)

    # -- the writer thread ------------------------------------------------------------
    def _writer(self) -> None:
        conn = self._connect()
        while True:
            op, arg = self._q.get()
            batch = [(op, arg)]
            # take whatever else is queued: one commit for all of it
            deadline = time.monotonic() + 0.02
            while time.monotonic() < deadline:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            stop = False
            flushes = []
            try:
                for o, a in batch:
                    if o == "stop":
                        stop = True
                    elif o == "flush":
                        flushes.append(a)
                    else:
                        getattr(self, "_w_" + o)(conn, a)
                conn.commit()
            except sqlite3.Error as exc:  # a full disk or a locked file: logged, never raised into a request
                import logging

                logging.getLogger("ponder.ledger").error("ledger write failed: %s", exc)
                try:
                    conn.rollback()
                except sqlite3.Error:
                    pass
            for f in flushes:
                f.set()
            if stop:
                conn.close()
                return

    def _w_open(self, conn: sqlite3.Connection, r: dict) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO requests (id, started, updated, key, lane, model, strategy, status, pid, data) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (r["id"], r.get("started", r["now"]), r["now"], r.get("key"), r.get("lane"), r.get("model"),
             r.get("strategy"), r.get("status", "running"), r["pid"], "{}"))

    def _w_progress(self, conn: sqlite3.Connection, r: dict) -> None:
        u = r["usage"]
        conn.execute(
            "UPDATE requests SET prompt_tokens=?, cached_prompt_tokens=?, thinking_tokens=?, answer_tokens=?, "
            "tool_tokens=?, cost_usd=?, updated=? WHERE id=? AND status='running'",
            (*(int(u.get(c, 0)) for c in _COLUMNS), r["cost_usd"], r["now"], r["id"]))

    def _w_complete(self, conn: sqlite3.Connection, r: dict) -> None:
        u = r.get("usage") or {}
        data = {k: r.get(k) for k in ("timings", "thinking", "attempts", "error", "samples", "guard")
                if r.get(k) is not None}
        conn.execute(
            "INSERT INTO requests (id, started, ended, updated, key, lane, model, strategy, status, http_status, "
            "prompt_tokens, cached_prompt_tokens, thinking_tokens, answer_tokens, tool_tokens, cost_usd, pid, data, "
            "flags) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET ended=excluded.ended, "
            "updated=excluded.updated, lane=excluded.lane, model=excluded.model, status=excluded.status, "
            "http_status=excluded.http_status, prompt_tokens=excluded.prompt_tokens, "
            "cached_prompt_tokens=excluded.cached_prompt_tokens, thinking_tokens=excluded.thinking_tokens, "
            "answer_tokens=excluded.answer_tokens, tool_tokens=excluded.tool_tokens, cost_usd=excluded.cost_usd, "
            "data=excluded.data, flags=excluded.flags",
            (r["id"], r.get("started", r["now"]), r["now"], r["now"], r.get("key"), r.get("lane"), r.get("model"),
             r.get("strategy"), r.get("status"), r.get("http_status"), *(int(u.get(c, 0)) for c in _COLUMNS),
             float(r.get("cost_usd") or 0.0), os.getpid(), json.dumps(data), ",".join(r.get("flags") or []) or None))

    # -- reading ----------------------------------------------------------------------
    def rows(self, *, key: str | None = None, since: float | None = None) -> list[dict]:
        return read_sqlite(self.path, key=key, since=since)


def read_sqlite(path: str | os.PathLike, *, key: str | None = None, since: float | None = None) -> list[dict]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    q = "SELECT * FROM requests WHERE 1=1"
    args: list[Any] = []
    if key is not None:
        q += " AND key = ?"
        args.append(key)
    if since is not None:
        q += " AND started >= ?"
        args.append(since)
    q += " ORDER BY started"
    out = []
    try:
        for r in conn.execute(q, args):
            d = dict(r)
            d["data"] = json.loads(d.get("data") or "{}")
            if d["status"] == "running" and not _alive(d.get("pid")):
                d["status"] = "interrupted"
            out.append(d)
    finally:
        conn.close()
    return out


class JsonlLedger(Ledger):
    """Append-only JSON lines: ``open``, ``progress`` and ``complete`` events, folded by id when read."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _write(self, obj: dict) -> None:
        line = json.dumps(obj, sort_keys=True)
        with self._lock, self.path.open("a") as fh:
            fh.write(line + "\n")

    def open(self, row: dict) -> None:
        self._write({"event": "open", "ts": round(time.time(), 3), "pid": os.getpid(), **row})

    def progress(self, request_id: str, usage: Usage, cost_usd: float) -> None:
        self._write({"event": "progress", "ts": round(time.time(), 3), "id": request_id, "usage": usage.to_dict(),
                     "cost_usd": cost_usd})

    def complete(self, row: dict) -> None:
        self._write({"event": "complete", "ts": round(time.time(), 3), **row})

    def rows(self, *, key: str | None = None, since: float | None = None) -> list[dict]:
        return [r for r in read_jsonl(self.path) if (key is None or r.get("key") == key)
                and (since is None or (r.get("started") or 0) >= since)]


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    rows: dict[str, dict] = {}
    p = Path(path)
    if not p.exists():
        return []
    for line in p.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue  # a torn last line
        rid = e.get("id")
        if not rid:
            continue
        r = rows.setdefault(rid, {"id": rid})
        ev = e.pop("event", "complete")
        usage = e.pop("usage", None)
        if usage:
            r.update({c: int(usage.get(c, 0)) for c in _COLUMNS})
        if ev == "open":
            r.update(key=e.get("key"), lane=e.get("lane"), model=e.get("model"), strategy=e.get("strategy"),
                     started=e.get("started", e.get("ts")), status="running", pid=e.get("pid"))
        elif ev == "progress":
            r["cost_usd"] = e.get("cost_usd", 0.0)
        else:
            r.update({k: v for k, v in e.items() if k not in ("ts",)})
            r["ended"] = e.get("ts")
    out = list(rows.values())
    for r in out:
        if r.get("status") == "running" and not _alive(r.get("pid")):
            r["status"] = "interrupted"
    return sorted(out, key=lambda r: r.get("started") or 0)


def read_ledger(url_or_path: str) -> list[dict]:
    """Rows of a ledger given its URL (or a plain path: .jsonl or sqlite)."""
    if url_or_path.startswith("sqlite:///"):
        return read_sqlite(url_or_path.removeprefix("sqlite:///"))
    if url_or_path.startswith("jsonl:///"):
        return read_jsonl(url_or_path.removeprefix("jsonl:///"))
    if url_or_path.endswith(".jsonl"):
        return read_jsonl(url_or_path)
    return read_sqlite(url_or_path)


def export_jsonl(rows: Iterable[dict], path: str | os.PathLike) -> int:
    n = 0
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r, sort_keys=True, default=str) + "\n")
            n += 1
    return n
