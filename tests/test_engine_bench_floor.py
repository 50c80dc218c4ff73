"""bench/engine_bench.py's memory-bandwidth floor in small: the bytes one batch-1 decode step reads
(tied and untied heads, int8, MoE's active experts) and the verdict on 3x transformers. The full
bench is `python bench/engine_bench.py`; docs/engine.md ("Dense families")."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
from helpers import tiny_config

from nanoseek.engine.quant import quantize_int8, weight_bytes
from nanoseek.model import DeepSeekV3
from nanoseek.model.dense import DenseConfig, DenseTransformer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import engine_bench  # noqa: E402  (bench/engine_bench.py)


def dense(tied: bool) -> DenseTransformer:
    cfg = DenseConfig(
        model_type="qwen2",
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        tie_word_embeddings=tied,
    )
    return DenseTransformer(cfg).eval()


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def test_a_step_reads_every_weight_but_the_embedding_rows_it_does_not_look_up():
    tied, untied = dense(True), dense(False)
    embed = nbytes(tied.embed_tokens.weight)
    assert engine_bench.step_bytes(tied) == weight_bytes(tied)  # the tied head reads the table whole
    assert engine_bench.step_bytes(untied) == weight_bytes(untied) - embed
    for model in (tied, untied):  # int8: the head's own int8 copy is read, the fp32 table is not
        q = quantize_int8(copy.deepcopy(model))  # in place
        assert engine_bench.step_bytes(q) == weight_bytes(q) - embed
        assert engine_bench.step_bytes(q) < engine_bench.step_bytes(model) / 2


def test_a_moe_step_reads_only_the_experts_a_token_runs():
    model = DeepSeekV3(tiny_config()).eval()
    moes = model.moe_layers()
    assert moes
    experts = sum(weight_bytes(m.experts) for m in moes)
    cfg = moes[0].cfg
    unread = experts * (1 - cfg.num_experts_per_tok / cfg.n_routed_experts)
    full = weight_bytes(model) - nbytes(model.embed_tokens.weight)
    assert abs(engine_bench.step_bytes(model) - (full - unread)) <= len(moes)


def test_the_floor_says_when_3x_in_fp32_is_impossible(capsys):
    models = {"fp32": dense(True), "int8": quantize_int8(dense(True))}
    fp32_bytes = engine_bench.step_bytes(models["fp32"])
    bandwidths = [fp32_bytes / 0.010, fp32_bytes / 0.020]  # the fp32 floor: 10 ms, then 20 ms a step
    runs = {"transformers": [1 / 0.050, 1 / 0.100], "engine fp32": [1 / 0.020, 1 / 0.040]}
    slow = engine_bench.print_floor(models, runs, bandwidths)
    assert slow["three_x_fp32_possible"]  # transformers at 5x the floor in each repeat
    assert abs(slow["x_floor"]["engine fp32"] - 2.0) < 1e-9  # paired: 2x in each repeat
    fast = engine_bench.print_floor(models, {"transformers": [1 / 0.020, 1 / 0.040]}, bandwidths)
    assert not fast["three_x_fp32_possible"]  # 2x the floor: 3x would be 0.67x of it
    assert "physically impossible" in capsys.readouterr().out
    assert engine_bench.copy_bandwidth(mib=8, repeats=3) > 0


def test_at_batch_16_the_floor_is_the_arithmetic_when_it_outweighs_the_reads(capsys):
    models = {"fp32": dense(True), "int8": quantize_int8(dense(True))}
    fp32_bytes = engine_bench.step_bytes(models["fp32"])
    flops = engine_bench.step_flops(models["fp32"])
    assert flops == 2 * fp32_bytes / 4  # two FLOPs per fp32 weight a token multiplies
    bandwidths = [fp32_bytes / 0.010] * 2  # reading the weights: 10 ms
    peak = 16 * flops / 0.040  # 16 tokens' matmuls at the peak: 40 ms, so the floor is 40 ms
    hf = {"transformers": [16 / 0.100] * 2}  # 100 ms a step: 2.5x the floor
    out = engine_bench.print_floor(models, hf, bandwidths, batch=16, peak=peak)
    assert abs(out["floor_ms"]["fp32"] - 40.0) < 1e-6
    assert abs(out["x_floor"]["transformers"] - 2.5) < 1e-9
    assert not out["three_x_fp32_possible"]  # 3x would be 33 ms, under the 40 ms of arithmetic
    assert abs(out["floor_ms"]["int8"] - 1e3 * engine_bench.step_bytes(models["int8"]) / bandwidths[0]) < 1e-6
    # the same step against memory alone (no peak given) is 10x its floor: 3x would be possible
    assert engine_bench.print_floor(models, hf, bandwidths, batch=16)["three_x_fp32_possible"]
