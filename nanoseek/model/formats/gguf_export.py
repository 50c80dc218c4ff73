"""nanoseek models as llama.cpp's GGUF files: tensor names, shapes and metadata for llama.cpp's loader,
written with the `gguf` package (llama.cpp's own writer; `pip install 'nanoseek[gguf]'`).

    from nanoseek.model.formats.gguf_export import write_gguf
    write_gguf(model, "out.q8_0.gguf", "q8_0", extra={"tokenizer.ggml.model": "gpt2", ...})

The command `nanoseek export gguf MODEL_DIR --out FILE --type f32|f16|q8_0|q4_0` (nanoseek/export/)
adds the tokenizer's metadata (`nanoseek.tokenizer.gguf_vocab.gguf_tokenizer_metadata`); the model
layer knows no tokens and takes them as a plain {key: value} dict.

What llama.cpp reads, per family (general.architecture):

  llama, qwen2, qwen3  (the dense GQA decoder, model/dense.py): the Hugging Face names of the reader
      (`gguf._BLOCK`, `gguf._GLOBAL`) turned around; for `llama` the Q and K rows of each head go into
      llama.cpp's order (`permute_rope`, the inverse of the reader's `unpermute_rope`): llama.cpp's
      llama rotates adjacent pairs, transformers' Llama the two halves. Qwen2/3 rotate halves in
      llama.cpp too (NEOX) and are written as they are. Linear rope scaling is rope.scaling.type/factor;
      Llama 3.1's is llama.cpp's `rope_freqs.weight`, per frequency the divisor of the plain angle
      (our reader and transformers' ignore that tensor; llama.cpp applies it).
  deepseek2  (our DeepSeek-V3 and V2, MLA + DeepSeekMoE): llama.cpp's MLA form, as its converter
      writes DeepSeek-V3 today: head_count_kv 1; key_length = kv_lora_rank + qk_rope_head_dim and
      value_length = kv_lora_rank (the cached latent), key_length_mla / value_length_mla the per-head
      sizes after decompression; kv_b_proj split per head into attn_k_b (H, R, Dn) (transposed) and
      attn_v_b (H, Dv, R), which llama.cpp folds into the query and the output as our absorbed form
      does. q_lora_rank is always written (0: a direct q_proj), so llama.cpp builds attn_q for any
      layer count (without the key it insists on q_lora_rank unless the model has V2-Lite's 26/27
      layers). Router: expert_gating_func sigmoid (V3) / softmax (V2), the V3 bias as exp_probs_b,
      expert_weights_norm = norm_topk_prob, expert_weights_scale = routed_scaling_factor, V3's group
      limit as expert_group_count / expert_group_used_count. DeepSeek rotates interleaved pairs,
      llama.cpp's "normal" rope: no permutation. MTP modules are not written (llama.cpp's deepseek2
      converter drops them too).

Refused, each as one CheckpointError line: another family; `moe_layer_freq` != 1 (llama.cpp makes every
layer after the leading dense ones MoE); V2's group_limited_greedy with a real group limit (llama.cpp
scores a group by its top-2 experts, V2 by its best one); a qwen3 with attention_bias (llama.cpp's
qwen3 has no o_proj bias: "wrong number of tensors"); other rope scaling (YaRN for deepseek2 is not
written yet).

Types as llama.cpp's converter chooses them: 1-D tensors, norms, biases and the router stay F32; the
rest take --type; a tensor whose rows are not a whole number of quantization blocks (32 numbers for
Q8_0/Q4_0) falls back to F16, as the converter's does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanoseek.model.errors import CheckpointError
from nanoseek.model.formats.gguf import _BLOCK, _GLOBAL, _gguf

TYPES = ("f32", "f16", "q8_0", "q4_0")  # --type choices: ggml type of the matrices
ARCHITECTURES = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "deepseek_v3": "deepseek2",
    "deepseek_v2": "deepseek2",
}

# HF name (without "model.") -> llama.cpp's: the reader's tables turned around
_DENSE_BLOCK = {hf: g for g, hf in _BLOCK.items()}
_DENSE_GLOBAL = {hf: g for g, hf in _GLOBAL.items()}
# DeepSeek's per-layer names (nanoseek's = transformers') -> llama.cpp's deepseek2 names
_DEEPSEEK_BLOCK = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.q_a_proj": "attn_q_a",
    "self_attn.q_a_layernorm": "attn_q_a_norm",
    "self_attn.q_b_proj": "attn_q_b",
    "self_attn.kv_a_proj_with_mqa": "attn_kv_a_mqa",
    "self_attn.kv_a_layernorm": "attn_kv_a_norm",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "mlp.gate": "ffn_gate_inp",
    "mlp.shared_experts.gate_proj": "ffn_gate_shexp",
    "mlp.shared_experts.up_proj": "ffn_up_shexp",
    "mlp.shared_experts.down_proj": "ffn_down_shexp",
    "mlp.experts.gate_proj": "ffn_gate_exps",  # stacked (E, in, out) in nanoseek
    "mlp.experts.up_proj": "ffn_up_exps",
    "mlp.experts.down_proj": "ffn_down_exps",
}
# rope scaling written as llama.cpp's per-frequency divisors (`rope_freqs.weight`), by architecture
_FREQ_FACTORS = {"llama": ("llama3",)}
_KEEP_F32 = re.compile(r"(_norm\.weight|\.bias|ffn_gate_inp\.weight)$")


def architecture(config, where: str | Path = "config.json") -> str:
    """llama.cpp's general.architecture for a nanoseek config; CheckpointError if it has none or a
    feature llama.cpp's graph for it lacks."""
    arch = ARCHITECTURES.get(config.model_type)
    if arch is None:
        problem = f"model_type: {config.model_type!r} cannot be exported to GGUF; supported: {', '.join(ARCHITECTURES)}"
        raise CheckpointError(where, problem, "model_type")
    if arch == "deepseek2":
        _check_deepseek(config, where)
    elif arch == "qwen3" and config.o_bias:  # q/k/v biases load, an o_proj bias does not
        problem = "attention_bias: llama.cpp's qwen3 has no attn_output.bias (it refuses the file); Qwen3 ships without"
        raise CheckpointError(where, problem, "attention_bias")
    elif config.rope_scaling and config.rope_scaling.get("rope_type") not in (
        "linear",
        *_FREQ_FACTORS.get(arch, ()),
    ):
        problem = (
            f"rope_scaling: {config.rope_scaling.get('rope_type')!r} is not exported to GGUF (only linear)"
        )
        raise CheckpointError(where, problem, "rope_scaling")
    return arch


def _check_deepseek(cfg, where) -> None:
    if cfg.is_moe and cfg.moe_layer_freq != 1:
        problem = f"moe_layer_freq: llama.cpp makes every layer after first_k_dense_replace MoE; got {cfg.moe_layer_freq}"
        raise CheckpointError(where, problem, "moe_layer_freq")
    grouped = cfg.is_moe and cfg.n_group > 1 and cfg.topk_group < cfg.n_group
    if grouped and cfg.topk_method == "group_limited_greedy":
        problem = "topk_method: group_limited_greedy with topk_group < n_group is not in llama.cpp (it scores groups by their top-2 experts, V3's rule)"
        raise CheckpointError(where, problem, "topk_method")
    if cfg.rope_scaling:
        problem = (
            f"rope_scaling: {cfg.rope_scaling.get('type')!r} is not exported to GGUF yet (plain rope only)"
        )
        raise CheckpointError(where, problem, "rope_scaling")


# ------------------------------------------------------------------------------ metadata
def metadata(config, arch: str) -> dict[str, Any]:
    """{GGUF key: value} of the model's hyperparameters (keys from gguf.Keys, for `arch`)."""
    K = _gguf().Keys
    a = lambda key: key.format(arch=arch)  # noqa: E731
    meta: dict[str, Any] = {
        a(K.LLM.CONTEXT_LENGTH): config.max_position_embeddings,
        a(K.LLM.EMBEDDING_LENGTH): config.hidden_size,
        a(K.LLM.FEED_FORWARD_LENGTH): config.intermediate_size,
        a(K.LLM.BLOCK_COUNT): config.num_hidden_layers,
        a(K.LLM.VOCAB_SIZE): config.vocab_size,
        a(K.Attention.HEAD_COUNT): config.num_attention_heads,
        a(K.Attention.LAYERNORM_RMS_EPS): float(config.rms_norm_eps),
        a(K.Rope.FREQ_BASE): float(config.rope_theta),
    }
    if arch == "deepseek2":
        return meta | _deepseek_metadata(config, a, K)
    meta |= {
        a(K.Attention.HEAD_COUNT_KV): config.num_key_value_heads,
        a(K.Attention.KEY_LENGTH): config.head_dim,
        a(K.Attention.VALUE_LENGTH): config.head_dim,
        a(K.Rope.DIMENSION_COUNT): config.head_dim,
    }
    if config.rope_scaling and config.rope_scaling["rope_type"] == "linear":  # llama3: rope_freqs.weight
        meta[a(K.Rope.SCALING_TYPE)] = "linear"
        meta[a(K.Rope.SCALING_FACTOR)] = float(config.rope_scaling["factor"])
    return meta


def _deepseek_metadata(cfg, a, K) -> dict[str, Any]:
    R = cfg.kv_lora_rank
    meta = {
        a(K.Attention.HEAD_COUNT_KV): 1,  # MLA decoded as MQA over the latent
        a(K.Attention.Q_LORA_RANK): cfg.q_lora_rank,
        a(K.Attention.KV_LORA_RANK): R,
        a(K.Attention.KEY_LENGTH): R + cfg.qk_rope_head_dim,
        a(K.Attention.VALUE_LENGTH): R,
        a(K.Attention.KEY_LENGTH_MLA): cfg.qk_nope_head_dim + cfg.qk_rope_head_dim,
        a(K.Attention.VALUE_LENGTH_MLA): cfg.v_head_dim,
        a(K.Rope.DIMENSION_COUNT): cfg.qk_rope_head_dim,
        a(K.LLM.LEADING_DENSE_BLOCK_COUNT): cfg.first_k_dense_replace
        if cfg.is_moe
        else cfg.num_hidden_layers,
        a(K.LLM.EXPERT_FEED_FORWARD_LENGTH): cfg.moe_intermediate_size
        if cfg.is_moe
        else cfg.intermediate_size,
        a(K.LLM.EXPERT_SHARED_COUNT): cfg.n_shared_experts if cfg.is_moe else 0,
    }
    if not cfg.is_moe:
        return meta
    gating = _gguf().ExpertGatingFuncType
    meta |= {
        a(K.LLM.EXPERT_COUNT): cfg.n_routed_experts,
        a(K.LLM.EXPERT_USED_COUNT): cfg.num_experts_per_tok,
        a(K.LLM.EXPERT_WEIGHTS_SCALE): float(cfg.routed_scaling_factor),
        a(K.LLM.EXPERT_WEIGHTS_NORM): bool(cfg.norm_topk_prob),
        a(K.LLM.EXPERT_GATING_FUNC): int(
            (gating.SIGMOID if cfg.scoring_func == "sigmoid" else gating.SOFTMAX).value
        ),
    }
    if cfg.topk_method == "noaux_tc" and cfg.n_group > 1 and cfg.topk_group < cfg.n_group:
        meta[a(K.LLM.EXPERT_GROUP_COUNT)] = cfg.n_group
        meta[a(K.LLM.EXPERT_GROUP_USED_COUNT)] = cfg.topk_group
    return meta


def put(writer, meta: dict[str, Any]) -> None:
    """Add {key: value} to a GGUFWriter with the types llama.cpp's loader checks: int -> uint32, float ->
    float32, bool, str, list (of str: strings; of int: int32)."""
    for key, value in meta.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, list | tuple):
            writer.add_array(key, list(value))
        else:
            raise TypeError(f"{key}: cannot write a {type(value).__name__} to GGUF")


# ------------------------------------------------------------------------------ tensors
def permute_rope(w: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's Q/K row order for its llama architecture: within each head, rows (2, d/2) -> (d/2, 2),
    the two rotated halves interleaved into adjacent pairs (the inverse of gguf.unpermute_rope)."""
    rows = w.shape[0]
    return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape).contiguous()


def gguf_tensors(model, arch: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(llama.cpp name, float tensor in llama.cpp's layout) for every tensor the file holds, made one
    at a time from the model's own (a view where no copy is needed)."""
    cfg = model.config
    if arch == "llama" and cfg.rope_scaling and cfg.rope_scaling["rope_type"] == "llama3":
        yield "rope_freqs.weight", rope_freq_factors(cfg)
    for name, t in model.state_dict().items():
        t = t.detach()
        if name.startswith("mtp.") or (name == "lm_head.weight" and cfg.tie_word_embeddings):
            continue  # MTP: llama.cpp's deepseek2 converter drops it too; a tied head: token_embd
        m = re.fullmatch(r"layers\.(\d+)\.(.+)\.(weight|bias|e_score_correction_bias|\w+_proj)", name)
        if m is None:
            yield _global_name(name), t
            continue
        blk, module, kind = f"blk.{m.group(1)}", m.group(2), m.group(3)
        if kind.endswith("_proj"):  # stacked experts, (E, in, out) -> (E, out, in)
            yield f"{blk}.{_DEEPSEEK_BLOCK[f'{module}.{kind}']}.weight", t.transpose(1, 2)
        elif arch != "deepseek2":
            if arch == "llama" and module in ("self_attn.q_proj", "self_attn.k_proj"):
                kv = module == "self_attn.k_proj"
                t = permute_rope(t, cfg.num_key_value_heads if kv else cfg.num_attention_heads)
            yield f"{blk}.{_DENSE_BLOCK[module]}.{kind}", t
        elif kind == "e_score_correction_bias":
            yield f"{blk}.exp_probs_b.bias", t
        elif module == "self_attn.kv_b_proj":
            H, Dn, Dv = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.v_head_dim
            k_b, v_b = t.view(H, Dn + Dv, cfg.kv_lora_rank).split([Dn, Dv], dim=1)
            yield f"{blk}.attn_k_b.weight", k_b.transpose(1, 2)  # (H, R, Dn)
            yield f"{blk}.attn_v_b.weight", v_b  # (H, Dv, R)
        else:
            yield f"{blk}.{_DEEPSEEK_BLOCK[module]}.{kind}", t


def rope_freq_factors(cfg) -> torch.Tensor:
    """Llama 3.1's rope scaling as llama.cpp stores it: per frequency, the number its rope divides the
    plain angle by (plain inv_freq / scaled inv_freq; 1 for the high frequencies it keeps)."""
    from nanoseek.model.dense import rope_frequencies

    return rope_frequencies(cfg.replace(rope_scaling=None)) / rope_frequencies(cfg)


def _global_name(name: str) -> str:
    """embed_tokens.weight -> token_embd.weight, norm.weight -> output_norm.weight, lm_head.weight -> output.weight."""
    module, kind = name.rsplit(".", 1)
    return f"{_DENSE_GLOBAL[module if module == 'lm_head' else 'model.' + module]}.{kind}"


def ggml_type(name: str, shape: tuple[int, ...], qtype: str):
    """The ggml type llama.cpp's converter gives tensor `name` of `shape` under --type `qtype`."""
    T = _gguf().GGMLQuantizationType
    if len(shape) <= 1 or _KEEP_F32.search(name) or qtype == "f32":
        return T.F32
    if qtype in ("q8_0", "q4_0"):
        q = T.Q8_0 if qtype == "q8_0" else T.Q4_0
        if shape[-1] % _gguf().GGML_QUANT_SIZES[q][0] == 0:
            return q
    return T.F16  # f16, or rows that are not whole quantization blocks (the converter's fallback)


def encode(t: torch.Tensor, ggml_type) -> np.ndarray:
    """A tensor's bytes in `ggml_type` (F32, F16, or quantized blocks by gguf.quants.quantize)."""
    gguf = _gguf()
    T = gguf.GGMLQuantizationType
    x = np.ascontiguousarray(t.float().numpy())
    if ggml_type == T.F32:
        return x
    if ggml_type == T.F16:
        return x.astype(np.float16)
    return gguf.quants.quantize(x, ggml_type)


def _nbytes(shape: tuple[int, ...], ggml_type) -> int:
    return int(np.prod(_gguf().quant_shape_to_byte_shape(shape, ggml_type)))


def file_type(qtype: str):
    F = _gguf().LlamaFileType
    return {"f32": F.ALL_F32, "f16": F.MOSTLY_F16, "q8_0": F.MOSTLY_Q8_0, "q4_0": F.MOSTLY_Q4_0}[qtype]


def write_gguf(
    model,
    out: str | Path,
    qtype: str = "f16",
    extra: dict[str, Any] | None = None,
    name: str | None = None,
    where: str | Path = "config.json",
) -> Path:
    """Write `model` (a nanoseek model of a supported family) as a GGUF file at `out`, its matrices in
    `qtype` (TYPES) and `extra` metadata (the tokenizer's) beside its own; `where` is the file
    CheckpointError names for a config llama.cpp cannot run. The header goes first, then each tensor is
    converted and written in turn, so memory holds the model and one converted tensor. Returns `out`."""
    if qtype not in TYPES:
        raise ValueError(f"type: expected one of {', '.join(TYPES)}, got {qtype!r}")
    gguf = _gguf()
    arch = architecture(model.config, where)
    out = Path(out)
    writer = gguf.GGUFWriter(str(out), arch)
    try:
        writer.add_name(name or out.stem)
        writer.add_file_type(int(file_type(qtype).value))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        put(writer, metadata(model.config, arch) | (extra or {}))
        types = {}
        for tname, t in gguf_tensors(model, arch):
            shape = tuple(t.shape)
            types[tname] = ggml_type(tname, shape, qtype)
            writer.add_tensor_info(tname, shape, np.float32, _nbytes(shape, types[tname]), types[tname])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tname, t in gguf_tensors(model, arch):
            writer.write_tensor_data(encode(t, types[tname]))
    finally:
        writer.close()
    return out
