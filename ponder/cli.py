"""The ``ponder`` command line.

Every command turns user errors into one line on stderr and exit code 2;
stack traces are reserved for bugs.  Subcommands are mounted by name from
:data:`COMMANDS` and imported only when used, so no command module imports
another and ``ponder --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
import sys

import click

from ponder import __version__
from ponder.errors import PonderError

#: request fields -> the CLI flag that sets them, for error messages
FLAG_FOR_PARAM = {
    "reasoning_effort": "--effort",
    "effort": "--effort",
    "max_thinking_tokens": "--max-thinking-tokens",
    "min_thinking_tokens": "--min-thinking-tokens",
    "model": "--model",
    "messages": "QUESTION",
    "temperature": "--temperature",
    "max_completion_tokens": "--max-answer-tokens",
    "max_tokens": "--max-answer-tokens",
    "seed": "--seed",
    "ponder.strategy": "--strategy",
    "ponder.params": "--param",
    "ponder.deadline_s": "--deadline",
    "--model": "--model",
}

#: subcommand -> "module:attribute", imported on use
COMMANDS = {
    "plan": "ponder.capacity.cli:plan_cmd",
    "bench": "ponder.lab.cli:bench_cmd",
    "tune": "ponder.lab.tuning.cli:tune_cmd",
    "usage": "ponder.usage:usage_cmd",
    "keys": "ponder.tenancy.cli:keys_cmd",
    "distill": "ponder.distill:distill_cmd",
    "lanes": "ponder.lanes_cli:lanes_cmd",
}


class PonderGroup(click.Group):
    """Catches ponder's typed errors (one line, exit 2, no trace) and mounts subcommands lazily."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *COMMANDS])

    def get_command(self, ctx: click.Context, name: str):
        if name in COMMANDS:
            module, _, attr = COMMANDS[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PonderError as exc:
            report_error(exc)
            ctx.exit(2)


def report_error(exc: PonderError) -> None:
    flag = FLAG_FOR_PARAM.get(exc.param or "", exc.param)
    if exc.param and exc.param.startswith("ponder.params."):
        flag = f"--param {exc.param.removeprefix('ponder.params.')}"
    message = exc.message
    if exc.param and message.startswith(f"{exc.param}: "):
        message = message[len(exc.param) + 2:]
    prefix = f"{flag}: " if flag and not message.startswith(str(flag)) else ""
    click.echo(f"error: {prefix}{message}", err=True)


@click.group(cls=PonderGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ponder")
def main() -> None:
    """ponder: decide how much a model thinks, enforce it, account for it.

    \b
    ponder ask         answer one question under a thinking budget
    ponder serve       run the OpenAI-compatible gateway (make serve)
    ponder strategies  list the test-time strategies and their parameters
    ponder plan        size and price a self-hosted reasoning deployment
    ponder bench       measure accuracy against compute (the lab)
    ponder tune        write a routing policy from lab runs
    ponder usage       report requests, tokens and dollars from the ledger
    ponder keys        make API keys for the gateway
    ponder distill     rejection-sample verified reasoning traces into an SFT dataset
    """


def load_config_for(config_path: str | None, model: str | None):
    """The config, with ``--model`` (a model name or GGUF path) replacing the default model of the embedded lanes."""
    from ponder.backends.registry import lane_has
    from ponder.config import load_config

    config = load_config(config_path)
    if model and model not in {lane.name for lane in config.lanes}:
        lanes = [ln.model_copy(update={"model": model}) if lane_has(ln, "local_model") and ln.model is None else ln
                 for ln in config.lanes]
        if lanes == list(config.lanes):
            lane = config.lane(None)
            lanes = [ln.model_copy(update={"model": model}) if ln.name == lane.name else ln for ln in config.lanes]
        config = config.model_copy(update={"lanes": lanes})
        model = None
    return config, model


def load_policy_for(config, path: str | None):
    """The routing policy: --policy, else the config's ``policy`` key; 'off' disables routing."""
    from ponder.routing.policy import load_policy

    choice = path or config.policy
    if choice == "off":
        return None
    try:
        return load_policy(None if choice == "default" else choice)
    except PonderError as exc:
        exc.param = "--policy" if path else "policy"
        raise


@main.command()
@click.argument("question")
@click.option("--effort", default=None, help="Thinking effort tier: none, minimal, low, medium, high, xhigh, max.")
@click.option("--max-thinking-tokens", type=int, default=None, help="Hard cap on thinking tokens; overrides --effort.")
@click.option("--min-thinking-tokens", type=int, default=None, help="Keep the model thinking at least this long.")
@click.option("--show-thinking", is_flag=True, help="Print the thinking before the answer (hidden by default).")
@click.option("--model", default=None, help="A lane name from the config, a known model name, or a GGUF path.")
@click.option("--json", "as_json", is_flag=True, help="Print the OpenAI chat.completion object the gateway returns.")
@click.option("--system", default=None, help="A system prompt.")
@click.option("--temperature", type=float, default=None, help="Sampling temperature (default 0.6).")
@click.option("--seed", type=int, default=None, help="Sampling seed, for reproducible answers.")
@click.option("--max-answer-tokens", type=int, default=None, help="Tokens reserved for the answer (default: the lane's).")
@click.option("--strategy", default=None, help="Test-time strategy (list them with `ponder strategies`).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A strategy parameter; repeatable.")
@click.option("--deadline", type=float, default=None, metavar="SECONDS",
              help="Answer within this many seconds (thinking is cut, strategies stop drawing).")
@click.option("--config", "config_path", default=None, type=click.Path(), help="ponder YAML config.")
@click.option("--policy", "policy_path", default=None,
              help="Routing policy YAML (from `ponder tune`), 'default' or 'off'; default: the config's.")
def ask(question, effort, max_thinking_tokens, min_thinking_tokens, show_thinking, model, as_json, system,
        temperature, seed, max_answer_tokens, strategy, params, deadline, config_path, policy_path) -> None:
    """Answer QUESTION under a thinking budget.

    The thinking is hidden unless --show-thinking is given (the gateway's
    default visibility is set by server.default_visibility).

    \b
    Examples:
      ponder ask "What is 17 * 23?" --effort low
      ponder ask "What is 17 * 23?" --max-thinking-tokens 32 --show-thinking
      ponder ask "What is 17 * 23?" --strategy self-consistency --param n=5
      ponder ask "Hi" --effort none --json
    """
    from ponder.api.request import parse_request

    if not question.strip():
        raise click.UsageError("QUESTION is empty")
    config, lane = load_config_for(config_path, model)
    config = config.model_copy(update={"ledger": config.ledger.model_copy(update={"url": "off"})}) \
        if config_path is None else config
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    body: dict = {"messages": messages, "thinking": {"visibility": "visible" if show_thinking else "hidden"}}
    for key, value in (("model", lane), ("reasoning_effort", effort), ("max_thinking_tokens", max_thinking_tokens),
                       ("min_thinking_tokens", min_thinking_tokens), ("temperature", temperature), ("seed", seed),
                       ("max_completion_tokens", max_answer_tokens)):
        if value is not None:
            body[key] = value
    ponder_obj: dict = {}
    if strategy or params:
        ponder_obj.update(strategy=strategy, params=parse_params(params))
    if deadline is not None:
        ponder_obj["deadline_s"] = deadline
    if ponder_obj:
        body["ponder"] = ponder_obj
    req = parse_request(body).to_ponder()
    from ponder.service import Ponder

    service = Ponder(config, policy=load_policy_for(config, policy_path))
    try:
        code = asyncio.run(_ask(service, req, show_thinking, as_json))
    finally:
        service.close()
    if code:
        sys.exit(code)


async def _ask(service, req, show_thinking: bool, as_json: bool) -> int:
    from ponder.api.response import completion_body
    from ponder.run import Delta, Ended

    plan = await service.prepare(req)
    run = service.run(plan)
    task = asyncio.ensure_future(run.execute())
    in_thinking = False
    tty = sys.stdout.isatty()
    answered: set[int] = set()
    while True:
        ev = await run.events.get()
        if isinstance(ev, Ended):
            break
        if as_json or not isinstance(ev, Delta):
            continue
        if ev.kind == "thinking" and show_thinking:
            if not in_thinking:
                click.secho("[thinking]", dim=True)
                in_thinking = True
            click.secho(ev.text, dim=True, nl=False)
        elif ev.kind == "answer":
            if in_thinking:
                click.secho("\n[/thinking]", dim=True)
                in_thinking = False
            answered.add(ev.index)
            click.echo(ev.text, nl=False)
        if tty:
            sys.stdout.flush()
    outcome = await task
    if outcome.error is not None:
        if in_thinking:
            click.echo()
        raise outcome.error
    if as_json:
        click.echo(json.dumps(completion_body(outcome), indent=2))
        return 0
    if in_thinking:
        click.secho("\n[/thinking]", dim=True)
    if not answered:
        click.echo("(no answer)", nl=False)
    click.echo()
    click.secho(usage_line(outcome), dim=True)
    return 0


def usage_line(outcome) -> str:
    plan = outcome.plan
    u = outcome.usage
    first = outcome.results[0]
    rep = first.chosen.thinking_report
    parts = []
    if plan.strategy != "single":
        parts.append(f"{plan.strategy}: {first.n_samples} samples · {first.decision}")
    note = " (cut at budget)" if rep.truncated else (" (loop guard)" if rep.stopped == "repetition" else
                                                     (" (deadline)" if rep.stopped == "deadline" else ""))
    if plan.strategy == "single" and plan.n == 1:
        thinking = f"thinking {u.thinking_tokens}/{rep.budget}{note}"
    else:
        thinking = f"thinking {u.thinking_tokens} in all (cap {rep.budget} per sample)"
    src = " · answer from the thinking" if first.chosen.answer_source == "thinking" else ""
    cost = f" · ${outcome.cost_usd:.6f}" if outcome.cost_usd else ""
    head = f"[{parts[0]}]\n" if parts else ""
    return (f"{head}[input {u.input_tokens} · {thinking} · answer {u.answer_tokens}{src} · "
            f"{outcome.timings.total_s:.2f}s{cost}]")


@main.command()
@click.option("--host", default=None, help="Address to bind (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from config: 8000).")
@click.option("--config", "config_path", default=None, type=click.Path(),
              help="ponder YAML config (lanes, prices, server); see ponder.example.yaml.")
@click.option("--model", default=None, help="Serve this model on the default lane (name or GGUF path).")
@click.option("--policy", "policy_path", default=None,
              help="Routing policy YAML (from `ponder tune`), 'default' (shipped) or 'off'; default: the config's.")
@click.option("--threads", type=int, default=None,
              help="llama.cpp threads of the embedded engines (default: the CPUs the process may use — affinity "
                   "and cgroup quota — but one when there are more than two; llama.cpp's threads spin, so the "
                   "engine also backs off a thread when decoding collapses beside a busy neighbour).")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-json", is_flag=True, help="Write the access log (one line per request) as JSON.")
def serve(host, port, config_path, model, policy_path, threads, log_level, log_json) -> None:
    """Run the OpenAI-compatible gateway.

    \b
    Point any OpenAI client at http://HOST:PORT/v1.  Endpoints:
      POST /v1/chat/completions   GET /v1/models[/ID]   GET /health   GET /metrics

    \b
    model "auto" is routed by the policy (score bands -> lane, effort,
    strategy); naming a lane pins it; explicit reasoning_effort wins.
    Thinking is shown by default (server.default_visibility: visible);
    clients choose with thinking.visibility = hidden | visible | summary.
    """
    import logging

    import uvicorn

    from ponder.backends.registry import lane_has
    from ponder.server.app import create_app
    from ponder.service import Ponder

    config, _ = load_config_for(config_path, model)
    if threads is not None:
        if threads < 1:
            raise click.BadParameter("must be >= 1", param_hint="--threads")
        config = config.model_copy(update={"lanes": [ln.model_copy(update={"n_threads": threads})
                                                     if lane_has(ln, "local_model") else ln
                                                     for ln in config.lanes]})
    if log_json:
        config = config.model_copy(update={"server": config.server.model_copy(update={"log_format": "json"})})
    host = host or config.server.host
    port = port if port is not None else config.server.port
    _check_port(host, port)
    logging.basicConfig(level=getattr(logging, log_level.upper()), format="%(message)s")
    policy = load_policy_for(config, policy_path)
    tenancy = None
    from ponder.tenancy import build_tenancy

    tenancy = build_tenancy(config)
    service = Ponder(config, policy=policy)
    service.validate()
    if policy is not None:
        click.echo(f"ponder: routing with the {policy.router} router, {len(policy.bands)} bands "
                   f"({policy_path or config.policy})", err=True)
    # load the default lane now: a missing model fails at start-up, not on the first request
    lane = config.lane(None)
    click.echo(f"ponder {__version__}: loading lane {lane.name!r} "
               f"({lane.backend}: {lane.model or lane.base_url or 'smollm2'})", err=True)
    service.backend(lane)
    app = create_app(service, tenancy=tenancy)
    click.echo(f"ponder: serving on http://{host}:{port}/v1", err=True)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           access_log=log_level == "debug",
                                           timeout_graceful_shutdown=int(config.server.drain_s + 12)))
    exit_handler = server.handle_exit

    def handle_exit(sig, frame) -> None:
        # SIGTERM/SIGINT: drain in-flight requests (then cancel and account them) before uvicorn closes connections
        try:
            app.state.begin_drain()
        except RuntimeError:  # no running loop yet (signal during start-up)
            pass
        exit_handler(sig, frame)

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    server.run()


def _check_port(host: str, port: int) -> None:
    """Refuse a taken port before loading any model."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            from ponder.errors import ConfigError

            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", param="--port") from None


@main.command("strategies")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def strategies_cmd(as_json: bool) -> None:
    """List the test-time strategies: what each does and its parameters (defaults and ranges)."""
    from ponder.strategies import REGISTRY

    infos = [REGISTRY[name].info for name in sorted(REGISTRY)]
    if as_json:
        click.echo(json.dumps([{"name": i.name, "description": i.description, "count_param": i.count_param,
                                "needs": ["text_completion"] if i.needs_text else [], "parameters": i.parameters()}
                               for i in infos], indent=2, default=str))
        return
    for i in infos:
        click.secho(i.name, bold=True, nl=False)
        click.echo(f"  {i.description}" + ("  [needs text_completion: the embedded engine, llama-server, vLLM or SGLang]"
                                           if i.needs_text else ""))
        for p in i.parameters():
            rng = f"  ({p['range']})" if p["range"] else ""
            click.echo(f"    {p['name']}={p['default']!r}: {p['help']}{rng}")
    click.echo("\nuse: ponder ask ... --strategy NAME --param KEY=VALUE, or \"ponder\": {\"strategy\": ..., "
               "\"params\": {...}} in a request")


def parse_params(items) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


if __name__ == "__main__":  # pragma: no cover
    main()
