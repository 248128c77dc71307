"""The ``ponder`` command line.

Every command turns user errors into one line on stderr and exit code 2;
stack traces are reserved for bugs.
"""

from __future__ import annotations

import json
import sys
import time

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
    "seed": "--seed",
    "ponder.strategy": "--strategy",
    "ponder.params": "--param",
    "--model": "--model",
}


class PonderGroup(click.Group):
    """Catches ponder's typed errors: one line, exit 2, no trace."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PonderError as exc:
            flag = FLAG_FOR_PARAM.get(exc.param or "", exc.param)
            if exc.param and exc.param.startswith("ponder.params."):
                flag = f"--param {exc.param.removeprefix('ponder.params.')}"
            message = exc.message
            if exc.param and message.startswith(f"{exc.param}: "):
                message = message[len(exc.param) + 2 :]
            prefix = f"{flag}: " if flag and not message.startswith(str(flag)) else ""
            click.echo(f"error: {prefix}{message}", err=True)
            ctx.exit(2)


@click.group(cls=PonderGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ponder")
def main() -> None:
    """ponder: decide how much a model thinks, enforce it, account for it.

    \b
    ponder ask     answer one question under a thinking budget
    ponder serve   run the OpenAI-compatible gateway (make serve)
    ponder plan    size and price a self-hosted reasoning deployment
    ponder bench   measure accuracy against compute (the lab)
    ponder tune    write a routing policy from lab runs
    """


def _load(config_path: str | None, model: str | None):
    from ponder.config import load_config

    config = load_config(config_path)
    if model and model not in {lane.name for lane in config.lanes}:
        # a model name or GGUF path: the lanes on the default model run that model instead
        lanes = [ln.model_copy(update={"model": model}) if ln.backend == "llama_cpp" and ln.model is None else ln
                 for ln in config.lanes]
        if lanes == list(config.lanes):
            lane = config.lane(None)
            lanes = [ln.model_copy(update={"model": model}) if ln.name == lane.name else ln for ln in config.lanes]
        config = config.model_copy(update={"lanes": lanes})
        model = None
    return config, model


@main.command()
@click.argument("question")
@click.option("--effort", default=None, help="Thinking effort tier: none, minimal, low, medium, high, max (configurable).")
@click.option("--max-thinking-tokens", type=int, default=None, help="Hard cap on thinking tokens; overrides --effort.")
@click.option("--min-thinking-tokens", type=int, default=None, help="Keep the model thinking at least this long.")
@click.option("--show-thinking", is_flag=True, help="Print the thinking before the answer.")
@click.option("--model", default=None, help="A lane name from the config, a known model name, or a GGUF path.")
@click.option("--json", "as_json", is_flag=True, help="Print the OpenAI chat.completion object the gateway returns.")
@click.option("--system", default=None, help="A system prompt.")
@click.option("--temperature", type=float, default=None, help="Sampling temperature (default 0.6).")
@click.option("--seed", type=int, default=None, help="Sampling seed, for reproducible answers.")
@click.option("--max-answer-tokens", type=int, default=None, help="Tokens reserved for the answer (default: the lane's).")
@click.option("--strategy", default=None, help="Test-time strategy (see `ponder strategies`).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A strategy parameter; repeatable.")
@click.option("--config", "config_path", default=None, type=click.Path(), help="ponder YAML config.")
@click.option("--policy", "policy_path", default=None,
              help="Routing policy YAML (from `ponder tune`), 'default' or 'off'; default: the config's.")
def ask(question, effort, max_thinking_tokens, min_thinking_tokens, show_thinking, model, as_json, system,
        temperature, seed, max_answer_tokens, strategy, params, config_path, policy_path) -> None:
    """Answer QUESTION under a thinking budget.

    \b
    Examples:
      ponder ask "What is 17 * 23?" --effort low
      ponder ask "What is 17 * 23?" --max-thinking-tokens 32 --show-thinking
      ponder ask "Hi" --effort none --json
    """
    from ponder.api.request import parse_request
    from ponder.api.response import completion_body
    from ponder.service import Ponder

    if not question.strip():
        raise click.UsageError("QUESTION is empty")
    config, lane = _load(config_path, model)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    body: dict = {"messages": messages, "thinking": {"visibility": "visible" if show_thinking else "hidden"}}
    for key, value in (("model", lane), ("reasoning_effort", effort), ("max_thinking_tokens", max_thinking_tokens),
                       ("min_thinking_tokens", min_thinking_tokens), ("temperature", temperature), ("seed", seed),
                       ("max_completion_tokens", max_answer_tokens)):
        if value is not None:
            body[key] = value
    if strategy or params:
        body["ponder"] = {"strategy": strategy, "params": _parse_params(params)}
    req = parse_request(body)
    service = Ponder(config, policy=_policy(config, policy_path))
    plan = service.plan(req)
    if as_json:
        outcome = service.run(plan)
        click.echo(json.dumps(completion_body(outcome), indent=2))
        return
    _ask_streaming(service, plan, show_thinking)


def _ask_streaming(service, plan, show_thinking: bool) -> None:
    from ponder.service import StrategyDone
    from ponder.thinking.control import AnswerDelta, Finished, ThinkingDelta

    t0 = time.perf_counter()
    finished = []
    in_thinking = False
    tty = sys.stdout.isatty()
    for item in service.stream(plan):
        ev = item.event
        if isinstance(ev, StrategyDone):
            finished[-1] = ev.result
            continue
        if isinstance(ev, ThinkingDelta) and show_thinking:
            if not in_thinking:
                click.secho("[thinking]", dim=True)
                in_thinking = True
            click.secho(ev.text, dim=True, nl=False)
        elif isinstance(ev, AnswerDelta):
            if in_thinking:
                click.secho("\n[/thinking]", dim=True)
                in_thinking = False
            click.echo(ev.text, nl=False)
        elif isinstance(ev, Finished):
            finished.append(ev.generation)
            if not ev.generation.answer:
                click.echo("(no answer)", nl=False)
            click.echo()
        if tty:
            sys.stdout.flush()
    outcome = service.finish(plan, finished, t0)
    u = outcome.usage
    first = outcome.results[0]
    rep = first.chosen.thinking_report
    if plan.strategy != "single":
        click.secho(f"[{plan.strategy}: {first.n_samples} samples · {first.decision}]", dim=True)
    note = ""
    if rep.truncated:
        note = " (cut at budget)"
    elif rep.stopped == "repetition":
        note = " (loop guard)"
    if plan.strategy == "single" and plan.n == 1:
        thinking = f"thinking {u.thinking_tokens}/{rep.budget}{note}"
    else:
        thinking = f"thinking {u.thinking_tokens} in all (cap {rep.budget} per sample)"
    cost = f" · ${outcome.cost_usd:.6f}" if outcome.cost_usd else ""
    click.secho(f"[input {u.prompt_tokens} · {thinking} · answer {u.answer_tokens} · {outcome.timings.total_s:.2f}s{cost}]",
                dim=True)


@main.command()
@click.option("--host", default=None, help="Address to bind (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from config: 8000).")
@click.option("--config", "config_path", default=None, type=click.Path(), help="ponder YAML config (lanes, prices, server).")
@click.option("--model", default=None, help="Serve this model on the default lane (name or GGUF path).")
@click.option("--policy", "policy_path", default=None,
              help="Routing policy YAML (from `ponder tune`), 'default' (shipped) or 'off'; default: the config's.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def serve(host, port, config_path, model, policy_path, log_level) -> None:
    """Run the OpenAI-compatible gateway.

    \b
    Point any OpenAI client at http://HOST:PORT/v1.  Endpoints:
      POST /v1/chat/completions   GET /v1/models   GET /health   GET /metrics

    \b
    model "auto" is routed by the policy (score bands -> lane, effort,
    strategy); naming a lane pins it; explicit reasoning_effort wins.
    """
    import uvicorn

    from ponder.server.app import create_app
    from ponder.service import Ponder

    config, _ = _load(config_path, model)
    policy = _policy(config, policy_path)
    service = Ponder(config, policy=policy)
    if policy is not None:
        click.echo(f"ponder: routing with the {policy.router} router, {len(policy.bands)} bands "
                   f"({policy_path or config.policy})", err=True)
    # load the default lane now: a missing model fails at start-up, not on the first request
    lane = config.lane(None)
    click.echo(f"ponder {__version__}: loading lane {lane.name!r} ({lane.backend}: {lane.model or lane.base_url or 'smollm2'})", err=True)
    service.backend(lane)
    host = host or config.server.host
    port = port if port is not None else config.server.port
    click.echo(f"ponder: serving on http://{host}:{port}/v1", err=True)
    uvicorn.run(create_app(service), host=host, port=port, log_level=log_level, access_log=log_level == "debug")


def _policy(config, path: str | None):
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


def _parse_params(items) -> dict:
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


from ponder.lab.cli import bench_cmd  # noqa: E402
from ponder.plan.cli import plan_cmd  # noqa: E402
from ponder.routing.cli import tune_cmd  # noqa: E402

main.add_command(plan_cmd)
main.add_command(bench_cmd)
main.add_command(tune_cmd)


if __name__ == "__main__":  # pragma: no cover
    main()
