"""DeepSeekMoE: shared experts plus fine-grained routed experts, with auxiliary-loss-free balancing.

Routing for one token x (C,), E routed experts in G groups, top-K experts from the best top-k_g groups:

    s       = sigmoid(W_gate x)                              (E,)  affinities
    s_sel   = s + b                                          b = e_score_correction_bias, selection only
    group   = sum of the top-2 of s_sel within each group    (G,)  other groups' experts -> -inf
    experts = topk(s_sel, K)                                 chosen by biased scores
    weights = s[experts] / sum(s[experts])  (norm_topk_prob)  * routed_scaling_factor   from unbiased s

    y = sum_k weights_k * FFN_{experts_k}(x) + sum_shared FFN_shared(x)

Balancing without an auxiliary loss (DeepSeek-V3 sec. 2.1.2): the layer counts tokens per expert in
training forwards; after each optimizer step `update_bias` moves b_i by gamma * sign(mean load - load_i).
The optional sequence-wise balance loss alpha * sum_i f_i P_i is returned by `forward` alongside y.

Dispatch: (token, expert) pairs are sorted by expert so each expert runs one matmul over its own
tokens, never every token through every expert: on GPU all experts in one `torch._grouped_mm` kernel,
on CPU `_ExpertsFFN`, a loop of plain matmuls with a hand-written backward (torch's CPU grouped kernel
measured ~15x slower than the loop). The hand-written backward matters: autograd through
`weight[e]` for each of E experts materializes a zero (E, C, I) gradient per expert and adds them up,
O(E^2) memory traffic; `_ExpertsFFN` writes each expert's gradient into its slice of one buffer. Gate
and up run as one (C, 2I) matmul per expert; SwiGLU runs once over all rows and takes the routing
weights there, on (rows, I) rather than on the (rows, C) outputs. Expert weights are stored stacked,
(E, C, I) and (E, I, C); checkpoints split them into HF's per-expert keys.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from nanoseek.model.config import ModelConfig
from nanoseek.model.linear import fused_linear, linear

HAS_GROUPED_MM = hasattr(torch, "_grouped_mm")


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = fused_linear(x, self.gate_proj, self.up_proj)
        return linear(F.silu(gate) * up, self.down_proj)


class Router(nn.Module):
    """The `gate`: sigmoid affinities, bias-corrected group-limited top-k selection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(cfg.n_routed_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, C) -> scores (N, E), expert ids (N, K), weights (N, K)."""
        cfg = self.cfg
        N, E, G = x.shape[0], cfg.n_routed_experts, cfg.n_group
        scores = F.linear(x.float(), self.weight.float()).sigmoid()  # (N, E)
        biased = scores.detach() + self.e_score_correction_bias
        if G > 1:
            group_scores = biased.view(N, G, E // G).topk(2, dim=-1).values.sum(-1)  # (N, G)
            top_groups = group_scores.topk(cfg.topk_group, dim=-1).indices  # (N, topk_group)
            keep = torch.zeros(N, G, dtype=torch.bool, device=x.device).scatter_(1, top_groups, True)
            biased = biased.masked_fill(~keep.repeat_interleave(E // G, dim=1), float("-inf"))
        expert_ids = biased.topk(cfg.num_experts_per_tok, dim=-1).indices  # (N, K)
        weights = scores.gather(1, expert_ids)
        if cfg.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return scores, expert_ids, weights * cfg.routed_scaling_factor


class RoutedExperts(nn.Module):
    """E SwiGLU experts stored stacked: gate/up (E, C, I), down (E, I, C)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, C, I = cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size
        self.gate_proj = nn.Parameter(torch.empty(E, C, I))
        self.up_proj = nn.Parameter(torch.empty(E, C, I))
        self.down_proj = nn.Parameter(torch.empty(E, I, C))

    def forward(self, x: torch.Tensor, expert_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x (N, C), expert_ids / weights (N, K) -> (N, C): sum_k weights_k FFN_{expert_k}(x)."""
        N, K = expert_ids.shape
        E = self.gate_proj.shape[0]
        flat_ids = expert_ids.flatten()  # (N*K,)
        order = flat_ids.argsort(stable=True)
        token_of = order // K  # which token each sorted row comes from
        counts = torch.bincount(flat_ids, minlength=E)
        xs = x.index_select(0, token_of)  # (N*K, C) grouped by expert; backward is one index_add
        if HAS_GROUPED_MM and x.is_cuda and x.dtype in (torch.float32, torch.bfloat16):
            offsets = counts.cumsum(0).to(torch.int32)
            h = F.silu(_grouped_mm(xs, self.gate_proj, offsets)) * _grouped_mm(xs, self.up_proj, offsets)
            ys = _grouped_mm(h, self.down_proj, offsets)
        else:
            # under autocast compute in its dtype, as the matmuls the Function replaces would have
            device = x.device.type
            dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
            params = (w.to(dtype) for w in (self.gate_proj, self.up_proj, self.down_proj))
            row_weights = weights.flatten()[order].to(dtype)  # (N*K,) in the sorted order
            ys = _ExpertsFFN.apply(xs.to(dtype), *params, row_weights, counts.tolist())
            return torch.zeros_like(x).index_add_(0, token_of, ys.to(x.dtype))
        ys = ys * weights.flatten()[order, None].to(ys.dtype)
        return torch.zeros_like(x).index_add_(0, token_of, ys.to(x.dtype))


class _ExpertsFFN(torch.autograd.Function):
    """Weighted SwiGLU experts over rows grouped by expert: xs (M, C), the first counts[0] rows for
    expert 0, ...; w (M,) each row's routing weight, applied to h (M, I) rather than to ys (M, C).

        gu_e = xs_e [gate_e | up_e]        (n_e, 2I)   one matmul per expert
        hw   = w * silu(g) * u             (M, I)      one elementwise pass over all rows
        ys_e = hw_e down_e                 (n_e, C)

    Backward (per expert e, rows r_e; s = sigmoid(g), h = silu(g) * u):
        dhw = dys_e down_e^T,  d down_e = hw_e^T dys_e,  dw = sum_I dhw * h,  dh = w * dhw
        dg = dh * u * s * (1 + g (1 - s)),  du = dh * silu(g)
        dxs_e = [dg | du] [gate_e | up_e]^T,  d[gate_e | up_e] = xs_e^T [dg | du]
    Each expert's weight gradient is written into its slice of one (E, ..) buffer; h is recomputed
    from the saved gu rather than kept.
    """

    @staticmethod
    def forward(ctx, xs, gate, up, down, w, counts: list[int]):
        gate_up = torch.cat([gate, up], dim=-1)  # (E, C, 2I)
        rows = _expert_rows(counts)
        gu = xs.new_empty(xs.shape[0], gate_up.shape[-1])
        for e, r in rows:
            torch.mm(xs[r], gate_up[e], out=gu[r])
        g, u = gu.chunk(2, dim=-1)
        hw = (F.silu(g) * u).mul_(w[:, None])
        ys = xs.new_empty(xs.shape[0], down.shape[-1])
        for e, r in rows:
            torch.mm(hw[r], down[e], out=ys[r])
        ctx.save_for_backward(xs, gate_up, down, gu, w)
        ctx.rows = rows
        return ys

    @staticmethod
    def backward(ctx, dys):
        xs, gate_up, down, gu, w = ctx.saved_tensors
        rows, dys = ctx.rows, dys.contiguous()
        g, u = gu.chunk(2, dim=-1)
        s = torch.sigmoid(g)
        silu_g = g * s
        h = silu_g * u
        hw = h * w[:, None]
        dhw = torch.empty_like(h)
        d_down = torch.zeros_like(down)
        for e, r in rows:
            torch.mm(dys[r], down[e].T, out=dhw[r])
            torch.mm(hw[r].T, dys[r], out=d_down[e])
        dw = (dhw * h).sum(-1)
        dh = dhw.mul_(w[:, None])
        dgu = torch.cat([dh * u * s * (1 + g * (1 - s)), dh * silu_g], dim=-1)  # (M, 2I)
        dxs = torch.empty_like(xs)
        d_gate_up = torch.zeros_like(gate_up)
        for e, r in rows:
            torch.mm(dgu[r], gate_up[e].T, out=dxs[r])
            torch.mm(xs[r].T, dgu[r], out=d_gate_up[e])
        d_gate, d_up = d_gate_up.chunk(2, dim=-1)
        return dxs, d_gate.contiguous(), d_up.contiguous(), d_down, dw, None


def _expert_rows(counts: list[int]) -> list[tuple[int, slice]]:
    """(expert, its row range) for every expert with at least one row."""
    ends = list(itertools.accumulate(counts))
    return [(e, slice(end - n, end)) for e, (n, end) in enumerate(zip(counts, ends)) if n]


def _grouped_mm(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    # (N, in) x (E, in, out) -> (N, out), rows grouped by expert; offsets (E,) are the groups' ends.
    # torch's CPU backward needs a dense incoming gradient; _DenseGrad makes sure it gets one
    out = torch._grouped_mm(a, b, offs=offsets)
    return _DenseGrad.apply(out) if out.requires_grad else out


class _DenseGrad(torch.autograd.Function):
    """Identity whose backward passes on a contiguous gradient (grouped_mm's CPU kernel rejects
    expanded ones)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.gate = Router(cfg)
        self.experts = RoutedExperts(cfg)
        self.shared_experts = (
            MLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts)
            if cfg.n_shared_experts
            else None
        )
        # tokens routed to each expert since the last bias update (training only)
        self.register_buffer("expert_load", torch.zeros(cfg.n_routed_experts), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) -> y (B, T, C), sequence-wise balance loss (scalar) or None."""
        B, T, C = x.shape
        flat = x.reshape(B * T, C)
        scores, expert_ids, weights = self.gate(flat)
        y = self.experts(flat, expert_ids, weights)
        if self.shared_experts is not None:
            y = y + self.shared_experts(flat)
        balance_loss = None
        if self.training:
            self.expert_load += torch.bincount(expert_ids.flatten(), minlength=self.cfg.n_routed_experts)
            if self.cfg.aux_loss_alpha > 0:
                balance_loss = self.sequence_balance_loss(scores.view(B, T, -1), expert_ids.view(B, T, -1))
        return y.view(B, T, C), balance_loss

    def sequence_balance_loss(self, scores: torch.Tensor, expert_ids: torch.Tensor) -> torch.Tensor:
        """alpha * sum_i f_i P_i per sequence, averaged over the batch. scores (B,T,E), expert_ids (B,T,K)."""
        E, K = self.cfg.n_routed_experts, self.cfg.num_experts_per_tok
        B, T, _ = scores.shape
        chosen = torch.zeros_like(scores).scatter_(2, expert_ids, 1.0)  # (B, T, E)
        f = chosen.sum(1) * E / (K * T)  # (B, E): load relative to uniform
        p = (scores / scores.sum(-1, keepdim=True)).mean(1)  # (B, E): mean normalized affinity
        return self.cfg.aux_loss_alpha * (f * p).sum(-1).mean()

    @torch.no_grad()
    def update_bias(self, gamma: float, load: torch.Tensor | None = None) -> None:
        """b_i += gamma * sign(mean load - load_i); `load` defaults to the counts since the last call
        (pass all-reduced counts under data parallelism)."""
        load = self.expert_load if load is None else load
        if load.sum() > 0:
            self.gate.e_score_correction_bias += gamma * torch.sign(load.mean() - load)
        self.expert_load.zero_()
