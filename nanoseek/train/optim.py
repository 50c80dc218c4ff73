"""The optimizer and learning-rate schedules: AdamW over two parameter groups, warmup + cosine / WSD.

    optimizer = build_optimizer(model, cfg.train, device_type="cpu")
    for step in range(max_steps):
        ...; loss.backward()
        grad_norm = optimizer_step(model, optimizer, cfg.train.lr * lr_multiplier(step, cfg.train), clip)

Weight decay is AdamW's decoupled decay (p -= lr * wd * p, separate from the Adam update). It applies
to matrices (attention and MLP/expert weights, the router, the output head) and never to norm gains or
the embedding table. The routers' `e_score_correction_bias` is a buffer, not a parameter: the
optimizer never sees it; the training loop moves it with `model.update_router_biases`.

The schedule is a pure function of the step, so resuming needs nothing but the step:
- warmup: linear from lr / warmup_steps at step 0 to lr at step warmup_steps - 1;
- cosine: from lr down to min_lr_ratio x lr at the last step;
- wsd (warmup-stable-decay, as in MiniCPM / DeepSeek-V3's pretraining): flat at lr, then linear down to
  min_lr_ratio x lr over the last decay_fraction of the steps;
- constant: flat at lr after warmup.
The MTP loss weight lambda has a schedule of its own, also a function of the step (`mtp_weight`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nanoseek.train.config import OptimSection


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices with weight decay; norm gains and embeddings without."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "embed_tokens" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def build_optimizer(model: nn.Module, cfg: OptimSection, device_type: str = "cpu") -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=True if device_type == "cuda" else None,
    )


def lr_multiplier(step: int, cfg: OptimSection) -> float:
    """The schedule's factor on the peak lr at optimizer step `step` (0-based)."""
    total, warmup = cfg.max_steps, cfg.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    floor = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        span = max(total - 1 - warmup, 1)
        progress = min((step - warmup) / span, 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "wsd":
        decay_steps = max(round(cfg.decay_fraction * total), 1)
        decay_start = max(total - decay_steps, warmup)
        if step < decay_start:
            return 1.0
        progress = min((step - decay_start + 1) / max(total - decay_start, 1), 1.0)
        return 1.0 - (1 - floor) * progress
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def mtp_weight(step: int, base: float, late: float | None, switch: float, max_steps: int) -> float:
    """lambda of the MTP loss at optimizer step `step` (0-based): `base` before `switch` x max_steps
    steps, `late` from there on (DeepSeek-V3's 0.3 then 0.1); `base` throughout when late is None."""
    return base if late is None or step < switch * max_steps else late


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, lr: float, grad_clip: float) -> float:
    """Clip the global gradient norm to grad_clip (0: no clipping), step at `lr`, clear the gradients;
    returns the norm before clipping (of the whole model under FSDP)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP
        norm = norm.full_tensor()
    set_lr(optimizer, lr)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)
