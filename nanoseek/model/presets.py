"""The size ladder: model shapes from a ~1M-parameter toy to DeepSeek-V3's 671B.

    cfg = preset("d4")                  # a named rung
    cfg = config_for_depth(6)           # or any depth: the one size knob, as in nanochat

`config_for_depth` derives every width from the number of layers d (nanochat's rule of a 64-wide
residual stream per layer), with DeepSeek-V3's proportions where they make sense at small scale:

    hidden C = 64 d,  heads H = max(2, d),  d_nope = d_v = C / H,  d_rope = d_nope / 2
    kv_lora_rank = max(32, C / 4), q_lora_rank = 3 x kv_lora_rank from d >= 16 (direct q_proj below)
    routed experts E = 8 (d < 8), 16 (d < 16), 64 after; K = E / 4; groups G = E / 4, top groups G / 2
    expert width = C / 4; dense MLP width = 8C / 3; first layer dense, the rest MoE; 1 shared expert

The `v3-671b` rung is DeepSeek-V3's published config, for `nanoseek info` (you cannot train it here).

Every DeepSeek rung has a `-vllm` twin (`d2-vllm`, ..., `vllm_compatible(cfg)`) with the MLA shapes
the other engines run: kv_lora_rank 512 + qk_rope_head_dim 64 (the latent width 576 that vLLM's MLA
decode kernels take, the only one on its CPU backend; DeepSeek-V2/V3's own) and a low-rank query
(q_lora_rank > 0: llama.cpp's deepseek2 loader refuses a direct q_proj unless the model has 26 or 27
layers). The small rungs pay for it in parameters and latent-cache bytes; docs/engine.md ("vLLM
backend") has the measured cost on the speedrun's model.

`dense_config_for_depth` is the same ladder for a dense GQA decoder shaped like llama, qwen2 or qwen3
(the families' own distinctive parts: qwen2's q/k/v bias, qwen3's q/k norm): hidden C = 64 d, heads
H = max(2, d) of D = C / H, G = max(1, H / 2) key/value heads (GQA ratio 2), SwiGLU width 8C / 3, rope
theta 10^4 (llama) or 10^6 (the Qwens); the head is tied to the embedding when asked (qwen2's default,
as in Qwen2.5's small sizes).
"""

from __future__ import annotations

from nanoseek.model.config import ModelConfig
from nanoseek.model.dense import DenseConfig


def config_for_depth(
    depth: int, vocab_size: int = 512, max_position_embeddings: int = 1024, mtp: int = 1
) -> ModelConfig:
    C = 64 * depth
    H = max(2, depth)
    head = C // H
    kv_lora = max(32, C // 4)
    experts = 8 if depth < 8 else 16 if depth < 16 else 64
    return ModelConfig(
        vocab_size=vocab_size,
        hidden_size=C,
        intermediate_size=(8 * C // 3 + 63) // 64 * 64,
        moe_intermediate_size=C // 4,
        num_hidden_layers=depth,
        num_attention_heads=H,
        q_lora_rank=3 * kv_lora if depth >= 16 else 0,
        kv_lora_rank=kv_lora,
        qk_nope_head_dim=head,
        qk_rope_head_dim=max(8, head // 2),
        v_head_dim=head,
        n_routed_experts=experts,
        n_shared_experts=1,
        num_experts_per_tok=experts // 4,
        n_group=max(1, experts // 4),
        topk_group=max(1, experts // 8),
        routed_scaling_factor=1.0,
        first_k_dense_replace=1,
        num_nextn_predict_layers=mtp,
        max_position_embeddings=max_position_embeddings,
    )


V3_671B = ModelConfig(
    vocab_size=129280,
    hidden_size=7168,
    intermediate_size=18432,
    moe_intermediate_size=2048,
    num_hidden_layers=61,
    num_attention_heads=128,
    q_lora_rank=1536,
    kv_lora_rank=512,
    qk_nope_head_dim=128,
    qk_rope_head_dim=64,
    v_head_dim=128,
    n_routed_experts=256,
    n_shared_experts=1,
    num_experts_per_tok=8,
    n_group=8,
    topk_group=4,
    routed_scaling_factor=2.5,
    first_k_dense_replace=3,
    num_nextn_predict_layers=1,
    max_position_embeddings=163840,
    rope_theta=10000.0,
    rope_scaling={
        "type": "yarn",
        "factor": 40,
        "original_max_position_embeddings": 4096,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    },
    bos_token_id=0,
    eos_token_id=1,
)

# the MLA latent width vLLM's CPU MLA backend and its GPU decode kernels take (kv_lora_rank + rope)
VLLM_KV_LORA_RANK, VLLM_ROPE_HEAD_DIM = 512, 64


def vllm_compatible(cfg: ModelConfig) -> ModelConfig:
    """`cfg` with MLA shapes that vLLM (its MLA path), SGLang and llama.cpp all run: kv_lora_rank 512,
    qk_rope_head_dim 64, and q_lora_rank 3/4 of the hidden width where the query had no low-rank
    projection (the ladder's own q_lora_rank = 3 x kv_lora_rank = 3C/4 from d16 on); the rest
    (widths, heads, experts, the nope and value head dims) unchanged."""
    return cfg.replace(
        kv_lora_rank=VLLM_KV_LORA_RANK,
        qk_rope_head_dim=VLLM_ROPE_HEAD_DIM,
        q_lora_rank=cfg.q_lora_rank or 3 * cfg.hidden_size // 4,
    )


PRESETS: dict[str, ModelConfig] = {
    "d2": config_for_depth(2),  # 0.5M + 0.2M MTP: the toy that tests and the speedrun build on
    "d4": config_for_depth(4, vocab_size=4096),  # ~5M
    "d6": config_for_depth(6, vocab_size=8192),  # ~17M
    "d10": config_for_depth(10, vocab_size=16384),  # ~90M
    "d16": config_for_depth(16, vocab_size=32768, max_position_embeddings=4096),  # ~0.9B: one GPU
    "d20": config_for_depth(20, vocab_size=65536, max_position_embeddings=4096),  # ~1.8B: one GPU, long
    "d32": config_for_depth(32, vocab_size=129280, max_position_embeddings=4096),  # ~7.4B: an 8-GPU node
    "v3-671b": V3_671B,
}
PRESETS |= {f"{name}-vllm": vllm_compatible(cfg) for name, cfg in list(PRESETS.items()) if name[0] == "d"}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} (or a model directory)")
    return PRESETS[name].replace()


def dense_config_for_depth(
    depth: int,
    model_type: str = "llama",
    vocab_size: int = 512,
    max_position_embeddings: int = 1024,
    kv_heads: int | None = None,
    tie_word_embeddings: bool | None = None,
) -> DenseConfig:
    C = 64 * depth
    H = max(2, depth)
    return DenseConfig(
        model_type=model_type,
        vocab_size=vocab_size,
        hidden_size=C,
        intermediate_size=(8 * C // 3 + 63) // 64 * 64,
        num_hidden_layers=depth,
        num_attention_heads=H,
        num_key_value_heads=kv_heads or max(1, H // 2),
        head_dim=C // H,
        max_position_embeddings=max_position_embeddings,
        rope_theta=10000.0 if model_type == "llama" else 1000000.0,
        tie_word_embeddings=model_type == "qwen2" if tie_word_embeddings is None else tie_word_embeddings,
    )
