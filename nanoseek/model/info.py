"""`nanoseek info PATH_OR_PRESET`: a model's shape, parameters, FLOPs and KV-cache footprint.

nanoseek info d2                 # a preset of the size ladder (see nanoseek.model.presets)
nanoseek info v3-671b            # DeepSeek-V3's published shape
nanoseek info runs/x/model       # a checkpoint directory (reads config.json only)
nanoseek info d10 --seq-len 4096 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from nanoseek.model.accounting import account, human
from nanoseek.model.checkpoint import read_config
from nanoseek.model.config import ModelConfig
from nanoseek.model.presets import PRESETS, preset


def resolve_config(name_or_path: str) -> ModelConfig:
    """A preset name or a model directory (or its config.json)."""
    if name_or_path in PRESETS:
        return preset(name_or_path)
    path = Path(name_or_path)
    if path.name == "config.json":
        path = path.parent
    if path.is_dir():
        return read_config(path)
    raise SystemExit(
        f"nanoseek info: {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor a model directory"
    )


def describe(cfg: ModelConfig, seq_len: int) -> str:
    a = account(cfg, seq_len=seq_len)
    moe = (
        f"{cfg.n_routed_experts} routed (top-{cfg.num_experts_per_tok}, {cfg.n_group} groups, top-{cfg.topk_group} groups)"
        f" + {cfg.n_shared_experts} shared, width {cfg.moe_intermediate_size}; first {cfg.first_k_dense_replace} layer(s) dense"
        if cfg.is_moe
        else f"dense, MLP width {cfg.intermediate_size}"
    )
    q = f"q_lora_rank {cfg.q_lora_rank}" if cfg.q_lora_rank else "direct q_proj"
    rope = f"YaRN x{cfg.rope_scaling['factor']}" if cfg.rope_scaling else "RoPE"
    cache_full = a.mla_cache_bytes_per_token * seq_len
    lines = [
        f"layers {cfg.num_hidden_layers}, hidden {cfg.hidden_size}, heads {cfg.num_attention_heads}, vocab {cfg.vocab_size}",
        f"MLA: kv_lora_rank {cfg.kv_lora_rank}, {q}, head dims nope {cfg.qk_nope_head_dim} / rope {cfg.qk_rope_head_dim} / v {cfg.v_head_dim}, {rope}",
        f"FFN: {moe}",
        f"MTP modules: {cfg.num_nextn_predict_layers}",
        "",
        f"total parameters      {human(a.total_params):>10}   ({a.total_params:,})",
        f"active per token      {human(a.active_params):>10}   ({100 * a.active_params / a.total_params:.1f}% of total)",
        f"MTP parameters        {human(a.mtp_params):>10}",
        f"embedding parameters  {human(a.embedding_params):>10}",
        f"training FLOPs/token  {human(a.train_flops_per_token):>10}   (6 x active matmul params + attention at seq {seq_len})",
        f"KV cache per token    {a.mla_cache_bytes_per_token:>10,} B  MLA latent (bf16)",
        f"                      {a.mha_cache_bytes_per_token:>10,} B  MHA with the same heads "
        f"({a.mha_cache_bytes_per_token / a.mla_cache_bytes_per_token:.1f}x more)",
        f"KV cache at {seq_len} tokens {human(cache_full)}B per sequence (MLA)",
    ]
    return "\n".join(lines)


def info_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nanoseek info", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help=f"a preset ({', '.join(PRESETS)}) or a model directory")
    parser.add_argument(
        "--seq-len", type=int, default=None, help="context length for attention FLOPs and cache size"
    )
    parser.add_argument("--json", action="store_true", help="print the config and accounting as JSON")
    args = parser.parse_args(argv)
    cfg = resolve_config(args.model)
    seq_len = args.seq_len or min(cfg.max_position_embeddings, 4096)
    if args.json:
        print(
            json.dumps(
                {"config": cfg.to_hf_dict(), "accounting": dataclasses.asdict(account(cfg, seq_len))},
                indent=2,
            )
        )
    else:
        print(f"{args.model}\n" + describe(cfg, seq_len))
    return 0
