"""Inference-time fast paths for a DeepSeekV3 model: same weights, same math, faster small-batch decode.

    from nanoseek.engine.fast import prepare_for_inference
    prepare_for_inference(model)      # in place; training, state_dict and checkpoints are unchanged

Two swaps, both subclasses of the modules they replace (so parameters, state_dict keys, optimizers
and `save_pretrained` see exactly the same model):

- `DecodeLinear(nn.Linear)`: a one-row matmul y = x W^T streams W; with W stored (out, in) MKL's
  gemv reads it at about half the memory bandwidth, with W^T stored (in, out) at nearly all of it.
  So for one-token-per-sequence decode at batch 1 it keeps a transposed copy W^T (in, out) and
  computes x @ W^T. Several rows (batched decode, prefill) go to oneDNN's linear on CPU, up to
  1.5x faster than F.linear there. The copy (memory: the linear weights twice) is rebuilt whenever
  the weight changes (tracked by the tensor's in-place version counter), so a GRPO trainer can keep
  training the model the engine samples from.
- `DecodeExperts(RoutedExperts)`: at inference only the experts that some token was routed to run,
  one matmul each with the gate and up projections fused, (E, C, 2I); `_grouped_mm` on CPU walks
  all E experts even when 4 of 16 are used. Training (grad enabled) uses the parent's forward.

Both fall back to the parent forward whenever autograd is recording, so they are safe to leave in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoseek.model.moe import RoutedExperts

# oneDNN's linear (what torch.compile uses on CPU) runs a few-row fp32 matmul up to 1.5x faster than MKL
ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _weight_version(t: torch.Tensor) -> tuple:
    # changes on any in-place update (optimizer step, load_state_dict, .copy_) and on .to()/.double()
    return (t._version, t.data_ptr(), t.dtype, t.device)


class DecodeLinear(nn.Linear):
    """nn.Linear whose one-row (decode, batch 1) matmuls read a transposed copy of the weight."""

    _wt: torch.Tensor | None = None
    _wt_key: tuple | None = None

    def transposed_weight(self) -> torch.Tensor:
        key = _weight_version(self.weight)
        if self._wt is None or self._wt_key != key:
            self._wt = self.weight.detach().t().contiguous()  # (in, out)
            self._wt_key = key
        return self._wt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self.bias is not None or (torch.is_grad_enabled() and w.requires_grad):
            return F.linear(x, w, self.bias)
        if x.numel() == x.shape[-1]:  # one row
            return x @ self.transposed_weight()  # (.., in) @ (in, out)
        if ONEDNN_LINEAR and x.device.type == "cpu" and x.dtype == w.dtype == torch.float32:
            return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
        return F.linear(x, w)


class DecodeExperts(RoutedExperts):
    """Routed experts that only compute the experts in use, with gate and up fused into one matmul."""

    _gate_up: torch.Tensor | None = None
    _gate_up_key: tuple | None = None

    def gate_up(self) -> torch.Tensor:
        key = (_weight_version(self.gate_proj), _weight_version(self.up_proj))
        if self._gate_up is None or self._gate_up_key != key:
            self._gate_up = torch.cat([self.gate_proj.detach(), self.up_proj.detach()], dim=-1)  # (E, C, 2I)
            self._gate_up_key = key
        return self._gate_up

    def forward(self, x: torch.Tensor, expert_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x (N, C), expert_ids / weights (N, K) -> (N, C)."""
        if torch.is_grad_enabled() and self.gate_proj.requires_grad:
            return super().forward(x, expert_ids, weights)
        return run_experts(x, expert_ids, weights, self.expert_ffn)

    def expert_ffn(self, e: int, xe: torch.Tensor) -> torch.Tensor:
        """SwiGLU of expert e on its rows xe (n, C) -> (n, C)."""
        gu = xe @ self.gate_up()[e]  # (n, 2I)
        gate, up = gu.chunk(2, dim=-1)
        return (F.silu(gate) * up) @ self.down_proj[e]


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


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """Swap nn.Linear -> DecodeLinear and RoutedExperts -> DecodeExperts in place (same parameters)."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = DecodeLinear
        elif type(module) is RoutedExperts:
            module.__class__ = DecodeExperts
    return model
