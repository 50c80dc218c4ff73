"""GRPO's math: group advantages, the clipped policy objective, the k3 KL estimator, loss aggregation.

Shapes: N sequences (= prompts x G samples), L completion tokens (right-padded), `mask` (N, L) is 1 on
real completion tokens. All log-probabilities are of the sampled tokens.

    A_i      = (r_i - mean(r_group)) / (std(r_group) + eps)          advantage="grpo" (DeepSeekMath)
    A_i      =  r_i - mean(r_group)                                   advantage="dr_grpo" (no std)
    ratio_t  = exp(logp_t - logp_old_t)
    obj_t    = min(ratio_t A, clip(ratio_t, 1 - eps_low, 1 + eps_high) A)          clip-higher: eps_high > eps_low
    kl_t     = exp(ref_t - logp_t) - (ref_t - logp_t) - 1              k3 estimator, >= 0, unbiased
    loss_t   = -obj_t + beta kl_t

Aggregation over tokens (the variants people use):
    "grpo"     mean over sequences of each sequence's token mean      (GRPO / DeepSeekMath)
    "dapo"     sum over all tokens / number of tokens in the batch    (DAPO's token-level mean)
    "dr_grpo"  sum over all tokens / (N x max_len)                     (Dr. GRPO: a constant divisor)

With one update per batch (mu = 1) logp_old is logp detached, ratio = 1 with gradient grad(logp), and
with beta = 0 the gradient is exactly REINFORCE with the group-mean baseline: -A grad(logp) (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ADVANTAGE_MODES = ("grpo", "dr_grpo")
AGGREGATIONS = ("grpo", "dapo", "dr_grpo")


def group_advantages(
    rewards: torch.Tensor, group_size: int, mode: str = "grpo", eps: float = 1e-4
) -> torch.Tensor:
    """rewards (N,) laid out group after group (N = prompts x group_size) -> advantages (N,)."""
    if mode not in ADVANTAGE_MODES:
        raise ValueError(f"advantage mode {mode!r}: expected one of {ADVANTAGE_MODES}")
    r = rewards.float().view(-1, group_size)  # (prompts, G)
    centered = r - r.mean(dim=1, keepdim=True)
    if mode == "grpo":
        centered = centered / (r.std(dim=1, keepdim=True) + eps)  # unbiased std, as TRL
    return centered.flatten()


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || pi_ref) estimate from samples of pi: exp(d) - d - 1 with d = ref - logp."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


@dataclass
class PolicyLoss:
    loss: torch.Tensor  # scalar to backpropagate
    clip_fraction: (
        float  # share of real tokens whose ratio was clipped (the objective's gradient is zero there)
    )
    kl: float  # mean k3 KL per real token (0 when no reference)
    ratio_mean: float


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    ref_logp: torch.Tensor | None = None,
    aggregation: str = "grpo",
    max_len: int | None = None,
) -> PolicyLoss:
    """logp/old_logp/ref_logp/mask (N, L), advantages (N,) -> PolicyLoss. `max_len` is the divisor's
    length for aggregation="dr_grpo" (the generation budget; defaults to L)."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"loss aggregation {aggregation!r}: expected one of {AGGREGATIONS}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs the reference model's log-probabilities")
    mask = mask.to(logp.dtype)
    A = advantages[:, None].to(logp.dtype)  # (N, 1)
    ratio = torch.exp(logp - old_logp)
    clipped_ratio = ratio.clamp(1 - eps_low, 1 + eps_high)
    objective = torch.minimum(ratio * A, clipped_ratio * A)  # (N, L)
    per_token = -objective
    kl = torch.zeros_like(logp)
    if beta > 0:
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + beta * kl
    tokens = mask.sum().clamp(min=1)
    if aggregation == "grpo":
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    elif aggregation == "dapo":
        loss = (per_token * mask).sum() / tokens
    else:
        loss = (per_token * mask).sum() / (logp.shape[0] * (max_len or logp.shape[1]))
    with torch.no_grad():
        was_clipped = ((ratio * A) > (clipped_ratio * A)).to(mask.dtype)  # min() picked the clipped term
        clip_fraction = ((was_clipped * mask).sum() / tokens).item()
        kl_mean = ((kl * mask).sum() / tokens).item()
        ratio_mean = ((ratio * mask).sum() / tokens).item()
    return PolicyLoss(loss, clip_fraction, kl_mean, ratio_mean)
