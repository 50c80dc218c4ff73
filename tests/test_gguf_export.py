"""`nanoseek export gguf`: the files read back as the models and tokenizers they came from.

No llama.cpp here (bench/llamacpp_check.py runs the files in it): a tiny llama / qwen2 / qwen3 written to
GGUF and read again by our reader (nanoseek.model.formats.gguf) and by transformers' GGUF loader gives
the original logits (f32 exactly, f16/q8_0 within their rounding); DeepSeek's tensors have the shapes
llama.cpp's deepseek2 loader creates (src/models/deepseek2.cpp) and put back together give the model's;
the vocabulary read back encodes as the tokenizer did; bad input is one line.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_gguf_export.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf")
pytestmark = pytest.mark.usefixtures("one_thread")

from helpers import build_checkpoint, make_tokenizer  # noqa: E402

from nanoseek.model import CheckpointError, from_pretrained  # noqa: E402
from nanoseek.model.formats.gguf import open_reader, unpermute_rope  # noqa: E402
from nanoseek.model.formats.gguf_export import permute_rope, write_gguf  # noqa: E402


def logits(model, ids):
    with torch.no_grad():
        return model.eval()(ids)


@pytest.fixture(scope="module")
def deepseek_dir(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("ds") / "model", seed=3)


# ------------------------------------------------------------------------------ dense families
def plain_rope(model):
    """The model with rope scaling off (Llama 3.1's is refused: test_llama3_rope_scaling_is_refused...)."""
    if not model.config.rope_scaling:
        return model
    state = model.state_dict()
    model.config.rope_scaling = None
    plain = type(model)(model.config).eval()
    plain.load_state_dict(state)
    return plain


@pytest.mark.parametrize("name", ["llama", "llama_tied", "qwen2", "qwen3"])
def test_dense_gguf_reads_back_as_the_model(hf_dense_dirs, tmp_path, name):
    model = from_pretrained(hf_dense_dirs[name])
    if name == "llama":
        model = plain_rope(model)
    if name == "qwen3":  # without its bias (llama.cpp's qwen3 has no o_proj bias: refused below)
        state = {k: v for k, v in model.state_dict().items() if not k.endswith("_proj.bias")}
        model = type(model)(model.config.replace(attention_bias=False)).eval()
        model.load_state_dict(state)
    ids = torch.randint(0, model.config.vocab_size, (2, 13), generator=torch.Generator().manual_seed(0))
    want = logits(model, ids)
    scale = want.abs().max().item()
    for qtype, tol in (("f32", 1e-5), ("f16", 2e-2), ("q8_0", 0.1), ("q4_0", None)):
        back = from_pretrained(write_gguf(model, tmp_path / f"m.{qtype}.gguf", qtype))
        assert back.config.model_type == model.config.model_type
        if tol is not None:  # f32 is the same numbers; f16 and q8_0 round each weight
            assert (logits(back, ids) - want).abs().max().item() <= tol * scale, qtype
    types = {t.name: t.tensor_type.name for t in open_reader(tmp_path / "m.q4_0.gguf").tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_0" and types["blk.0.attn_norm.weight"] == "F32"


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3"])
def test_transformers_loads_our_gguf_with_our_logits(hf_dense_builder, tmp_path, name):
    transformers = pytest.importorskip("transformers")
    # transformers' GGUF loader reads no rope scaling, no qwen3.attention.key_length (it takes
    # Qwen3Config's default head_dim, 128) and no bias of qwen3: plain rope, and a qwen3 as Qwen3 ships
    qwen3 = dict(
        hidden_size=256, num_attention_heads=2, num_key_value_heads=1, head_dim=128, attention_bias=False
    )
    hf_dir = hf_dense_builder(tmp_path / "hf", name, 1, **(qwen3 if name == "qwen3" else {}))
    model = plain_rope(from_pretrained(hf_dir))
    (tmp_path / "out").mkdir()
    write_gguf(model, tmp_path / "out" / "m.gguf", "f32")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", gguf_file="m.gguf", dtype=torch.float32
    ).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(theirs(ids).logits, logits(model, ids), atol=1e-4)


def test_llama_rows_go_into_llama_cpps_pair_order():
    # one head of dimension 4, rows [x0 x1 | x2 x3] (two rotated halves) -> pairs (x0 x2), (x1 x3)
    w = torch.arange(8.0).view(4, 2)
    assert permute_rope(w, 1)[:, 0].tolist() == [0.0, 4.0, 2.0, 6.0]
    w = torch.randn(3 * 8, 5)
    assert torch.equal(unpermute_rope(permute_rope(w, 3), 3), w)


# ------------------------------------------------------------------------------ deepseek2
def test_deepseek_tensors_have_llama_cpps_shapes_and_hold_the_model(deepseek_dir, tmp_path):
    from nanoseek.export.llamacpp import export_gguf

    model = from_pretrained(deepseek_dir)
    cfg = model.config
    reader = open_reader(export_gguf(deepseek_dir, tmp_path / "ds.gguf", "f32"))
    meta = {k: f.contents() for k, f in reader.fields.items() if k.startswith("deepseek2.")}
    H, R, Dn, Dr, Dv = (
        cfg.num_attention_heads,
        cfg.kv_lora_rank,
        cfg.qk_nope_head_dim,
        cfg.qk_rope_head_dim,
        cfg.v_head_dim,
    )
    assert meta["deepseek2.attention.key_length"] == R + Dr and meta["deepseek2.attention.value_length"] == R
    assert meta["deepseek2.attention.key_length_mla"] == Dn + Dr
    assert meta["deepseek2.attention.value_length_mla"] == Dv
    assert meta["deepseek2.attention.q_lora_rank"] == 0 and meta["deepseek2.attention.head_count_kv"] == 1
    assert meta["deepseek2.expert_gating_func"] == 2  # sigmoid
    assert meta["deepseek2.leading_dense_block_count"] == cfg.first_k_dense_replace
    tensors = {t.name: t for t in reader.tensors}
    # ggml dimensions (fastest first) as llama_model_deepseek2::load_arch_tensors creates them
    E, F, C = cfg.n_routed_experts, cfg.moe_intermediate_size, cfg.hidden_size
    expected = {
        "blk.0.attn_q.weight": [C, H * (Dn + Dr)],
        "blk.0.attn_kv_a_mqa.weight": [C, R + Dr],
        "blk.0.attn_k_b.weight": [Dn, R, H],
        "blk.0.attn_v_b.weight": [R, Dv, H],
        "blk.0.attn_output.weight": [H * Dv, C],
        "blk.1.ffn_gate_inp.weight": [C, E],
        "blk.1.exp_probs_b.bias": [E],
        "blk.1.ffn_gate_exps.weight": [C, F, E],
        "blk.1.ffn_down_exps.weight": [F, C, E],
        "blk.1.ffn_up_shexp.weight": [C, F * cfg.n_shared_experts],
    }
    for name, shape in expected.items():
        assert [int(d) for d in tensors[name].shape] == shape, name
    data = lambda name: torch.from_numpy(tensors[name].data.copy())  # noqa: E731  (numpy: slowest first)
    attn = model.layers[0].self_attn
    k_b, v_b = data("blk.0.attn_k_b.weight"), data("blk.0.attn_v_b.weight")  # (H, R, Dn), (H, Dv, R)
    kv_b = torch.cat([k_b.transpose(1, 2), v_b], dim=1).reshape(H * (Dn + Dv), R)
    assert torch.equal(kv_b, attn.kv_b_proj.weight)
    experts = model.layers[1].mlp.experts
    assert torch.equal(data("blk.1.ffn_gate_exps.weight"), experts.gate_proj.transpose(1, 2))
    assert torch.equal(data("blk.1.ffn_down_exps.weight"), experts.down_proj.transpose(1, 2))
    bias = model.layers[1].mlp.gate.e_score_correction_bias
    assert torch.equal(data("blk.1.exp_probs_b.bias"), bias)


def test_deepseek_q8_0_quantizes_the_matrices_whose_rows_are_whole_blocks(deepseek_dir, tmp_path):
    from nanoseek.export.llamacpp import export_gguf

    reader = open_reader(export_gguf(deepseek_dir, tmp_path / "ds.gguf", "q8_0"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0"  # rows of hidden_size 32
    assert types["blk.0.attn_k_b.weight"] == "F16"  # rows of qk_nope_head_dim 8: the converter's fallback
    assert types["blk.1.ffn_gate_inp.weight"] == "F32" and types["output_norm.weight"] == "F32"


# ------------------------------------------------------------------------------ tokenizer
def test_our_tokenizer_round_trips_through_gguf_metadata(tmp_path):
    from nanoseek.tokenizer.gguf_vocab import PROBE, gguf_tokenizer_metadata, tokenizer_from_gguf

    tok = make_tokenizer(tmp_path)
    meta = gguf_tokenizer_metadata(tok, tok.vocab_size + 3)
    assert meta["tokenizer.ggml.pre"] == "dbrx"  # GPT-4's split, merges applied: llama.cpp's DBRX
    assert meta["tokenizer.ggml.tokens"][-1] == f"[PAD{tok.vocab_size + 2}]"
    assert meta["tokenizer.ggml.token_type"][tok.bos_id] == 3  # control
    assert meta["tokenizer.ggml.token_type"][tok.think_id] == 4  # user-defined: always whole
    assert meta["tokenizer.ggml.add_bos_token"] is True
    assert "<｜Assistant｜>" in meta["tokenizer.chat_template"]
    back = tokenizer_from_gguf(meta)
    chat = "<｜User｜>What is 12 + 34?<｜Assistant｜><think>I add</think>46 🙂"
    for text in (PROBE, chat, "the cat sat on the mat. 1234567890\n\n  x"):
        ids = tok.encode(text)
        assert back.encode(text, add_special_tokens=False).ids == ids, text
        assert back.decode(ids, skip_special_tokens=False) == text


@pytest.mark.parametrize(
    "pre_tokenizer, expected",
    [
        ("bytelevel", "gpt2"),
        ("digits", "smollm"),
        ("whitespace", None),  # a split llama.cpp has no name for
    ],
)
def test_the_declared_pre_tokenizer_is_the_one_that_gives_the_same_ids(tmp_path, pre_tokenizer, expected):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from nanoseek.tokenizer import Tokenizer
    from nanoseek.tokenizer.gguf_vocab import gguf_tokenizer_metadata

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pre = {
        "bytelevel": byte_level,
        "digits": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]),
        "whitespace": pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.ByteLevel(use_regex=False)]
        ),
    }[pre_tokenizer]
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer, hf.decoder = pre, decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(["It's 2024, and 12345 cats sat on 678 mats. Don't they?\n  x = 1"] * 50, trainer)
    tok = Tokenizer(hf, config={"eos_token": "<|end|>", "chat_template": "{{ messages[0]['content'] }}"})
    if expected is None:
        with pytest.raises(CheckpointError, match="pre_tokenizer: none of llama.cpp's pre-tokenizers"):
            gguf_tokenizer_metadata(tok)
    else:
        assert gguf_tokenizer_metadata(tok)["tokenizer.ggml.pre"] == expected


# ------------------------------------------------------------------------------ the command and its errors
def nanoseek(capsys, *argv) -> tuple[int, str, str]:
    from nanoseek.cli import main

    code = main(["export", "gguf", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_writes_a_file_and_refuses_to_overwrite_it(deepseek_dir, tmp_path, capsys):
    out = tmp_path / "ds.q8_0.gguf"
    code, printed, _ = nanoseek(capsys, deepseek_dir, "--out", out, "--type", "q8_0")
    assert code == 0 and out.is_file() and "q8_0" in printed
    size = out.stat().st_size
    code, _, err = nanoseek(capsys, deepseek_dir, "--out", out)
    assert code == 2 and err.count("\n") == 1 and "already exists" in err
    assert out.stat().st_size == size


def test_an_unknown_type_is_a_usage_error(deepseek_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        nanoseek(capsys, deepseek_dir, "--out", tmp_path / "x.gguf", "--type", "q2_k")
    assert exit_.value.code == 2 and "invalid choice: 'q2_k'" in capsys.readouterr().err


def test_an_unexportable_model_is_one_line_and_leaves_no_file(tmp_path, capsys):
    from nanoseek.model import DeepSeekV3, ModelConfig

    bad = tmp_path / "every_other_layer"  # llama.cpp makes every layer after the dense ones MoE
    DeepSeekV3(ModelConfig(num_hidden_layers=3, first_k_dense_replace=0, moe_layer_freq=2)).save_pretrained(
        bad
    )
    code, _, err = nanoseek(capsys, bad, "--out", tmp_path / "x.gguf")
    assert code == 2 and err.count("\n") == 1
    assert "config.json: moe_layer_freq:" in err and not list(tmp_path.glob("x.gguf*"))


def test_llama3_rope_scaling_is_written_as_llama_cpps_frequency_divisors(hf_dense_dirs, tmp_path):
    model = from_pretrained(hf_dense_dirs["llama"])  # factor 8, low/high_freq_factor 1/4, original 32
    reader = open_reader(write_gguf(model, tmp_path / "m.gguf", "f32"))
    factors = next(t for t in reader.tensors if t.name == "rope_freqs.weight").data
    assert len(factors) == model.config.head_dim // 2
    # the fastest rotation (wavelength 2 pi < 32 / 4) is kept, the slowest (wavelength > 32 / 1) divided by 8
    assert factors[0] == pytest.approx(1.0) and factors[-1] == pytest.approx(8.0)
    assert all(1.0 - 1e-6 <= f <= 8.0 + 1e-5 for f in factors)
    assert "llama.rope.scaling.type" not in reader.fields  # the divisors are the whole scaling


def test_a_qwen3_with_an_o_proj_bias_is_refused(hf_dense_dirs):
    model = from_pretrained(hf_dense_dirs["qwen3"])  # attention_bias: q/k/v/o
    with pytest.raises(CheckpointError, match="attention_bias: llama.cpp's qwen3 has no attn_output.bias"):
        write_gguf(model, Path("/nonexistent/never_written.gguf"))


def test_a_rope_scaling_llama_cpp_has_no_place_for_is_refused():
    from nanoseek.model import DenseConfig, DenseTransformer

    rope = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0)
    model = DenseTransformer(
        DenseConfig(model_type="qwen2", rope_scaling=rope | {"original_max_position_embeddings": 32})
    )
    with pytest.raises(CheckpointError, match="rope_scaling: 'llama3' is not exported"):
        write_gguf(model, Path("/nonexistent/never_written.gguf"))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
