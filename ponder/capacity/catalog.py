"""Model architectures and GPUs the planner knows by name.

Architectures are from the models' published ``config.json`` files.  GPU
memory is in decimal GB as marketed (80 GB = 80e9 bytes); bandwidth is the
peak HBM figure; ``usd_per_hour`` is an editable default (override with
``--price-per-gpu-hour``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from ponder.errors import InvalidRequest


@dataclass(frozen=True)
class ModelArch:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    params_b: float
    #: active parameters per token (MoE); equal to params_b for dense models
    active_params_b: float | None = None
    attention: str = "gqa"  # gqa (incl. MHA/MQA) | mla
    #: MLA: compressed latent width and the decoupled RoPE key width
    kv_lora_rank: int = 0
    rope_head_dim: int = 0
    max_context: int = 131072

    @property
    def active_b(self) -> float:
        return self.active_params_b if self.active_params_b is not None else self.params_b


def _dense(name, layers, hidden, heads, kv, hd, params, ctx=131072) -> ModelArch:
    return ModelArch(name, layers, hidden, heads, kv, hd, params, max_context=ctx)


_LLAMA_8B = dict(layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, params_b=8.03)
_LLAMA_70B = dict(layers=80, hidden=8192, heads=64, kv_heads=8, head_dim=128, params_b=70.6)
_QWEN25_32B = dict(layers=64, hidden=5120, heads=40, kv_heads=8, head_dim=128, params_b=32.8)
_DEEPSEEK_V3 = dict(layers=61, hidden=7168, heads=128, kv_heads=128, head_dim=128, params_b=671.0,
                    active_params_b=37.0, attention="mla", kv_lora_rank=512, rope_head_dim=64, max_context=163840)

MODELS: dict[str, ModelArch] = {m.name.lower(): m for m in [
    ModelArch("Llama-3.1-8B", **_LLAMA_8B),
    ModelArch("Llama-3.1-70B", **_LLAMA_70B),
    _dense("Llama-3.1-405B", 126, 16384, 128, 8, 128, 405.9),
    _dense("Qwen2.5-7B", 28, 3584, 28, 4, 128, 7.62),
    _dense("Qwen2.5-14B", 48, 5120, 40, 8, 128, 14.8),
    ModelArch("Qwen2.5-32B", **_QWEN25_32B),
    _dense("Qwen2.5-72B", 80, 8192, 64, 8, 128, 72.7),
    _dense("DeepSeek-R1-Distill-Qwen-1.5B", 28, 1536, 12, 2, 128, 1.78),
    _dense("DeepSeek-R1-Distill-Qwen-7B", 28, 3584, 28, 4, 128, 7.62),
    _dense("DeepSeek-R1-Distill-Qwen-14B", 48, 5120, 40, 8, 128, 14.8),
    ModelArch("DeepSeek-R1-Distill-Qwen-32B", **_QWEN25_32B),
    ModelArch("DeepSeek-R1-Distill-Llama-8B", **_LLAMA_8B),
    ModelArch("DeepSeek-R1-Distill-Llama-70B", **_LLAMA_70B),
    ModelArch("QwQ-32B", **_QWEN25_32B),
    _dense("Qwen3-0.6B", 28, 1024, 16, 8, 128, 0.6, 40960),
    _dense("Qwen3-1.7B", 28, 2048, 16, 8, 128, 1.7, 40960),
    _dense("Qwen3-4B", 36, 2560, 32, 8, 128, 4.0, 40960),
    _dense("Qwen3-8B", 36, 4096, 32, 8, 128, 8.2, 40960),
    _dense("Qwen3-14B", 40, 5120, 40, 8, 128, 14.8, 40960),
    _dense("Qwen3-32B", 64, 5120, 64, 8, 128, 32.8, 40960),
    ModelArch("Qwen3-30B-A3B", 48, 2048, 32, 4, 128, 30.5, active_params_b=3.3, max_context=40960),
    ModelArch("Qwen3-235B-A22B", 94, 4096, 64, 4, 128, 235.0, active_params_b=22.0, max_context=40960),
    ModelArch("DeepSeek-V3", **_DEEPSEEK_V3),
    ModelArch("DeepSeek-R1", **_DEEPSEEK_V3),
]}


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gb: float
    bandwidth_tbs: float
    bf16_tflops: float
    usd_per_hour: float


GPUS: dict[str, GPU] = {g.name.lower(): g for g in [
    GPU("A100-80GB", 80, 2.04, 312, 1.80),
    GPU("H100-80GB", 80, 3.35, 989, 2.50),
    GPU("H200-141GB", 141, 4.8, 989, 3.50),
    GPU("B200-192GB", 192, 8.0, 2250, 5.50),
    GPU("L40S", 48, 0.864, 362, 1.00),
    GPU("L4", 24, 0.30, 121, 0.50),
    GPU("MI300X", 192, 5.3, 1307, 2.50),
]}

_GPU_ALIASES = {"a100": "a100-80gb", "h100": "h100-80gb", "h200": "h200-141gb", "b200": "b200-192gb"}


def find_model(name_or_path: str) -> ModelArch:
    """A catalog model by name (case-insensitive) or a Hugging Face config.json."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.is_file():
        return arch_from_hf_config(p)
    m = MODELS.get(name_or_path.lower())
    if m is None:
        known = ", ".join(sorted(x.name for x in MODELS.values()))
        raise InvalidRequest(f"unknown model {name_or_path!r}; known: {known} (or a config.json path)", param="--model")
    return m


def find_gpu(name: str) -> GPU:
    key = _GPU_ALIASES.get(name.lower(), name.lower())
    g = GPUS.get(key)
    if g is None:
        known = ", ".join(x.name for x in GPUS.values())
        raise InvalidRequest(f"unknown GPU {name!r}; known: {known}", param="--gpu")
    return g


def arch_from_hf_config(path: Path) -> ModelArch:
    """Read the attention shape from a Hugging Face ``config.json``."""
    if not path.is_file():
        raise InvalidRequest(f"config file not found: {path}", param="--model")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{path} is not valid JSON: {exc}", param="--model") from None
    try:
        layers = int(cfg["num_hidden_layers"])
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
    except KeyError as exc:
        raise InvalidRequest(f"{path} lacks {exc.args[0]!r}", param="--model") from None
    kv = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    params = _estimate_params(cfg, layers, hidden, heads, kv, head_dim)
    # a folder is not a model's name; the config's own words are
    kind = (cfg.get("architectures") or [None])[0] or cfg.get("model_type") or "model"
    arch = ModelArch(
        name=cfg.get("_name_or_path") or f"{kind} ({params[0]:.1f}B, from {path.name})",
        layers=layers, hidden=hidden, heads=heads, kv_heads=kv, head_dim=head_dim,
        params_b=params[0], active_params_b=params[1],
        max_context=int(cfg.get("max_position_embeddings") or 131072),
    )
    if cfg.get("kv_lora_rank"):
        arch = replace(arch, attention="mla", kv_lora_rank=int(cfg["kv_lora_rank"]),
                       rope_head_dim=int(cfg.get("qk_rope_head_dim") or 64))
    return arch


def _estimate_params(cfg, layers, hidden, heads, kv, head_dim) -> tuple[float, float | None]:
    """Parameter count (billions) from the shapes; MoE gives (total, active)."""
    vocab = int(cfg.get("vocab_size") or 32000)
    inter = int(cfg.get("intermediate_size") or 4 * hidden)
    attn = hidden * head_dim * (heads + 2 * kv) + heads * head_dim * hidden
    experts = int(cfg.get("num_experts") or cfg.get("n_routed_experts") or 0)
    embed = vocab * hidden * (1 if cfg.get("tie_word_embeddings") else 2)
    if experts:
        moe_inter = int(cfg.get("moe_intermediate_size") or inter)
        per_tok = int(cfg.get("num_experts_per_tok") or 1) + int(cfg.get("n_shared_experts") or 0)
        total = layers * (attn + experts * 3 * hidden * moe_inter) + embed
        active = layers * (attn + per_tok * 3 * hidden * moe_inter) + embed
        return total / 1e9, active / 1e9
    return (layers * (attn + 3 * hidden * inter) + embed) / 1e9, None
