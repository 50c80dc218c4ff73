"""The DeepSeek-V3 language model: embeddings, MLA + (Dense|MoE) blocks, final norm, head, and MTP.

    model = DeepSeekV3(ModelConfig(...))              # or DeepSeekV3.from_pretrained("runs/x/model")
    logits = model(input_ids)                          # (B, T, vocab)
    losses = model(input_ids, targets=targets)         # Losses(total, lm, mtp, balance)
    model.save_pretrained("out/")                      # a Hugging Face DeepseekV3ForCausalLM directory

The same class runs DeepSeek-V2 and V2-Lite: `ModelConfig(model_type="deepseek_v2", ...)` switches the
router to V2's softmax gating (moe.py) and saves a DeepseekV2ForCausalLM directory; V2 has no MTP.

Multi-token prediction (DeepSeek-V3 sec. 2.2): MTP module k (1-based) takes the previous depth's
hidden state h^{k-1} at position i and the embedding of token t_{i+k}, and predicts t_{i+k+1}:

    h'_i = eh_proj([enorm(Emb(t_{i+k})) ; hnorm(h^{k-1}_i)])      (B, T-k, C), order as in vLLM
    h^k  = Block_k(h'),   logits^k = lm_head(shared_head.norm(h^k))

The embedding and output head are the main model's. The MTP loss is the mean of the per-depth
cross-entropies and comes back separately, weighted by lambda (`mtp_loss_weight`) in `total`.

Initialization (chosen to train well at toy scale with AdamW, cf. nanochat): embeddings N(0, 1);
every matrix that reads the residual stream or a normalized latent N(0, 1/fan_in), so activations
start at unit scale; every matrix that writes back into the residual stream (o_proj, down_proj, the
experts' down_proj, eh_proj excepted) and the lm_head start at zero, so each block starts as the
identity and the initial loss is exactly ln(vocab). Router weights N(0, 1/fan_in), biases zero.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nanoseek.model.attention import MLA, LatentCache
from nanoseek.model.config import ModelConfig
from nanoseek.model.kernels import linear, linear_cross_entropy, plain_linear
from nanoseek.model.layers import MLP, RMSNorm
from nanoseek.model.moe import MoE
from nanoseek.model.registry import PretrainedModel
from nanoseek.model.rope import RotaryEmbedding


class Losses(NamedTuple):
    total: torch.Tensor  # lm + lambda * mtp + balance: what to backpropagate
    lm: torch.Tensor  # next-token cross-entropy (nats per token)
    mtp: torch.Tensor  # mean MTP cross-entropy over depths (0 without MTP)
    balance: torch.Tensor  # sum over MoE layers of the sequence-wise balance loss (0 when alpha = 0)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = MLA(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MoE(cfg) if cfg.layer_is_moe(layer_idx) else MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, h, cos, sin, cache=None, positions=None, slots=None):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, cache, positions, slots)
        if isinstance(self.mlp, MoE):
            y, balance = self.mlp(self.post_attention_layernorm(h))
            return h + y, balance
        return h + self.mlp(self.post_attention_layernorm(h)), None


class SharedHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class MTPModule(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.enorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.hnorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.block = Block(cfg, layer_idx)
        self.shared_head = SharedHead(cfg)

    def forward(self, h_prev, token_emb, cos, sin, cache=None, positions=None, slots=None):
        h = self.eh_proj(torch.cat([self.enorm(token_emb), self.hnorm(h_prev)], dim=-1))
        return self.block(h, cos, sin, cache, positions, slots)


class DeepSeekV3(PretrainedModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.mtp = nn.ModuleList(
            MTPModule(cfg, cfg.num_hidden_layers + k) for k in range(cfg.num_nextn_predict_layers)
        )
        self.rotary = RotaryEmbedding(cfg)
        self.init_weights()

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        cache: LatentCache | None = None,
        slots: torch.Tensor | None = None,
        mtp_rows: int | None = None,
    ) -> torch.Tensor | Losses:
        """input_ids (B, T) -> logits (B, T, vocab), or Losses when targets (B, T) are given
        (ignore index -100). With a cache, `positions` (B, T) are absolute positions and `slots` (B,)
        the cache rows of the sequences. mtp_rows: the MTP loss over the first mtp_rows rows only
        (None: every row), a cheaper MTP signal where the MTP block costs as much as the model."""
        h, balance = self.hidden_states(input_ids, positions, cache, slots)
        if targets is None:
            return linear(self.norm(h), self.lm_head)
        lm = self.head_loss(self.norm(h), targets)
        r = slice(None, mtp_rows)
        mtp = self.mtp_loss(h[r], input_ids[r], targets[r]) if len(self.mtp) else lm.new_zeros(())
        balance = torch.stack(balance).sum() if balance else lm.new_zeros(())
        return Losses(lm + self.config.mtp_loss_weight * mtp + balance, lm, mtp, balance)

    def hidden_states(self, input_ids, positions=None, cache=None, slots=None):
        """Final hidden state before the norm (B, T, C), and the list of MoE balance losses."""
        B, T = input_ids.shape
        if positions is None:
            positions = torch.arange(T, device=input_ids.device).expand(B, T)
        cos, sin = self.rotary(positions)
        h = self.embed_tokens(input_ids)
        balance = []
        for layer in self.layers:
            h, b = layer(h, cos, sin, cache, positions, slots)
            if b is not None:
                balance.append(b)
        return h, balance

    def mtp_hidden(self, k: int, h_prev, next_ids, positions, cache=None, slots=None) -> torch.Tensor:
        """Depth-k (0-based module index) MTP hidden state from h^{k} (B, T, C) and the ids of the
        tokens one step ahead (B, T) at `positions` (B, T)."""
        cos, sin = self.rotary(positions)
        h, _ = self.mtp[k](h_prev, self.embed_tokens(next_ids), cos, sin, cache, positions, slots)
        return h

    def mtp_logits(self, k: int, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.mtp[k].shared_head.norm(h))

    def mtp_loss(self, h: torch.Tensor, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        B, T = input_ids.shape
        losses = []
        for k in range(1, len(self.mtp) + 1):
            if T - k <= 0:
                break
            positions = torch.arange(T - k, device=input_ids.device).expand(B, T - k)
            h = self.mtp_hidden(k - 1, h[:, : T - k], input_ids[:, k:], positions)
            # predicts t_{i+k+1} = targets[:, i+k]
            losses.append(self.head_loss(self.mtp[k - 1].shared_head.norm(h), targets[:, k:]))
        return torch.stack(losses).mean()

    def head_loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of lm_head(h) (B, T, C) against targets (B, T), ignore index -100, without
        materializing the fp32 (B*T, vocab) logits (`kernels.linear_cross_entropy`); any head but a
        bias-free nn.Linear (an int8 or LoRA-wrapped one) runs as itself."""
        if plain_linear(self.lm_head):
            return linear_cross_entropy(h.flatten(0, 1), self.lm_head.weight, targets.flatten())
        logits = self.lm_head(h).flatten(0, 1).float()
        return F.cross_entropy(logits, targets.flatten(), ignore_index=-100)

    # ------------------------------------------------------------------ MoE balancing
    def moe_layers(self) -> list[MoE]:
        return [m for m in self.modules() if isinstance(m, MoE)]

    def update_router_biases(
        self, gamma: float | None = None, loads: list[torch.Tensor] | None = None
    ) -> None:
        """Auxiliary-loss-free balancing; call after each optimizer step."""
        gamma = self.config.bias_update_speed if gamma is None else gamma
        for i, moe in enumerate(self.moe_layers()):
            moe.update_bias(gamma, None if loads is None else loads[i])

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() == 1:  # norm weights
                nn.init.ones_(p)
            elif (
                name.endswith(("o_proj.weight", "down_proj.weight", "down_proj")) or name == "lm_head.weight"
            ):
                nn.init.zeros_(p)
            elif name == "embed_tokens.weight":
                nn.init.normal_(p, std=1.0)
            else:  # reads the residual stream: nn.Linear weights are (out, in), stacked experts (E, in, out)
                fan_in = (
                    p.shape[-2] if name.endswith(("experts.gate_proj", "experts.up_proj")) else p.shape[-1]
                )
                nn.init.normal_(p, std=1 / math.sqrt(fan_in))
        for buf_name, buf in self.named_buffers():
            if buf_name.endswith("e_score_correction_bias"):
                buf.zero_()

    # ------------------------------------------------------------------ the cache (checkpoints: PretrainedModel)
    def new_cache(self, num_slots: int, max_len: int, with_mtp: bool = False, dtype=None) -> LatentCache:
        p = self.embed_tokens.weight
        return LatentCache(
            self.config, num_slots, max_len, device=p.device, dtype=dtype or p.dtype, with_mtp=with_mtp
        )
