"""Multi-head Latent Attention (MLA), DeepSeek-V2/V3's attention, in two equivalent forms.

Shapes: B batch, T new tokens, S cached tokens, H heads, R kv_lora_rank, Dn qk_nope_head_dim,
Dr qk_rope_head_dim, Dv v_head_dim.

    q       = q_b(norm(q_a(x)))  or  q_proj(x)              (B, T, H, Dn + Dr)
    c, k_r  = kv_a_proj_with_mqa(x) -> norm(c) (B, T, R), rope(k_r) (B, T, Dr) shared by all heads
    k, v    = kv_b_proj(c) -> (B, T, H, Dn), (B, T, H, Dv);  k = [k_nope | k_r]

Naive form (training, prefill without a cache): expand k and v for every head, causal attention.

Absorbed form (decoding over a cache): only c and rope(k_r) are cached, (R + Dr) numbers per token
per layer instead of H * (Dn + Dr + Dv). kv_b's key half W_uk (H, Dn, R) is folded into the query and
its value half W_uv (H, Dv, R) into the output:

    score = (q_nope W_uk) . c  +  q_rope . k_r          # (B, H, T, S), no per-head keys materialised
    out   = (softmax(score) @ c) W_uv^T                  # (B, T, H, Dv)

The cache is indexed by slot (a row of preallocated memory) and absolute position, so one batch can
mix sequences of different lengths: a query at position p sees cached keys at positions <= p of its
own slot. Stale entries beyond a sequence's length are masked out by that rule.

`MLA.forward` shows both forms; the CPU speed kernels it calls (fused projections, block-causal
attention) live in `kernels.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from nanoseek.model.config import ModelConfig
from nanoseek.model.kernels import causal_attention, fused_linear, linear
from nanoseek.model.kv_cache import SlotCache
from nanoseek.model.layers import RMSNorm
from nanoseek.model.rope import apply_rope


class LatentCache(SlotCache):
    """Preallocated MLA cache: per layer, the normalized latent and the rotated rope key of each token.

    kv[layer]: (num_slots, max_len, R + Dr), one row [latent | rope key] per token, so decoding reads
    one contiguous block per sequence; latent[layer] (.., R) and rope_key[layer] (.., Dr) are views.
    Bytes per token = (R + Dr) * layers * dtype size; `bytes_per_token` measures it from the tensors.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        num_slots: int,
        max_len: int,
        device=None,
        dtype=torch.float32,
        with_mtp: bool = False,
    ):
        # MTP modules are attention layers too; speculative decoding caches them after the main layers
        n_layers = cfg.num_hidden_layers + (cfg.num_nextn_predict_layers if with_mtp else 0)
        R, Dr = cfg.kv_lora_rank, cfg.qk_rope_head_dim
        super().__init__(n_layers, num_slots, max_len, R + Dr, device, dtype)
        self.latent = [t[..., :R] for t in self.kv]
        self.rope_key = [t[..., R:] for t in self.kv]


class MLA(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.cfg, self.layer_idx = cfg, layer_idx
        H = cfg.num_attention_heads
        if cfg.q_lora_rank:
            self.q_a_proj = nn.Linear(cfg.hidden_size, cfg.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps)
            self.q_b_proj = nn.Linear(cfg.q_lora_rank, H * cfg.qk_head_dim, bias=False)
        else:
            self.q_proj = nn.Linear(cfg.hidden_size, H * cfg.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(
            cfg.hidden_size, cfg.kv_lora_rank + cfg.qk_rope_head_dim, bias=False
        )
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, cfg.rms_norm_eps)
        self.kv_b_proj = nn.Linear(cfg.kv_lora_rank, H * (cfg.qk_nope_head_dim + cfg.v_head_dim), bias=False)
        self.o_proj = nn.Linear(H * cfg.v_head_dim, cfg.hidden_size, bias=False)
        self.scale = cfg.softmax_scale

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: LatentCache | None = None,
        positions: torch.Tensor | None = None,
        slots: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). Without a cache, the naive form over x's own tokens; with one,
        this step's [latent | rope key] rows go into the cache at (slot, position) and the absorbed
        form attends over each slot's cached positions <= the query's own."""
        q_nope, q_rope, latent, k_rope = self.project(x, cos, sin)
        if cache is None:  # training, prefill without a cache
            return linear(self.naive(q_nope, q_rope, latent, k_rope), self.o_proj)
        kv = cache.kv[self.layer_idx]  # (slots, max_len, R + Dr)
        kv[slots[:, None].expand_as(positions), positions] = torch.cat([latent, k_rope], dim=-1).to(kv.dtype)
        S = int(positions.max()) + 1
        prefix = kv[:, :S].index_select(0, slots).to(x.dtype)  # (B, S, R + Dr): the first S positions
        c, kr = prefix.split([self.cfg.kv_lora_rank, self.cfg.qk_rope_head_dim], dim=-1)
        visible = None  # one query at the end of one sequence sees all S positions: no mask needed
        if positions.numel() > 1:
            visible = torch.arange(S, device=x.device)[None, None, :] <= positions[:, :, None]  # (B, T, S)
        return self.o_proj(self.absorbed(q_nope, q_rope, c, kr, visible))  # a few rows: o_proj's own forward

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x (B, T, C) -> q_nope (B,T,H,Dn), q_rope (B,T,H,Dr), latent (B,T,R), k_rope (B,T,Dr)."""
        cfg = self.cfg
        B, T, _ = x.shape
        # the query's first projection and kv_a read the same x: one matmul
        if cfg.q_lora_rank:
            q_a, kv_a = fused_linear(x, self.q_a_proj, self.kv_a_proj_with_mqa)
            q = linear(self.q_a_layernorm(q_a), self.q_b_proj)
        else:
            q, kv_a = fused_linear(x, self.q_proj, self.kv_a_proj_with_mqa)
        q = q.view(B, T, cfg.num_attention_heads, cfg.qk_head_dim)
        q_nope, q_rope = q.split([cfg.qk_nope_head_dim, cfg.qk_rope_head_dim], dim=-1)
        q_rope = apply_rope(q_rope, cos.unsqueeze(-2), sin.unsqueeze(-2))
        latent, k_rope = kv_a.split([cfg.kv_lora_rank, cfg.qk_rope_head_dim], dim=-1)
        return q_nope, q_rope, self.kv_a_layernorm(latent), apply_rope(k_rope, cos, sin)

    def naive(self, q_nope, q_rope, latent, k_rope) -> torch.Tensor:
        """Causal attention with per-head keys and values expanded from the latent -> (B, T, H * Dv)."""
        cfg = self.cfg
        B, T, H, _ = q_nope.shape
        kv = linear(latent, self.kv_b_proj).view(B, T, H, cfg.qk_nope_head_dim + cfg.v_head_dim)
        k_nope, v = kv.split([cfg.qk_nope_head_dim, cfg.v_head_dim], dim=-1)
        # concatenating the transposed views lays q and k out contiguous as (B, H, T, D): one copy each
        q = torch.cat([q_nope.transpose(1, 2), q_rope.transpose(1, 2)], dim=-1)  # (B, H, T, Dn+Dr)
        k_rope = k_rope.unsqueeze(1).expand(B, H, T, -1)
        k = torch.cat([k_nope.transpose(1, 2), k_rope], dim=-1)  # (B, H, T, Dn+Dr)
        out = causal_attention(q, k, v.transpose(1, 2).contiguous(), self.scale)  # (B, H, T, Dv)
        return out.transpose(1, 2).reshape(B, T, H * cfg.v_head_dim)

    def absorbed(self, q_nope, q_rope, latent, k_rope, visible) -> torch.Tensor:
        """Attention in latent space: latent (B, S, R), k_rope (B, S, Dr), visible (B, T, S) bool or
        None (all visible) -> (B, T, H * Dv). The T x H queries of a sequence are one matrix: each
        product is one bmm."""
        cfg = self.cfg
        B, T, H, _ = q_nope.shape
        w_uk, w_uv = self.absorbed_weights()  # (H, Dn, R), (H, Dv, R)
        q_latent = torch.einsum("bthd,hdr->bthr", q_nope, w_uk)  # (B, T, H, R)
        scores = q_latent.reshape(B, T * H, -1) @ latent.transpose(1, 2)  # (B, T*H, S)
        scores = scores + q_rope.reshape(B, T * H, -1) @ k_rope.transpose(1, 2)
        scores = scores.view(B, T, H, -1).float() * self.scale
        if visible is not None:
            scores = scores.masked_fill(~visible[:, :, None], float("-inf"))
        probs = scores.softmax(dim=-1).to(latent.dtype).view(B, T * H, -1)  # (B, T*H, S)
        out_latent = (probs @ latent).view(B, T, H, -1)  # (B, T, H, R)
        out = torch.einsum("bthr,hvr->bthv", out_latent, w_uv)  # (B, T, H, Dv)
        return out.reshape(B, T, H * cfg.v_head_dim)

    def absorbed_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """kv_b's key and value halves, W_uk (H, Dn, R) and W_uv (H, Dv, R). Outside autograd they are
        kept as contiguous copies until the weight changes (decoding asks every layer, every step)."""
        cfg, w = self.cfg, self.kv_b_proj.weight
        shape = (cfg.num_attention_heads, cfg.qk_nope_head_dim + cfg.v_head_dim, cfg.kv_lora_rank)
        if torch.is_grad_enabled() and w.requires_grad:
            return w.view(shape).split([cfg.qk_nope_head_dim, cfg.v_head_dim], dim=1)
        key = (w._version, w.data_ptr(), w.dtype, w.device)
        if getattr(self, "_absorbed_key", None) != key:
            halves = w.detach().view(shape).split([cfg.qk_nope_head_dim, cfg.v_head_dim], dim=1)
            self._absorbed, self._absorbed_key = tuple(h.contiguous() for h in halves), key
        return self._absorbed
