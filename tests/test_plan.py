"""The planner's math against hand-computed cases."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from ponder.errors import InvalidRequest
from ponder.capacity.capacity import (Deployment, Workload, kv_bytes_per_token, max_concurrent_requests,
                                  naive_kv_bytes_per_token, plan, what_ifs)
from ponder.capacity.catalog import ModelArch, find_gpu, find_model
from ponder.capacity.hosted import compare, load_prices


def test_llama_70b_gqa_kv_per_token():
    # 80 layers x 2 (K,V) x 8 KV heads x 128 head dim x 2 bytes
    assert kv_bytes_per_token(find_model("Llama-3.1-70B")) == 327_680


def test_45gb_holds_six_requests_of_22200_tokens():
    assert max_concurrent_requests(45e9, 22_200, 327_680) == 6


def test_qwen25_32b_kv_per_token_and_fp8_halves_it():
    m = find_model("Qwen2.5-32B")
    assert kv_bytes_per_token(m) == 262_144
    assert kv_bytes_per_token(m, "fp8") == 131_072
    assert kv_bytes_per_token(m, "int4") == 65_536


def test_mla_uses_compressed_latent():
    r1 = find_model("DeepSeek-R1")
    # 61 layers x (512 latent + 64 rope) x 2 bytes
    assert kv_bytes_per_token(r1) == 61 * 576 * 2 == 70_272
    assert naive_kv_bytes_per_token(r1) / kv_bytes_per_token(r1) > 10


def test_chat_era_estimate_overstates_gqa():
    m = find_model("Llama-3.1-70B")
    assert naive_kv_bytes_per_token(m) == 2 * 8192 * 80 * 2
    assert naive_kv_bytes_per_token(m) / kv_bytes_per_token(m) == 8


def test_plan_end_to_end_figures_are_consistent():
    arch = find_model("DeepSeek-R1-Distill-Qwen-32B")
    dep = Deployment(gpu=find_gpu("H100"), tp=2)
    work = Workload(input_tokens=1000, thinking_tokens=8000, answer_tokens=1000, target_qps=2)
    r = plan(arch, dep, work)
    # weights: 32.8e9 params x 2 bytes / 2 GPUs
    assert r.weights_gb_per_gpu == pytest.approx(32.8)
    # usable: 80 x 0.9 - 2 overhead - 32.8 weights
    assert r.kv_gb_per_gpu == pytest.approx(80 * 0.9 - 2 - 32.8)
    assert r.kv_gb_per_request == pytest.approx(10_000 * 262_144 / 1e9)
    assert r.max_concurrent_requests == int(r.kv_gb_per_replica // r.kv_gb_per_request)
    assert r.qps_per_replica == pytest.approx(r.max_concurrent_requests / r.time_to_answer_s)
    assert r.replicas * r.qps_per_replica >= 2 > (r.replicas - 1) * r.qps_per_replica
    assert r.gpus == 2 * r.replicas
    assert r.usd_per_month == pytest.approx(r.gpus * 2.50 * 730)


def test_moe_decode_reads_active_params_only():
    arch = find_model("Qwen3-30B-A3B")
    dense = replace(arch, active_params_b=None)
    dep = Deployment(gpu=find_gpu("H100"))
    work = Workload(thinking_tokens=2000)
    assert plan(arch, dep, work).decode_tokens_per_s_per_request > plan(dense, dep, work).decode_tokens_per_s_per_request


def test_weights_that_do_not_fit_say_by_how_much():
    with pytest.raises(InvalidRequest) as err:
        plan(find_model("Llama-3.1-70B"), Deployment(gpu=find_gpu("H100")), Workload())
    msg = str(err.value)
    assert "short by 71.2 GB" in msg and "--tp 4" in msg


def test_request_that_does_not_fit_kv():
    with pytest.raises(InvalidRequest, match="does not fit"):
        plan(find_model("Llama-3.1-8B"), Deployment(gpu=find_gpu("L4")), Workload(thinking_tokens=200_000))


def test_tp_must_divide_heads():
    with pytest.raises(InvalidRequest, match="does not divide"):
        plan(find_model("Llama-3.1-70B"), Deployment(gpu=find_gpu("H100"), tp=3), Workload())


def test_unknown_model_and_gpu():
    with pytest.raises(InvalidRequest, match="unknown model"):
        find_model("gpt-9")
    with pytest.raises(InvalidRequest, match="unknown GPU"):
        find_gpu("V100")


def test_kv_replicated_when_fewer_kv_heads_than_ranks():
    arch = find_model("Qwen2.5-7B")  # 4 KV heads
    r8 = plan(arch, Deployment(gpu=find_gpu("H100"), tp=4), Workload())
    # with TP=4 each rank holds one KV head: no replication
    assert r8.kv_gb_per_request == pytest.approx(10_000 * kv_bytes_per_token(arch) / 1e9)
    arch2 = ModelArch("toy", 28, 3584, 28, 2, 128, 7.6)
    r = plan(arch2, Deployment(gpu=find_gpu("H100"), tp=4), Workload())
    assert r.kv_gb_per_request == pytest.approx(2 * 10_000 * kv_bytes_per_token(arch2) / 1e9)


def test_what_ifs_move_the_right_way():
    arch, dep, work = find_model("QwQ-32B"), Deployment(gpu=find_gpu("H100"), tp=2), Workload(target_qps=2)
    rows = dict(what_ifs(arch, dep, work))
    base = rows["baseline"]
    assert rows["kv fp8"].max_concurrent_requests >= 2 * base.max_concurrent_requests - 1
    assert rows["thinking cap 2000"].time_to_answer_s < base.time_to_answer_s
    assert rows["route 50% to fast lane"].gpus <= base.gpus
    assert rows["speculative decoding x2"].time_to_answer_s == pytest.approx(
        base.prefill_s + (base.time_to_answer_s - base.prefill_s) / 2)
    assert rows["best-of-4, shared prefix"].kv_gb_per_request < rows["best-of-4, no sharing"].kv_gb_per_request


def test_hf_config_json(tmp_path):
    cfg = {"num_hidden_layers": 80, "hidden_size": 8192, "num_attention_heads": 64, "num_key_value_heads": 8,
           "intermediate_size": 28672, "vocab_size": 128256}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    arch = find_model(str(p))
    assert kv_bytes_per_token(arch) == 327_680
    assert arch.params_b == pytest.approx(70.6, rel=0.02)


def test_hosted_compare_with_routing():
    table = load_prices()
    rows = {r["name"]: r for r in compare(table, requests_per_month=1e6, input_tokens=1000, thinking_tokens=10_000,
                                          answer_tokens=1000, fast_share=0.5)}
    r1 = rows["DeepSeek R1 (hosted)"]
    assert r1["usd_per_month"] == pytest.approx(1e6 * (1000 * 0.55 + 11_000 * 2.19) / 1e6)
    assert r1["usd_per_month_routed"] < r1["usd_per_month"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ponder.cli", "plan", *args], capture_output=True, text=True, timeout=60)


def test_cli_json_and_errors():
    p = cli("--model", "Llama-3.1-70B", "--gpu", "H100", "--tp", "4", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["kv_bytes_per_token"] == 327_680
    p = cli("--model", "Llama-3.1-70B", "--gpu", "H100", "--tp", "1")
    assert p.returncode == 2 and "short by" in p.stderr and "Traceback" not in p.stderr
    p = cli("--model", "Llama-3.1-70B", "--gpu", "H100", "--tp", "3")
    assert p.returncode == 2 and "--tp" in p.stderr
    p = cli("cost", "--requests-per-month", "1000", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["hosted"]


def test_without_tp_the_smallest_that_fits_is_chosen_and_said():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "ponder.cli", "plan", "--model", "Llama-3.1-70B", "--gpu", "H100-80GB"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "TP=4 chosen" in r.stderr and "TP=4" in r.stdout
    assert "per request at full load" in r.stdout and "$/month (24/7" in r.stdout
    from ponder.capacity.capacity import Deployment, Workload, smallest_tp

    tp, why = smallest_tp(find_model("Llama-3.1-70B"), Deployment(gpu=find_gpu("H100-80GB")), Workload())
    assert tp == 4
    with pytest.raises(Exception):  # TP=2 is too small: the choice is the smallest that fits
        plan(find_model("Llama-3.1-70B"), Deployment(gpu=find_gpu("H100-80GB"), tp=2), Workload())


def test_mla_has_no_kv_heads_replication_note():
    r = plan(find_model("DeepSeek-R1"), Deployment(gpu=find_gpu("H200"), tp=8, weights_dtype="fp8"), Workload())
    assert any(n.startswith("MLA") for n in r.notes)
    assert not any("KV heads" in n for n in r.notes)


def test_a_config_json_model_is_named_by_its_config_not_its_folder(tmp_path):
    cfg = {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 32, "hidden_size": 4096,
           "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256}
    d = tmp_path / "snapshots-abc123"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    arch = find_model(str(d / "config.json"))
    assert "snapshots-abc123" not in arch.name and arch.name.startswith("LlamaForCausalLM (8.0B")
    cfg["_name_or_path"] = "meta-llama/Llama-3.1-8B"
    (d / "config.json").write_text(json.dumps(cfg))
    assert find_model(str(d / "config.json")).name == "meta-llama/Llama-3.1-8B"
