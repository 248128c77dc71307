"""``ponder plan``: capacity and cost of self-hosted reasoning serving."""

from __future__ import annotations

import json

import click

from ponder.capacity.capacity import Deployment, PlanReport, Workload, plan, what_ifs
from ponder.capacity.catalog import GPUS, MODELS, find_gpu, find_model
from ponder.capacity.hosted import compare, load_prices


def shared_options(f):
    opts = [
        click.option("--model", "model", default=None, help="Catalog name (see --list) or a Hugging Face config.json."),
        click.option("--gpu", "gpu", default=None, help="GPU name: A100-80GB, H100-80GB, H200-141GB, B200-192GB, L40S, L4, MI300X."),
        click.option("--gpus-per-node", type=int, default=8, show_default=True),
        click.option("--tp", type=int, default=None,
                     help="Tensor parallel degree (GPUs per replica); default: the smallest that fits."),
        click.option("--weights-dtype", default="bf16", show_default=True, type=click.Choice(["bf16", "fp16", "fp8", "int8", "int4"])),
        click.option("--kv-dtype", default="bf16", show_default=True, type=click.Choice(["bf16", "fp16", "fp8", "int8", "int4"])),
        click.option("--input-tokens", type=int, default=1000, show_default=True),
        click.option("--thinking-tokens", type=int, default=8000, show_default=True),
        click.option("--answer-tokens", type=int, default=1000, show_default=True),
        click.option("--target-qps", type=float, default=1.0, show_default=True),
        click.option("--price-per-gpu-hour", type=float, default=None, help="Override the GPU's default $/hour."),
        click.option("--memory-utilization", type=float, default=0.90, show_default=True, help="Share of GPU memory the engine uses."),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _setup(model, gpu, gpus_per_node, tp, weights_dtype, kv_dtype, input_tokens, thinking_tokens, answer_tokens,
           target_qps, price_per_gpu_hour, memory_utilization):
    if not model:
        raise click.UsageError("--model is required (see `ponder plan --list`)")
    if not gpu:
        raise click.UsageError("--gpu is required (see `ponder plan --list`)")
    if not 0.1 <= memory_utilization <= 1.0:
        raise click.BadParameter("must be between 0.1 and 1.0", param_hint="--memory-utilization")
    arch = find_model(model)
    dep = Deployment(gpu=find_gpu(gpu), tp=tp or 1, gpus_per_node=gpus_per_node, weights_dtype=weights_dtype,
                     kv_dtype=kv_dtype, price_per_gpu_hour=price_per_gpu_hour, memory_utilization=memory_utilization)
    work = Workload(input_tokens=input_tokens, thinking_tokens=thinking_tokens, answer_tokens=answer_tokens,
                    target_qps=target_qps)
    if tp is None:
        from dataclasses import replace

        from ponder.capacity.capacity import smallest_tp

        chosen, why = smallest_tp(arch, dep, work)
        dep = replace(dep, tp=chosen)
        click.echo(why, err=True)
    return arch, dep, work


@click.group("plan", invoke_without_command=True)
@shared_options
@click.option("--compare", "do_compare", is_flag=True, help="Add what-ifs: FP8/INT4 KV, a thinking cap, routing, speculative decoding, best-of-N.")
@click.option("--thinking-cap", type=int, default=None, help="What-if thinking cap (default: a quarter of --thinking-tokens).")
@click.option("--fast-share", type=float, default=0.5, show_default=True, help="What-if share of traffic routed to a fast lane.")
@click.option("--spec-speedup", type=float, default=2.0, show_default=True, help="What-if decode speed-up of speculative decoding.")
@click.option("--best-of", type=int, default=4, show_default=True, help="What-if samples per request (prefix shared vs not).")
@click.option("--list", "list_catalog", is_flag=True, help="List the built-in models and GPUs.")
@click.pass_context
def plan_cmd(ctx, model, gpu, gpus_per_node, tp, weights_dtype, kv_dtype, input_tokens, thinking_tokens, answer_tokens,
             target_qps, price_per_gpu_hour, memory_utilization, as_json, do_compare, thinking_cap, fast_share,
             spec_speedup, best_of, list_catalog):
    """Size a self-hosted reasoning deployment: KV math, concurrency, QPS, $/month.

    \b
    Example:
      ponder plan --model DeepSeek-R1-Distill-Qwen-32B --gpu H100 --tp 2 \\
                  --thinking-tokens 8000 --target-qps 2 --compare
    """
    if ctx.invoked_subcommand is not None:
        return
    if list_catalog:
        click.echo("models: " + ", ".join(m.name for m in MODELS.values()))
        click.echo("gpus:   " + ", ".join(f"{g.name} ({g.memory_gb:g} GB, {g.bandwidth_tbs:g} TB/s, ${g.usd_per_hour:.2f}/h)" for g in GPUS.values()))
        return
    arch, dep, work = _setup(model, gpu, gpus_per_node, tp, weights_dtype, kv_dtype, input_tokens, thinking_tokens,
                             answer_tokens, target_qps, price_per_gpu_hour, memory_utilization)
    if not do_compare:
        report = plan(arch, dep, work)
        click.echo(json.dumps(report.to_dict(), indent=2) if as_json else render(report, work))
        return
    rows = what_ifs(arch, dep, work, thinking_cap=thinking_cap, fast_share=fast_share, spec_speedup=spec_speedup,
                    best_of=best_of)
    base = rows[0][1]
    if isinstance(base, str):
        raise click.ClickException(base)
    if as_json:
        click.echo(json.dumps({"baseline": base.to_dict(), "what_ifs": [
            {"variant": label, **(r.to_dict() if isinstance(r, PlanReport) else {"error": r})} for label, r in rows]}, indent=2))
        return
    click.echo(render(base, work))
    click.echo()
    click.echo(render_compare(rows))


@plan_cmd.command("cost")
@shared_options
@click.option("--requests-per-month", type=float, required=True, help="Monthly request volume.")
@click.option("--fast-share", type=float, default=0.0, show_default=True, help="Share of requests routed to the fast lane.")
@click.option("--prices", "prices_path", default=None, type=click.Path(), help="Your own hosted price table (YAML).")
@click.option("--hosted-thinking", type=int, default=None, help="Thinking tokens per hosted request (default: each model's typical).")
def plan_cost(model, gpu, gpus_per_node, tp, weights_dtype, kv_dtype, input_tokens, thinking_tokens, answer_tokens,
              target_qps, price_per_gpu_hour, memory_utilization, as_json, requests_per_month, fast_share,
              prices_path, hosted_thinking):
    """Hosted API bills vs self-hosting for a monthly volume, with routing savings.

    \b
    Example:
      ponder plan cost --requests-per-month 1000000 --fast-share 0.6 \\
                       --model DeepSeek-R1 --gpu H200 --tp 8 --weights-dtype fp8
    """
    if requests_per_month <= 0:
        raise click.BadParameter("must be > 0", param_hint="--requests-per-month")
    if not 0 <= fast_share < 1:
        raise click.BadParameter("must be in [0, 1)", param_hint="--fast-share")
    table = load_prices(prices_path)
    rows = compare(table, requests_per_month=requests_per_month, input_tokens=input_tokens,
                   thinking_tokens=hosted_thinking, answer_tokens=answer_tokens, fast_share=fast_share)
    self_hosted = None
    if model and gpu:
        qps = requests_per_month / (HOURS_PER_MONTH_S)
        arch, dep, work = _setup(model, gpu, gpus_per_node, tp, weights_dtype, kv_dtype, input_tokens, thinking_tokens,
                                 answer_tokens, qps, price_per_gpu_hour, memory_utilization)
        base = plan(arch, dep, work)
        from dataclasses import replace
        routed = plan(arch, dep, replace(work, fast_share=fast_share)) if fast_share else base
        self_hosted = {"model": arch.name, "gpu": dep.gpu.name, "avg_qps": qps,
                       "gpus": base.gpus, "usd_per_month": base.usd_per_month,
                       "gpus_routed": routed.gpus, "usd_per_month_routed": routed.usd_per_month}
    if as_json:
        click.echo(json.dumps({"prices_as_of": table.as_of, "requests_per_month": requests_per_month,
                               "fast_share": fast_share, "hosted": rows, "self_hosted": self_hosted}, indent=2))
        return
    click.echo(f"{requests_per_month:,.0f} requests/month · {input_tokens} in / {answer_tokens} answer tokens · "
               f"{fast_share:.0%} routed to the fast lane · hosted prices as of {table.as_of}")
    head = f"{'option':44} {'thinking':>9} {'$/month':>14} {'$/month routed':>15} {'$/req (volume)':>14}"
    click.echo(head)
    click.echo("-" * len(head))
    for r in rows:
        click.echo(f"{r['name']:44} {r['thinking_tokens']:>9,} {r['usd_per_month']:>14,.0f} "
                   f"{r['usd_per_month_routed']:>15,.0f} {r['usd_per_request']:>14.4f}")
    if self_hosted:
        label = f"self-host {self_hosted['model']} ({self_hosted['gpus']}x {self_hosted['gpu']})"
        click.echo(f"{label:44} {thinking_tokens:>9,} {self_hosted['usd_per_month']:>14,.0f} "
                   f"{self_hosted['usd_per_month_routed']:>15,.0f} {self_hosted['usd_per_month'] / requests_per_month:>14.4f}")
        click.echo(f"  (sized for the average {self_hosted['avg_qps']:.2f} QPS, 24/7; routed: {self_hosted['gpus_routed']} GPUs)")


HOURS_PER_MONTH_S = 730.0 * 3600


def render(r: PlanReport, w: Workload) -> str:
    kb = lambda b: f"{b / 1000:,.1f} KB"
    lines = [
        f"{r.model} on {r.gpu} · TP={r.tp} · weights {r.weights_dtype} · KV {r.kv_dtype}",
        f"request: {w.input_tokens:,} input + {w.thinking_tokens:,} thinking + {w.answer_tokens:,} answer tokens; target {w.target_qps:g} QPS",
        "",
        f"KV bytes per token          {r.kv_bytes_per_token:>14,.0f} B  ({kb(r.kv_bytes_per_token)}; chat-era 2*hidden*layers estimate: {kb(r.naive_kv_bytes_per_token)}, x{r.naive_kv_bytes_per_token / r.kv_bytes_per_token:.1f})",
        f"weights per GPU             {r.weights_gb_per_gpu:>14,.1f} GB",
        f"KV memory per GPU           {r.kv_gb_per_gpu:>14,.1f} GB  ({r.kv_gb_per_replica:,.1f} GB per replica)",
        f"KV per request (peak)       {r.kv_gb_per_request:>14,.2f} GB  ({r.tokens_per_request:,.0f} tokens)",
        f"max concurrent requests     {r.max_concurrent_requests:>14,} per replica",
        f"decode (bandwidth-bound)    {r.decode_tokens_per_s_per_request:>14,.1f} tok/s per request, {r.decode_tokens_per_s_aggregate:,.0f} tok/s per replica",
        f"time to answer              {r.time_to_answer_s:>14,.1f} s at full batch ({r.time_to_answer_unloaded_s:,.1f} s alone; prefill {r.prefill_s:.2f} s)",
        f"sustained QPS               {r.qps_per_replica:>14,.3f} per replica",
        f"for {w.target_qps:g} QPS                  {r.replicas:>14,} replicas = {r.gpus} GPUs = {r.nodes} node(s)",
        f"cost                        {r.usd_per_month:>14,.0f} $/month (24/7, sized for the target QPS)",
        f"                            ${r.usd_per_million_output_tokens:,.2f} per 1M output tokens · "
        f"${r.usd_per_request:,.4f} per request at full load (every slot busy)",
    ]
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


def render_compare(rows) -> str:
    head = f"{'what-if':34} {'KV/req GB':>10} {'conc':>6} {'QPS/rep':>9} {'TTA s':>8} {'GPUs':>6} {'$/month':>12} {'$/req full':>10}"
    out = [head, "-" * len(head)]
    for label, r in rows:
        if isinstance(r, str):
            out.append(f"{label:34} does not fit: {r}")
            continue
        out.append(f"{label:34} {r.kv_gb_per_request:>10.2f} {r.max_concurrent_requests:>6} {r.qps_per_replica:>9.3f} "
                   f"{r.time_to_answer_s:>8.1f} {r.gpus:>6} {r.usd_per_month:>12,.0f} {r.usd_per_request:>10.4f}")
    return "\n".join(out)
