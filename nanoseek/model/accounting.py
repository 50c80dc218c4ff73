"""Parameter, FLOP and KV-cache accounting for a model config: the numbers a cost report needs.

    acct = account(cfg, seq_len=2048)            # a DeepSeek-V3 ModelConfig or a dense DenseConfig
    acct.total_params, acct.active_params, acct.train_flops_per_token, acct.mla_cache_bytes_per_token
    acct = account_of(model, seq_len=256)       # a model of any family (others: counted as dense)

Counts come from instantiating nothing: they are computed from the config's shapes, and a unit test
checks them against a real model's parameters.

Conventions (as nanochat and the PaLM paper count them):
- active parameters = everything a token touches: attention, dense MLPs, shared experts, the router,
  K of the E routed experts per MoE layer, norms, the embedding row and the head; the E-K idle
  experts are the only difference from the total.
- training FLOPs per token = 6 x (active matmul parameters: all active weights but the embedding
  table, which is a lookup) + 3 x attention, with forward attention = 2 x H x (d_qk + d_v) x seq_len
  per token per layer (QK^T and PV over the full context, not halved for causality).
- MTP modules are counted separately (they train, but a served model may drop them).
- A dense GQA config (llama, qwen2, qwen3: `dense.DenseConfig`) is counted by the same rules: its
  attention is q/k/v/o (+ biases, + qwen3's per-head q/k norms), forward attention 2 x H x 2D x
  seq_len per token per layer; its cache holds K and V of the G key/value heads, 2 G D per layer,
  which `kv_cache_bytes_per_token` reports (`mla_cache_bytes_per_token` is 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from nanoseek.model.config import ModelConfig


@dataclass
class Accounting:
    total_params: int  # main model, all experts
    active_params: int  # main model, per token
    mtp_params: int  # MTP modules, beyond the shared embedding and head
    embedding_params: int
    train_flops_per_token: float  # main model, forward + backward, at seq_len
    forward_flops_per_token: float
    mla_cache_bytes_per_token: int  # (R + Dr) x layers x dtype bytes
    mha_cache_bytes_per_token: int  # what caching full keys and values for the same heads would take
    seq_len: int
    dtype_bytes: int
    kv_cache_bytes_per_token: int = 0  # what the family's own cache holds (MLA: the latent; dense: K/V)


def _attention_params(cfg: ModelConfig) -> int:
    C, H = cfg.hidden_size, cfg.num_attention_heads
    if cfg.q_lora_rank:
        q = C * cfg.q_lora_rank + cfg.q_lora_rank + cfg.q_lora_rank * H * cfg.qk_head_dim
    else:
        q = C * H * cfg.qk_head_dim
    kv = C * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) + cfg.kv_lora_rank
    kv += cfg.kv_lora_rank * H * (cfg.qk_nope_head_dim + cfg.v_head_dim)
    return q + kv + H * cfg.v_head_dim * C


def _block_params(cfg: ModelConfig, moe: bool) -> tuple[int, int]:
    """(total, active) parameters of one transformer block, dense or MoE."""
    C = cfg.hidden_size
    attn = _attention_params(cfg) + 2 * C  # + the two norms
    if not moe:
        mlp = 3 * C * cfg.intermediate_size
        return attn + mlp, attn + mlp
    expert = 3 * C * cfg.moe_intermediate_size
    shared = cfg.n_shared_experts * expert + cfg.n_routed_experts * C  # shared experts + router
    return attn + shared + cfg.n_routed_experts * expert, attn + shared + cfg.num_experts_per_tok * expert


def _blocks_params(cfg: ModelConfig, start: int, count: int) -> tuple[int, int]:
    """(total, active) parameters of blocks start .. start+count-1. Counted per kind, not per layer, so
    a config of absurd depth is counted at once (the loader's memory check): the MoE layers are the
    multiples of moe_layer_freq in [max(start, first_k_dense_replace), start + count)."""
    n_moe = 0
    if cfg.is_moe:
        lo, hi, f = max(start, cfg.first_k_dense_replace), start + count, cfg.moe_layer_freq
        n_moe = max(0, (hi + f - 1) // f - (lo + f - 1) // f)
    n_dense = count - n_moe
    dense, moe = _block_params(cfg, False), _block_params(cfg, True)
    return n_dense * dense[0] + n_moe * moe[0], n_dense * dense[1] + n_moe * moe[1]


def account(cfg, seq_len: int | None = None, dtype_bytes: int = 2) -> Accounting:
    seq_len = seq_len or cfg.max_position_embeddings
    if _is_dense(cfg):
        return _account_dense(cfg, seq_len, dtype_bytes)
    C, V, H = cfg.hidden_size, cfg.vocab_size, cfg.num_attention_heads
    embedding = V * C
    head = 0 if cfg.tie_word_embeddings else V * C
    t, a = _blocks_params(cfg, 0, cfg.num_hidden_layers)
    total, active = embedding + head + C + t, embedding + head + C + a  # + final norm
    K = cfg.num_nextn_predict_layers
    mtp = _blocks_params(cfg, cfg.num_hidden_layers, K)[0] + K * (2 * C * C + 3 * C)  # eh_proj + 3 norms
    attn_forward = 2 * H * (cfg.qk_head_dim + cfg.v_head_dim) * seq_len * cfg.num_hidden_layers
    forward = 2 * (active - embedding) + attn_forward
    L = cfg.num_hidden_layers
    mla_cache = (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * L * dtype_bytes
    return Accounting(
        total_params=total,
        active_params=active,
        mtp_params=mtp,
        embedding_params=embedding,
        train_flops_per_token=3 * forward,
        forward_flops_per_token=forward,
        mla_cache_bytes_per_token=mla_cache,
        mha_cache_bytes_per_token=H * (cfg.qk_head_dim + cfg.v_head_dim) * L * dtype_bytes,
        seq_len=seq_len,
        dtype_bytes=dtype_bytes,
        kv_cache_bytes_per_token=mla_cache,
    )


def _is_dense(cfg) -> bool:
    from nanoseek.model.dense import DenseConfig  # (dense.py counts its parameters here: imported late)

    return isinstance(cfg, DenseConfig)


def _account_dense(cfg, seq_len: int, dtype_bytes: int) -> Accounting:
    """`account` of a dense GQA config (dense.DenseConfig): every parameter is active."""
    C, V, H, G, D, L = (
        cfg.hidden_size,
        cfg.vocab_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
        cfg.num_hidden_layers,
    )
    attn = C * (H + 2 * G) * D + H * D * C  # q, k, v, o
    attn += (H + 2 * G) * D * cfg.qkv_bias + C * cfg.o_bias + 2 * D * cfg.qk_norm
    block = attn + 3 * C * cfg.intermediate_size + 2 * C  # + the MLP and the two norms
    embedding = V * C
    total = embedding + (0 if cfg.tie_word_embeddings else V * C) + C + L * block  # + final norm
    head = V * C  # the head's matmul runs even when its weight is the embedding's
    forward = 2 * (total - embedding + (head if cfg.tie_word_embeddings else 0)) + 2 * H * 2 * D * seq_len * L
    kv_cache = 2 * G * D * L * dtype_bytes
    return Accounting(
        total_params=total,
        active_params=total,
        mtp_params=0,
        embedding_params=embedding,
        train_flops_per_token=3 * forward,
        forward_flops_per_token=forward,
        mla_cache_bytes_per_token=0,
        mha_cache_bytes_per_token=2 * H * D * L * dtype_bytes,
        seq_len=seq_len,
        dtype_bytes=dtype_bytes,
        kv_cache_bytes_per_token=kv_cache,
    )


def account_of(model: nn.Module, seq_len: int) -> Accounting:
    """`account` of a DeepSeek-V3 or dense model's config; a model of another family is counted from
    its parameters as a dense model (every parameter active, 2 FLOPs per matmul parameter per token
    forward, attention's scores left out; no cache figures)."""
    if isinstance(model.config, ModelConfig) or _is_dense(model.config):
        return account(model.config, seq_len)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.embed_tokens.weight.numel()
    forward = 2 * (total - embedding)
    return Accounting(total, total, 0, embedding, 3 * forward, forward, 0, 0, seq_len, 2)


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"
