"""Rotary position embeddings for MLA's decoupled rope key, with YaRN context extension.

DeepSeek stores the rope dimensions as interleaved pairs (x0, x1), (x2, x3), ... each rotated by one
frequency. `apply_rope` rotates the pairs and returns them de-interleaved ([rotated evens | rotated
odds]); queries and keys get the same permutation, so every dot product, and so attention, is exactly
the interleaved one, while skipping a copy back into pairs (transformers does the same).

YaRN (DeepSeek's `rope_scaling: {"type": "yarn", ...}`) blends interpolated and original frequencies
by a linear ramp between the beta_fast and beta_slow rotation counts, and scales cos/sin by
mscale(factor, mscale) / mscale(factor, mscale_all_dim); the matching softmax temperature lives in
`ModelConfig.softmax_scale`.
"""

from __future__ import annotations

import math

import torch

from nanoseek.model.config import ModelConfig, yarn_mscale


def rope_frequencies(cfg: ModelConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (rope_dim // 2,) and the cos/sin amplitude factor."""
    dim, base = cfg.qk_rope_head_dim, cfg.rope_theta
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    rs = cfg.rope_scaling
    if not rs or rs.get("type") != "yarn":
        return inv_freq, 1.0
    factor = rs.get("factor") or cfg.max_position_embeddings / rs["original_max_position_embeddings"]
    original_len = rs["original_max_position_embeddings"]
    beta_fast, beta_slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

    def correction_dim(num_rotations: float) -> float:
        # the dimension whose wavelength completes `num_rotations` turns over the original context
        return dim * math.log(original_len / (num_rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep_original = 1 - ramp  # 1 for high-frequency dims (extrapolate), 0 for low ones (interpolate)
    inv_freq = inv_freq / factor * (1 - keep_original) + inv_freq * keep_original
    mscale, mscale_all_dim = rs.get("mscale"), rs.get("mscale_all_dim")
    if rs.get("attention_factor") is not None:
        amplitude = rs["attention_factor"]
    elif mscale and mscale_all_dim:
        amplitude = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
    else:
        amplitude = yarn_mscale(factor)
    return inv_freq, amplitude


class RotaryEmbedding(torch.nn.Module):
    """Precomputes cos/sin for every position up to max_position_embeddings (grown on demand)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        inv_freq, self.amplitude = rope_frequencies(cfg)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._build(cfg.max_position_embeddings)

    def _build(self, length: int) -> None:
        t = torch.arange(length, dtype=torch.float32, device=self.inv_freq.device)
        angles = torch.outer(t, self.inv_freq)  # (length, rope_dim/2)
        self.register_buffer("cos", angles.cos() * self.amplitude, persistent=False)
        self.register_buffer("sin", angles.sin() * self.amplitude, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T) or (T,) -> cos, sin of shape positions.shape + (rope_dim/2,)."""
        if positions.numel() and int(positions.max()) >= self.cos.shape[0]:
            self._build(2 * int(positions.max()) + 1)
        return self.cos[positions], self.sin[positions]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., T, [H,] rope_dim) interleaved pairs; cos/sin broadcastable to (..., T, [H,] rope_dim/2)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
