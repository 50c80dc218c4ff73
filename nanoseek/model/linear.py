"""Linear layers for the training and prefill forward: fused projections and oneDNN matmuls on CPU.

    q, kv = fused_linear(x, attn.q_proj, attn.kv_a_proj_with_mqa)   # one matmul, split back per layer
    y = linear(x, attn.o_proj)                                        # one layer
    z = matmul_nt(a, w)                                               # a @ w^T, a (M, K), w (N, K)

Why: on this project's CPU (AMD EPYC, fp32, one thread) oneDNN's linear measured 5-20% faster
than the MKL sgemm that F.linear and torch.mm call on most of the training shapes, forward (x W^T)
and grad-input (dy W) (slower on one, (2048, 640) x (640, 320)); MKL stays for the weight gradient
(dy^T x), whose operands oneDNN's linear would need as transposed copies. `_Linear` wires oneDNN
into autograd:

    forward   y  = x W^T        oneDNN          x (.., in), W (out, in)
    backward  dx = dy W         oneDNN (W^T as the weight)
              dW = dy^T x       torch.mm        (out, in)

Everywhere else (GPU, bf16 or autocast, no oneDNN) it is F.linear. Layers swapped for inference
kernels (the engine's int8 layers; its decode layers outside autograd) run as themselves, so
decoding is untouched. Parameters stay the separate HF-named layers: fusing concatenates weights per call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _use_onednn(x: torch.Tensor, w: torch.Tensor) -> bool:
    return (
        ONEDNN
        and x.device.type == "cpu"
        and x.dtype == w.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def _onednn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")


def matmul_nt(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (.., K) @ w^T for w (N, K) -> (.., N), through oneDNN on CPU in fp32 (with its backward)."""
    return _Linear.apply(x, w) if _use_onednn(x, w) else F.linear(x, w)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return _onednn(x, w)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dy = dy.contiguous()
        dx = _onednn(dy, w.t()) if ctx.needs_input_grad[0] else None  # dy W: W^T (in, out) as the weight
        dw = dy.reshape(-1, w.shape[0]).T @ x.reshape(-1, w.shape[1]) if ctx.needs_input_grad[1] else None
        return dx, dw


def _plain(layer: nn.Module) -> bool:
    # a bias-free nn.Linear; its inference subclasses (the engine's decode layers) only while training,
    # when their forward is F.linear anyway, so a model the engine samples from trains at full speed
    linear_ = type(layer) is nn.Linear or (isinstance(layer, nn.Linear) and torch.is_grad_enabled())
    return linear_ and layer.bias is None


def linear(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """layer(x) for a bias-free nn.Linear, through `matmul_nt`; other layers run as themselves."""
    return matmul_nt(x, layer.weight) if _plain(layer) else layer(x)


def fused_linear(x: torch.Tensor, *layers: nn.Module) -> list[torch.Tensor]:
    """Several bias-free linear layers that read the same x (.., C), as one matmul x [W_1; W_2; ..]^T
    split back per layer (fewer, wider matmuls run closer to peak)."""
    if not all(_plain(layer) for layer in layers):
        return [layer(x) for layer in layers]
    w = torch.cat([layer.weight for layer in layers])  # (sum of outs, C)
    return list(matmul_nt(x, w).split([layer.out_features for layer in layers], dim=-1))
