"""``ponder usage``: what was spent, from the ledger.

Reads the ledger the config names (or ``--ledger``), including rows of
requests that never finished: a request whose process died mid-flight shows
as ``interrupted`` with the tokens it had streamed (write-ahead accounting).
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from datetime import datetime, timezone

import click

from ponder.errors import ConfigError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str | None, now: float | None = None) -> float | None:
    """``24h``, ``7d``, ``30m`` (ago) or an ISO date/time."""
    if value is None:
        return None
    now = time.time() if now is None else now
    m = _DURATION.match(value.strip())
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"--since wants a duration (30m, 24h, 7d) or an ISO date, got {value!r}",
                          param="--since") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def summarize(rows: list[dict], by: str | None) -> list[dict]:
    groups: dict[str, dict] = defaultdict(lambda: {"requests": 0, "input_tokens": 0, "thinking_tokens": 0,
                                                   "answer_tokens": 0, "cost_usd": 0.0, "statuses": defaultdict(int)})
    for r in rows:
        if by == "key":
            k = r.get("key") or "anonymous"
        elif by == "lane":
            k = r.get("lane") or "?"
        elif by == "day":
            k = datetime.fromtimestamp(r.get("started") or 0, tz=timezone.utc).strftime("%Y-%m-%d")
        else:
            k = "all"
        g = groups[k]
        g["requests"] += 1
        g["input_tokens"] += int(r.get("prompt_tokens") or 0) + int(r.get("tool_tokens") or 0)
        g["thinking_tokens"] += int(r.get("thinking_tokens") or 0)
        g["answer_tokens"] += int(r.get("answer_tokens") or 0)
        g["cost_usd"] += float(r.get("cost_usd") or 0.0)
        g["statuses"][r.get("status") or "?"] += 1
    return [{"group": k, **{**v, "statuses": dict(v["statuses"])}} for k, v in sorted(groups.items())]


@click.command("usage")
@click.option("--config", "config_path", default=None, type=click.Path(), help="ponder YAML config (its ledger.url).")
@click.option("--ledger", "ledger", default=None, help="A ledger URL or file (sqlite:///… / jsonl:///… / a path).")
@click.option("--key", default=None, help="Only this API key's requests.")
@click.option("--since", default=None, help="Only requests since a duration ago (30m, 24h, 7d) or an ISO date.")
@click.option("--by", type=click.Choice(["key", "lane", "day"]), default=None, help="Group the totals.")
@click.option("--requests", "show_requests", is_flag=True, help="List the requests themselves.")
@click.option("--export", "export_path", default=None, type=click.Path(), help="Write the rows as JSONL.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def usage_cmd(config_path, ledger, key, since, by, show_requests, export_path, as_json) -> None:
    """Report requests, tokens and dollars from the ledger.

    \b
    ponder usage                        totals from the default ledger (runs/ledger.db)
    ponder usage --by key --since 24h   per API key, last day
    ponder usage --requests --since 1h  every request of the last hour (interrupted ones included)
    """
    from pathlib import Path

    from ponder.config import load_config
    from ponder.ledger import export_jsonl, read_ledger

    url = ledger or load_config(config_path).ledger.url
    if url == "off":
        raise ConfigError("the ledger is off in this config; nothing was recorded", param="--ledger")
    path = url.split(":///", 1)[1] if ":///" in url else url
    if not Path(path).exists():
        raise ConfigError(f"no ledger at {path} (serve with a ledger first, or give --ledger)", param="--ledger")
    rows = read_ledger(url)
    t0 = parse_since(since)
    rows = [r for r in rows if (key is None or r.get("key") == key) and (t0 is None or (r.get("started") or 0) >= t0)]
    if export_path:
        n = export_jsonl(rows, export_path)
        click.echo(f"wrote {n} rows to {export_path}", err=True)
    totals = summarize(rows, by)
    if as_json:
        click.echo(json.dumps({"rows": rows if show_requests else None, "totals": totals}, indent=2, default=str))
        return
    if show_requests:
        click.echo(f"{'started (UTC)':19} {'id':34} {'key':12} {'lane':12} {'status':11} {'input':>7} "
                   f"{'think':>7} {'answer':>7} {'$':>10}")
        for r in rows:
            started = datetime.fromtimestamp(r.get("started") or 0, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            click.echo(f"{started:19} {r['id'][:34]:34} {(r.get('key') or '-')[:12]:12} {(r.get('lane') or '-')[:12]:12} "
                       f"{(r.get('status') or '?')[:11]:11} {int(r.get('prompt_tokens') or 0):>7} "
                       f"{int(r.get('thinking_tokens') or 0):>7} {int(r.get('answer_tokens') or 0):>7} "
                       f"{float(r.get('cost_usd') or 0):>10.6f}")
        click.echo()
    label = by or "all"
    click.echo(f"{label:16} {'requests':>8} {'input':>10} {'thinking':>10} {'answer':>10} {'$':>12}  statuses")
    for g in totals:
        st = ", ".join(f"{k} {v}" for k, v in sorted(g["statuses"].items()))
        click.echo(f"{g['group'][:16]:16} {g['requests']:>8} {g['input_tokens']:>10} {g['thinking_tokens']:>10} "
                   f"{g['answer_tokens']:>10} {g['cost_usd']:>12.6f}  {st}")
