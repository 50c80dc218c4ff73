"""Blocks every decoder family shares: RMSNorm and the SwiGLU feed-forward.

    norm = RMSNorm(hidden_size, eps);  y = norm(x)                 # x / rms(x) * weight
    mlp = MLP(hidden_size, intermediate_size);  y = mlp(x)         # down(silu(gate(x)) * up(x))

A dense model imports these without importing MLA or DeepSeekMoE; their speed (the hand-written
RMSNorm backward, fused gate/up matmuls) comes from `kernels`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoseek.model.kernels import fused_linear, linear, rms_norm


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last dimension, computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x)); gate and up run as one matmul."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = fused_linear(x, self.gate_proj, self.up_proj)
        return linear(F.silu(gate) * up, self.down_proj)
