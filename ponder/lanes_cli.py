"""``ponder lanes``: each lane's engine and what it can do, as the gateway would learn it at start-up."""

from __future__ import annotations

import json

import click


@click.command("lanes")
@click.option("--config", "config_path", type=click.Path(), help="A ponder YAML config (default: the built-in lanes).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def lanes_cmd(config_path: str | None, as_json: bool) -> None:
    """List the lanes: backend, model, capabilities (upstreams are probed now) and replicas.

    \b
    Capabilities: text_completion (exact thinking control, beam/DVTS/MCTS, judges), grammar (structured output,
    forced tool calls), response_format (passed through), builtin_tools (tools inside the thinking),
    local_model (a model file in this process).
    """
    from ponder.backends.registry import capabilities, kind_of
    from ponder.config import load_config
    from ponder.service import Ponder

    config = load_config(config_path)
    service = Ponder(config.model_copy(update={"ledger": config.ledger.model_copy(update={"url": "off"})}))
    try:
        service.probe()
        rows = []
        for lane in config.lanes:
            backend = service.cached_backend(lane)
            replicas = getattr(backend, "replicas", None)
            rows.append({"lane": lane.name, "backend": lane.backend,
                         "model": lane.model or lane.upstream_model or "(default)",
                         "engine": type(backend).__name__ if backend is not None else "(built on first use)",
                         "dialect": getattr(getattr(backend, "dialect", None), "name", None),
                         "capabilities": sorted(capabilities(lane)),
                         "replicas": replicas.state() if replicas is not None else None,
                         "labels": list(kind_of(lane).labels(lane))})
    finally:
        service.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.secho(r["lane"], bold=True, nl=False)
        click.echo(f"  {r['backend']} · {r['model']} · {r['engine']}"
                   + (f" ({r['dialect']} raw completions)" if r["dialect"] else ""))
        click.echo(f"    capabilities: {', '.join(r['capabilities']) or '(chat only)'}")
        for rep in r["replicas"] or ():
            click.echo(f"    replica {rep['url']}: {rep['calls']} calls, {rep['errors']} errors"
                       + (" (ejected)" if rep["ejected"] else ""))
