"""The distillation student: a small dense DeepSeekV3 (`n_routed_experts = 0`), as R1 distilled into
dense Qwen / Llama models.

    cfg = dense_config(depth=2, vocab_size=tok.vocab_size, hidden=96)
    model_dir = init_student("runs/distill/student_init", cfg, tok, seed=0)   # what SFT starts from
    active_params("runs/teacher/model")                                       # for the size ratio

`dense_config` follows `nanoseek.model.config_for_depth` (nanochat's one size knob) with the routed
experts removed, so every layer is a dense SwiGLU MLP; `hidden` optionally narrows the residual stream
below depth x 64, with the other widths derived from it by the same rules. A fresh student is randomly
initialized (seeded); a pretrained dense base checkpoint can be used instead (`--student PATH`): any
dense family, e.g. a Qwen2.5 or Llama 3 checkpoint written by transformers, as R1's students were.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from nanoseek.model import DeepSeekV3, ModelConfig, account, config_for_depth
from nanoseek.model.checkpoint import read_config
from nanoseek.tokenizer import Tokenizer


def dense_config(
    depth: int, vocab_size: int, hidden: int | None = None, max_position_embeddings: int = 1024
) -> ModelConfig:
    """A dense DeepSeek-V3 config of `depth` layers (hidden width 64 x depth unless given)."""
    if depth < 1:
        raise ValueError(f"student depth must be >= 1, got {depth}")
    cfg = config_for_depth(
        depth, vocab_size=vocab_size, max_position_embeddings=max_position_embeddings, mtp=0
    )
    cfg = cfg.replace(n_routed_experts=0, first_k_dense_replace=depth)
    if hidden is None:
        return cfg
    heads = cfg.num_attention_heads
    if hidden < 8 * heads or hidden % heads:
        raise ValueError(
            f"student hidden size {hidden} must be a multiple of its {heads} heads, >= {8 * heads}"
        )
    head = hidden // heads
    return cfg.replace(
        hidden_size=hidden,
        intermediate_size=(8 * hidden // 3 + 31) // 32 * 32,
        moe_intermediate_size=max(1, hidden // 4),
        kv_lora_rank=max(32, hidden // 4),
        qk_nope_head_dim=head,
        qk_rope_head_dim=max(8, head // 2),
        v_head_dim=head,
    )


def init_student(out_dir: str | Path, cfg: ModelConfig, tokenizer: Tokenizer, seed: int = 0) -> Path:
    """Save a freshly initialized student (seeded) with the tokenizer: a checkpoint SFT can start from."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "tokenizer.json").is_file():
        return out_dir  # already made (a resumed distillation)
    cfg = cfg.replace(
        bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, vocab_size=tokenizer.vocab_size
    )
    torch.manual_seed(seed)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    DeepSeekV3(cfg).save_pretrained(tmp)
    tokenizer.save(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)  # a partial directory of a killed run
    tmp.replace(out_dir)
    return out_dir


def model_config(model_dir: str | Path):
    """The config of a checkpoint directory, of its family's class (a ModelConfig for DeepSeek-V3,
    a DenseConfig for Llama / Qwen, ...)."""
    return read_config(model_dir)


def active_params(model_dir: str | Path) -> int:
    """Active parameters per token of a checkpoint's main model (`nanoseek.model.account`)."""
    return account(model_config(model_dir), 1).active_params
