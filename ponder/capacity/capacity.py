"""Capacity and cost math for self-hosted reasoning serving.

The chat-era mistake this corrects: sizing KV cache as ``2 x hidden x layers``
(every head keeps its own K and V).  Modern models share K/V across query
heads (GQA) or store a compressed latent (MLA), so the real figure is often
4-16x smaller — and reasoning traces are 10-100x longer than chat answers, so
the *request* is what no longer fits.  All sizes are decimal bytes.

The decode estimate is bandwidth-bound: every decode step reads the weights
(active parameters for MoE) once for the whole batch, plus each request's KV
cache.  That is the regime long thinking traces live in.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from ponder.errors import InvalidRequest
from ponder.capacity.catalog import GPU, ModelArch

DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
HOURS_PER_MONTH = 730.0
GB = 1e9


def dtype_bytes(name: str, *, flag: str) -> float:
    try:
        return DTYPE_BYTES[name.lower()]
    except KeyError:
        raise InvalidRequest(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_BYTES)}", param=flag) from None


def kv_bytes_per_token(arch: ModelArch, kv_dtype: str = "bf16") -> float:
    """KV cache bytes one token occupies across the whole model."""
    b = dtype_bytes(kv_dtype, flag="--kv-dtype")
    if arch.attention == "mla":
        # one compressed latent plus the decoupled RoPE key per layer
        return arch.layers * (arch.kv_lora_rank + arch.rope_head_dim) * b
    return arch.layers * 2 * arch.kv_heads * arch.head_dim * b


def naive_kv_bytes_per_token(arch: ModelArch, kv_dtype: str = "bf16") -> float:
    """The chat-era estimate (2 x hidden x layers), shown for contrast."""
    return 2 * arch.hidden * arch.layers * dtype_bytes(kv_dtype, flag="--kv-dtype")


def max_concurrent_requests(kv_memory_bytes: float, tokens_per_request: int, kv_per_token: float) -> int:
    """How many requests of a given length fit in a KV budget at their peak."""
    if tokens_per_request <= 0 or kv_per_token <= 0:
        raise InvalidRequest("tokens per request and KV per token must be positive")
    return int(kv_memory_bytes // (tokens_per_request * kv_per_token))


@dataclass(frozen=True)
class Workload:
    input_tokens: int = 1000
    thinking_tokens: int = 8000
    answer_tokens: int = 1000
    target_qps: float = 1.0
    #: share of requests routed to a no-thinking fast lane (what-if)
    fast_share: float = 0.0
    #: best-of-N samples per request sharing one prompt (what-if)
    samples: int = 1
    prefix_sharing: bool = True

    @property
    def avg_thinking(self) -> float:
        return self.thinking_tokens * (1.0 - self.fast_share)

    @property
    def output_tokens_per_sample(self) -> float:
        return self.avg_thinking + self.answer_tokens


@dataclass(frozen=True)
class Deployment:
    gpu: GPU
    tp: int = 1
    gpus_per_node: int = 8
    weights_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    #: share of GPU memory the engine may use (vLLM's gpu_memory_utilization)
    memory_utilization: float = 0.90
    #: activations, CUDA graphs, fragmentation, per GPU
    overhead_gb: float = 2.0
    price_per_gpu_hour: float | None = None
    #: achieved share of peak bandwidth / FLOPs
    bandwidth_efficiency: float = 0.7
    mfu: float = 0.4
    #: decode speed-up from speculative decoding (what-if)
    spec_speedup: float = 1.0

    @property
    def usd_per_gpu_hour(self) -> float:
        return self.gpu.usd_per_hour if self.price_per_gpu_hour is None else self.price_per_gpu_hour


@dataclass
class PlanReport:
    model: str
    gpu: str
    tp: int
    weights_dtype: str
    kv_dtype: str
    kv_bytes_per_token: float
    naive_kv_bytes_per_token: float
    weights_gb_per_gpu: float
    kv_gb_per_gpu: float
    kv_gb_per_replica: float
    tokens_per_request: float
    kv_gb_per_request: float
    max_concurrent_requests: int
    step_time_ms: float
    decode_tokens_per_s_per_request: float
    decode_tokens_per_s_aggregate: float
    prefill_s: float
    time_to_answer_s: float
    time_to_answer_unloaded_s: float
    qps_per_replica: float
    replicas: int
    gpus: int
    nodes: int
    usd_per_month: float
    usd_per_million_output_tokens: float
    usd_per_request: float
    notes: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def plan(arch: ModelArch, dep: Deployment, work: Workload) -> PlanReport:
    _validate(arch, dep, work)
    tp = dep.tp
    w_bytes = arch.params_b * 1e9 * dtype_bytes(dep.weights_dtype, flag="--weights-dtype")
    w_per_gpu = w_bytes / tp
    usable = dep.gpu.memory_gb * GB * dep.memory_utilization - dep.overhead_gb * GB
    if w_per_gpu > usable:
        short = (w_per_gpu - usable) / GB
        need_tp = math.ceil(w_bytes / usable) if usable > 0 else None
        hint = f"; try --tp {_next_tp(arch, need_tp)}" if need_tp else ""
        raise InvalidRequest(
            f"{arch.name} weights need {w_per_gpu / GB:.1f} GB per GPU at {dep.weights_dtype} with TP={tp}, "
            f"but only {usable / GB:.1f} GB of a {dep.gpu.name} is usable: short by {short:.1f} GB per GPU"
            f"{hint} or a smaller --weights-dtype",
            param="--tp",
        )
    kv_per_gpu = usable - w_per_gpu
    kv_per_replica = kv_per_gpu * tp
    kv_tok = kv_bytes_per_token(arch, dep.kv_dtype)
    kv_tok_per_gpu = _kv_per_token_per_gpu(arch, kv_tok, tp)
    replica_factor = kv_tok_per_gpu * tp / kv_tok  # 1.0 when split cleanly

    out_per_sample = work.output_tokens_per_sample
    if work.samples > 1 and work.prefix_sharing:
        tokens_req = work.input_tokens + work.samples * out_per_sample
    else:
        tokens_req = work.samples * (work.input_tokens + out_per_sample)
    kv_req = tokens_req * kv_tok * replica_factor
    conc = int(kv_per_replica // kv_req)
    notes: list[str] = []
    if conc < 1:
        raise InvalidRequest(
            f"one request ({tokens_req:,.0f} tokens = {kv_req / GB:.1f} GB of KV) does not fit the "
            f"{kv_per_replica / GB:.1f} GB of KV memory per replica: short by {(kv_req - kv_per_replica) / GB:.1f} GB; "
            "raise --tp, use --kv-dtype fp8, or cap thinking",
            param="--thinking-tokens",
        )
    total_tokens = work.input_tokens + out_per_sample
    if total_tokens > arch.max_context:
        notes.append(f"{total_tokens:,.0f} tokens exceed the model's {arch.max_context:,} context")

    # bandwidth-bound decode at full batch: the average request is half-way through its output
    active_w_per_gpu = arch.active_b * 1e9 * dtype_bytes(dep.weights_dtype, flag="--weights-dtype") / tp
    streams = conc * work.samples
    avg_ctx = work.input_tokens + out_per_sample / 2
    kv_read_per_gpu = streams * avg_ctx * kv_tok_per_gpu
    bw = dep.gpu.bandwidth_tbs * 1e12 * dep.bandwidth_efficiency
    step = (active_w_per_gpu + kv_read_per_gpu) / bw / dep.spec_speedup
    step_unloaded = (active_w_per_gpu + work.samples * avg_ctx * kv_tok_per_gpu) / bw / dep.spec_speedup
    prefill = 2 * arch.active_b * 1e9 * work.input_tokens / (tp * dep.gpu.bf16_tflops * 1e12 * dep.mfu)
    tta = prefill + out_per_sample * step
    tta_unloaded = prefill + out_per_sample * step_unloaded
    qps_replica = conc / tta
    replicas = max(1, math.ceil(work.target_qps / qps_replica))
    gpus = replicas * tp
    nodes = math.ceil(gpus / dep.gpus_per_node)
    usd_month = gpus * dep.usd_per_gpu_hour * HOURS_PER_MONTH
    agg_tok_s = streams / step
    replica_usd_s = tp * dep.usd_per_gpu_hour / 3600
    notes += _architecture_notes(arch, tp, replica_factor)
    return PlanReport(
        model=arch.name, gpu=dep.gpu.name, tp=tp, weights_dtype=dep.weights_dtype, kv_dtype=dep.kv_dtype,
        kv_bytes_per_token=kv_tok, naive_kv_bytes_per_token=naive_kv_bytes_per_token(arch, dep.kv_dtype),
        weights_gb_per_gpu=w_per_gpu / GB, kv_gb_per_gpu=kv_per_gpu / GB, kv_gb_per_replica=kv_per_replica / GB,
        tokens_per_request=tokens_req, kv_gb_per_request=kv_req / GB, max_concurrent_requests=conc,
        step_time_ms=step * 1000, decode_tokens_per_s_per_request=1 / step, decode_tokens_per_s_aggregate=agg_tok_s,
        prefill_s=prefill, time_to_answer_s=tta, time_to_answer_unloaded_s=tta_unloaded,
        qps_per_replica=qps_replica, replicas=replicas, gpus=gpus, nodes=nodes, usd_per_month=usd_month,
        usd_per_million_output_tokens=replica_usd_s / agg_tok_s * 1e6,
        usd_per_request=replica_usd_s * tta / conc, notes=notes,
    )


def _kv_per_token_per_gpu(arch: ModelArch, kv_tok: float, tp: int) -> float:
    """Each GPU holds its share of KV heads; with fewer KV heads than ranks (or MLA's shared latent) the cache is
    replicated instead of split."""
    if arch.attention == "mla":
        return kv_tok
    if arch.kv_heads >= tp:
        return kv_tok * math.ceil(arch.kv_heads / tp) / arch.kv_heads
    return kv_tok / arch.kv_heads


def _architecture_notes(arch: ModelArch, tp: int, replica_factor: float) -> list[str]:
    notes = []
    if arch.active_params_b is not None and arch.active_params_b < arch.params_b:
        notes.append(f"MoE: {arch.active_b:g}B of {arch.params_b:g}B parameters read per decode step")
    if arch.attention == "mla":
        notes.append(f"MLA: KV is a {arch.kv_lora_rank}+{arch.rope_head_dim} latent per layer, replicated on each TP rank")
    if replica_factor > 1.0001 and arch.attention != "mla":  # MLA's latent is one shared head: noted above
        notes.append(f"only {arch.kv_heads} KV heads for TP={tp}: KV is replicated {replica_factor:.1f}x")
    return notes


def smallest_tp(arch: ModelArch, dep: Deployment, work: Workload) -> tuple[int, str]:
    """The smallest TP (a divisor of the heads, whole nodes past one) at which the weights and one request fit."""
    from dataclasses import replace

    last: InvalidRequest | None = None
    for tp in [t for t in _divisors(arch.heads) if t <= 64]:
        if tp > dep.gpus_per_node and tp % dep.gpus_per_node:
            continue
        try:
            plan(arch, replace(dep, tp=tp), work)
        except InvalidRequest as exc:
            last = exc
            continue
        nodes = max(1, math.ceil(tp / dep.gpus_per_node))
        where = f" across {nodes} nodes" if nodes > 1 else ""
        return tp, (f"TP={tp}{where} chosen: the smallest tensor-parallel degree at which {arch.name}'s weights "
                    f"and one request's KV fit a {dep.gpu.name} (--tp to choose another)")
    raise InvalidRequest(f"{arch.name} does not fit {dep.gpu.name} at any TP up to 64"
                         + (f": {last.message}" if last else ""), param="--tp")


def _validate(arch: ModelArch, dep: Deployment, work: Workload) -> None:
    if dep.tp < 1:
        raise InvalidRequest("--tp must be >= 1", param="--tp")
    if arch.heads % dep.tp:
        raise InvalidRequest(
            f"TP={dep.tp} does not divide {arch.name}'s {arch.heads} attention heads "
            f"(valid: {', '.join(str(t) for t in _divisors(arch.heads) if t <= 64)})",
            param="--tp",
        )
    if dep.tp > dep.gpus_per_node and dep.tp % dep.gpus_per_node:
        raise InvalidRequest(f"TP={dep.tp} spans nodes unevenly with {dep.gpus_per_node} GPUs per node", param="--tp")
    for name, v in (("--input-tokens", work.input_tokens), ("--thinking-tokens", work.thinking_tokens),
                    ("--answer-tokens", work.answer_tokens)):
        if v < 0:
            raise InvalidRequest(f"{name} must be >= 0", param=name)
    if work.input_tokens + work.answer_tokens + work.thinking_tokens <= 0:
        raise InvalidRequest("a request needs at least one token", param="--input-tokens")
    if work.target_qps <= 0:
        raise InvalidRequest("--target-qps must be > 0", param="--target-qps")
    if not 0 <= work.fast_share < 1:
        raise InvalidRequest("--fast-share must be in [0, 1)", param="--fast-share")
    if work.samples < 1:
        raise InvalidRequest("--best-of must be >= 1", param="--best-of")
    if dep.spec_speedup < 1:
        raise InvalidRequest("--spec-speedup must be >= 1", param="--spec-speedup")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _next_tp(arch: ModelArch, need: int | None) -> int:
    for d in _divisors(arch.heads):
        if need is not None and d >= need:
            return d
    return arch.heads


def what_ifs(arch: ModelArch, dep: Deployment, work: Workload, *, thinking_cap: int | None = None,
             fast_share: float = 0.5, spec_speedup: float = 2.0, best_of: int = 4) -> list[tuple[str, PlanReport | str]]:
    """The baseline and one variant per lever, each planned in full."""
    cap = thinking_cap if thinking_cap is not None else max(1, work.thinking_tokens // 4)
    variants: list[tuple[str, Deployment, Workload]] = [
        ("baseline", dep, work),
        ("kv fp8", replace(dep, kv_dtype="fp8"), work),
        ("kv int4", replace(dep, kv_dtype="int4"), work),
        (f"thinking cap {cap}", dep, replace(work, thinking_tokens=min(work.thinking_tokens, cap))),
        (f"route {fast_share:.0%} to fast lane", dep, replace(work, fast_share=fast_share)),
        (f"speculative decoding x{spec_speedup:g}", replace(dep, spec_speedup=spec_speedup), work),
        (f"best-of-{best_of}, shared prefix", dep, replace(work, samples=best_of, prefix_sharing=True)),
        (f"best-of-{best_of}, no sharing", dep, replace(work, samples=best_of, prefix_sharing=False)),
    ]
    out: list[tuple[str, PlanReport | str]] = []
    for label, d, w in variants:
        try:
            out.append((label, plan(arch, d, w)))
        except InvalidRequest as exc:
            out.append((label, exc.message))
    return out
