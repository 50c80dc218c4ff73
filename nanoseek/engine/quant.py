"""int8 weight-only quantization with per-output-channel scales, for CPUs and low-end hardware.

    from nanoseek.engine.quant import quantize_int8
    quantize_int8(model)        # in place: nn.Linear -> Int8Linear, routed experts -> Int8Experts
                                # (any registered family: DeepSeek's MLA/MoE and the dense GQA ones)
    Engine(model, tok)          # or Engine.from_pretrained(path, int8=True), `nanoseek generate --int8`

Each output channel (row of W, shape (out, in)) gets a symmetric scale:

    s_o = max_i |W_oi| / 127,   Q_oi = round(W_oi / s_o) in [-127, 127] (int8),   W ~ Q * s[:, None]
    y   = x W^T ~ (x Q^T) * s                     the scale comes out of the sum over i

Weights take a quarter of fp32's memory and memory traffic, which is what bounds decoding on a CPU.
On CPU the matmul is nanoseek's `kernels.matmul_int8` where it is built (activations rounded to
16-bit integers per row, products summed exactly in integers), else `torch._weight_int8pack_mm`
(bf16 activations; it needs `in` to be a multiple of 16); elsewhere the weight is dequantized per
matmul. Kept in full precision: embeddings (a lookup; a tied head gets its own int8 copy), biases,
norms, the MoE router (routing is sensitive and tiny), and kv_b_proj (its halves are the absorbed
attention weights, see `MLA.absorbed_weights`; 2% of the parameters).

A quantized model is for inference: its state_dict holds int8 tensors and it cannot be trained or
saved as a Hugging Face checkpoint. Quantize a freshly loaded model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoseek.engine import kernels
from nanoseek.model.moe import RoutedExperts

HAS_INT8PACK = hasattr(torch, "_weight_int8pack_mm")
SKIP = ("kv_b_proj",)  # modules kept in full precision (besides embeddings, norms and routers)


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w (..., out, in) float -> int8 of the same shape and fp32 scales (..., out), per output row."""
    scale = w.detach().abs().amax(dim=-1).float().clamp(min=1e-12) / 127.0
    q = (w.detach().float() / scale[..., None]).round().clamp(-127, 127).to(torch.int8)
    return q, scale


def int8_matmul(
    x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, scale_bf16: torch.Tensor
) -> torch.Tensor:
    """x (N, in) float, q (out, in) int8, scale (out,) -> (N, out) in x's dtype. On CPU: nanoseek's
    kernel (`kernels.matmul_int8`: 16-bit integer activations, exact integer sums) where it is built,
    else torch's `_weight_int8pack_mm` (bfloat16 activations)."""
    if x.device.type == "cpu" and kernels.available():
        return kernels.matmul_int8(x.float(), q, scale).to(x.dtype)
    if HAS_INT8PACK and x.device.type == "cpu" and x.shape[-1] % 16 == 0:  # the kernel's K granularity
        return torch._weight_int8pack_mm(x.to(torch.bfloat16), q, scale_bf16).to(x.dtype)
    return F.linear(x, q.to(x.dtype)) * scale.to(x.dtype)


class Int8Linear(nn.Module):
    """An nn.Linear with int8 weights (out, in) and per-output-channel fp32 scales; a bias (Qwen2's
    q/k/v) stays in full precision and is added after the scaled product."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, scale = quantize_rows(linear.weight)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)
        self.register_buffer("scale_bf16", scale.to(torch.bfloat16))
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = int8_matmul(x.reshape(-1, self.in_features), self.qweight, self.scale, self.scale_bf16)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int8Experts(nn.Module):
    """Routed experts with int8 weights: gate and up fused (E, 2I, C), down (E, C, I), (out, in) rows."""

    def __init__(self, experts: RoutedExperts):
        super().__init__()
        gate_up = torch.cat([experts.gate_proj, experts.up_proj], dim=-1).transpose(1, 2)  # (E, 2I, C)
        down = experts.down_proj.transpose(1, 2)  # (E, C, I)
        for name, w in (("gate_up", gate_up), ("down", down)):
            q, scale = quantize_rows(w)
            self.register_buffer(f"{name}_q", q.contiguous())
            self.register_buffer(f"{name}_scale", scale)
            self.register_buffer(f"{name}_scale_bf16", scale.to(torch.bfloat16))

    def forward(self, x: torch.Tensor, expert_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x (N, C), expert_ids / weights (N, K) -> (N, C); only the experts in use run."""
        return run_experts(x, expert_ids, weights, self.expert_ffn)

    def expert_ffn(self, e: int, xe: torch.Tensor) -> torch.Tensor:
        gu = int8_matmul(xe, self.gate_up_q[e], self.gate_up_scale[e], self.gate_up_scale_bf16[e])  # (n, 2I)
        gate, up = gu.chunk(2, dim=-1)
        return int8_matmul(F.silu(gate) * up, self.down_q[e], self.down_scale[e], self.down_scale_bf16[e])


def run_experts(x: torch.Tensor, expert_ids: torch.Tensor, weights: torch.Tensor, ffn) -> torch.Tensor:
    """Sort the (token, expert) pairs by expert, run `ffn(e, rows)` once per used expert, and sum the
    weighted outputs back per token. x (N, C), expert_ids / weights (N, K) -> (N, C)."""
    N, K = expert_ids.shape
    if N == 1:  # one token (batch-1 decode): its K experts, no sorting or scattering
        ys = torch.cat([ffn(e, x) for e in expert_ids[0].tolist()])  # (K, C)
        return (ys * weights[0, :, None].to(x.dtype)).sum(0, keepdim=True)
    flat = expert_ids.flatten()  # (N*K,)
    order = flat.argsort(stable=True)
    token_of = order // K
    counts = torch.bincount(flat).tolist()  # one host sync: which experts run, on how many rows
    xs = x[token_of]  # (N*K, C) grouped by expert
    outs, start = [], 0
    for e, count in enumerate(counts):
        if count:
            outs.append(ffn(e, xs[start : start + count]))
            start += count
    ys = torch.cat(outs) * weights.flatten()[order, None].to(x.dtype)
    return torch.zeros_like(x).index_add_(0, token_of, ys)


@torch.no_grad()
def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear (but kv_b_proj) and every RoutedExperts by int8 versions. A head tied to
    the embedding (Llama/Qwen small sizes) is quantized as the head; the embedding lookup keeps the
    full-precision table."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and name not in SKIP:
                setattr(parent, name, Int8Linear(child))
            elif isinstance(child, RoutedExperts):
                setattr(parent, name, Int8Experts(child))
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers (what decoding has to stream from memory)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
