"""DeepSeekMoE: shared experts plus fine-grained routed experts; V3's and V2's routers.

Routing for one token x (C,), E routed experts in G groups, top-K experts from the best top-k_g groups.
DeepSeek-V3 (scoring_func sigmoid, topk_method noaux_tc):

    s       = sigmoid(W_gate x)                              (E,)  affinities
    s_sel   = s + b                                          b = e_score_correction_bias, selection only
    group   = sum of the top-2 of s_sel within each group    (G,)  other groups' experts -> -inf
    experts = topk(s_sel, K)                                 chosen by biased scores
    weights = s[experts] / sum(s[experts])  (norm_topk_prob)  * routed_scaling_factor   from unbiased s

DeepSeek-V2 (scoring_func softmax; no bias, no normalization, as transformers' DeepseekV2TopkRouter):

    s       = softmax(W_gate x)                              (E,)
    group   = max of s within each group                     (G,)  group_limited_greedy only
    experts = topk(s, K)                                     greedy: over all E experts
    weights = s[experts] * routed_scaling_factor

    y = sum_k weights_k * FFN_{experts_k}(x) + sum_shared FFN_shared(x)

Balancing. V3 without an auxiliary loss (DeepSeek-V3 sec. 2.1.2): the layer counts tokens per expert in
training forwards; after each optimizer step `update_bias` moves b_i by gamma * sign(mean load - load_i).
Both generations: the expert-level balance loss of DeepSeek's modeling code, returned by `forward`
alongside y when aux_loss_alpha > 0 (V2 ships 1e-3). With seq_aux, per sequence of T tokens, averaged
over the batch; without, over all the batch's tokens as one sequence:

    f_i = E / (K T) * #{tokens choosing i},   P_i = mean over tokens of s_i / sum_j s_j,   L = alpha sum_i f_i P_i

(V2's device- and communication-level losses balance expert parallelism across devices; with the
experts on one device they do not apply and are not implemented.)

Each token's K routed experts run in `kernels.experts_ffn`: (token, expert) pairs sorted by expert,
one matmul per expert over its own rows, with a hand-written backward (why, with the measurements:
kernels.py). Expert weights are stored stacked, (E, C, I) and (E, I, C); checkpoints split them into
HF's per-expert keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoseek.model.config import ModelConfig
from nanoseek.model.kernels import experts_ffn
from nanoseek.model.layers import MLP


class Router(nn.Module):
    """The `gate`: affinities (sigmoid or softmax), then (group-limited) top-k selection; V3's
    selection adds the balancing bias."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        bias = torch.zeros(cfg.n_routed_experts) if cfg.topk_method == "noaux_tc" else None
        self.register_buffer("e_score_correction_bias", bias)  # None (no state) for V2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, C) -> scores (N, E), expert ids (N, K), weights (N, K)."""
        cfg = self.cfg
        N, E, G = x.shape[0], cfg.n_routed_experts, cfg.n_group
        logits = F.linear(x.float(), self.weight.float())  # (N, E)
        scores = logits.sigmoid() if cfg.scoring_func == "sigmoid" else logits.softmax(dim=-1)
        choice = scores.detach()  # what selects the experts
        if self.e_score_correction_bias is not None:
            choice = choice + self.e_score_correction_bias
        if G > 1 and cfg.topk_method != "greedy":
            per_group = choice.view(N, G, E // G)
            if cfg.topk_method == "noaux_tc":
                group_scores = per_group.topk(2, dim=-1).values.sum(-1)  # (N, G)
            else:  # group_limited_greedy
                group_scores = per_group.amax(dim=-1)
            top_groups = group_scores.topk(cfg.topk_group, dim=-1).indices  # (N, topk_group)
            keep = torch.zeros(N, G, dtype=torch.bool, device=x.device).scatter_(1, top_groups, True)
            choice = choice.masked_fill(~keep.repeat_interleave(E // G, dim=1), float("-inf"))
        expert_ids = choice.topk(cfg.num_experts_per_tok, dim=-1).indices  # (N, K)
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
        return experts_ffn(x, expert_ids, weights, self.gate_proj, self.up_proj, self.down_proj)


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
        scores, expert_ids, weights = self.gate(flat)  # affinities (N, E); top-K ids and weights (N, K)
        y = self.experts(flat, expert_ids, weights)  # sum_k weights_k FFN_{expert_k}(x)
        if self.shared_experts is not None:
            y = y + self.shared_experts(flat)  # every token
        balance_loss = None
        if self.training:
            self.expert_load += torch.bincount(expert_ids.flatten(), minlength=self.cfg.n_routed_experts)
            if self.cfg.aux_loss_alpha > 0:
                balance_loss = self.sequence_balance_loss(scores.view(B, T, -1), expert_ids.view(B, T, -1))
        return y.view(B, T, C), balance_loss

    def sequence_balance_loss(self, scores: torch.Tensor, expert_ids: torch.Tensor) -> torch.Tensor:
        """alpha * sum_i f_i P_i per sequence, averaged over the batch (seq_aux), or over the whole
        batch as one sequence. scores (B,T,E), expert_ids (B,T,K)."""
        E, K = self.cfg.n_routed_experts, self.cfg.num_experts_per_tok
        if not self.cfg.seq_aux:
            scores, expert_ids = scores.reshape(1, -1, E), expert_ids.reshape(1, -1, K)
        B, T, _ = scores.shape
        chosen = torch.zeros_like(scores).scatter_(2, expert_ids, 1.0)  # (B, T, E)
        f = chosen.sum(1) * E / (K * T)  # (B, E): load relative to uniform
        p = (scores / scores.sum(-1, keepdim=True)).mean(1)  # (B, E): mean normalized affinity
        return self.cfg.aux_loss_alpha * (f * p).sum(-1).mean()

    @torch.no_grad()
    def update_bias(self, gamma: float, load: torch.Tensor | None = None) -> None:
        """b_i += gamma * sign(mean load - load_i); `load` defaults to the counts since the last call
        (pass all-reduced counts under data parallelism). V2's router has no bias: counts reset only."""
        load = self.expert_load if load is None else load
        if load.sum() > 0 and self.gate.e_score_correction_bias is not None:
            self.gate.e_score_correction_bias += gamma * torch.sign(load.mean() - load)
        self.expert_load.zero_()
