"""The dense grouped-query-attention decoder of Llama 3, Qwen2/2.5 and Qwen3: one model, three families.

    from nanoseek.model import from_pretrained
    model = from_pretrained("Qwen2.5-0.5B/")               # a DenseTransformer (model_type qwen2)
    model = DenseTransformer(DenseConfig(model_type="llama", num_key_value_heads=2))
    logits = model(input_ids)                               # (B, T, vocab)
    losses = model(input_ids, targets=targets)              # Losses(total, lm, 0, 0)

Shapes: B batch, T new tokens, S cached positions, C hidden_size, H query heads, G = num_key_value_heads
K/V heads (H / G query heads share one), D head_dim.

    h = embed_tokens(ids)                                                       (B, T, C)
    per layer:
        x       = input_layernorm(h)
        q, k, v = q_proj(x), k_proj(x), v_proj(x)        (B, T, H, D), (B, T, G, D) x 2   [qwen2: + bias]
        q, k    = q_norm(q), k_norm(k)                   RMSNorm over D, per head          [qwen3 only]
        q, k    = rope(q), rope(k)                       HF's rotate_half convention (below)
        h       = h + o_proj(softmax(q k^T / sqrt(D) + causal) v)   query head i reads K/V head i // (H/G)
        h       = h + mlp(post_attention_layernorm(h))   SwiGLU (layers.MLP)
    logits = lm_head(norm(h))                            lm_head.weight is embed_tokens.weight when tied

Rope as transformers' Llama/Qwen write it: the head dimension is two halves [x1 | x2] rotated by the
same frequencies, rope(x) = [x1 cos - x2 sin | x2 cos + x1 sin] (DeepSeek's MLA rotates interleaved pairs
instead: rope.py). Frequencies inv_freq_j = theta^(-2j/D), rescaled by `rope_scaling`: "linear" divides
all by factor; "llama3" (Llama 3.1) divides the low frequencies (wavelength > original_len /
low_freq_factor) by factor, keeps the high ones (wavelength < original_len / high_freq_factor), and
blends in between with s = (original_len / wavelength - low_freq_factor) / (high - low):
inv_freq = (1 - s) inv_freq / factor + s inv_freq.

Training attention expands K/V to the H query heads and runs the shared block-causal kernel
(kernels.causal_attention: SDPA on GPU). Decoding goes through `KVCache`, one row [K heads | V heads]
per token with K already rotated; the H/G query heads of a group attend over their one K/V head as a
single matrix, so the cache is never expanded.

Config fields are transformers' (LlamaConfig, Qwen2Config, Qwen3Config); the family is `model_type`, and
what differs between the three is derived from it: qwen2 always has q/k/v bias (o_proj none), llama and
qwen3 have bias on q/k/v/o exactly when `attention_bias`; qwen3 normalizes q and k per head.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nanoseek.model.config import _is_int, _is_number, show_value
from nanoseek.model.errors import CheckpointError
from nanoseek.model.kernels import causal_attention, fused_linear, linear
from nanoseek.model.kv_cache import SlotCache
from nanoseek.model.layers import MLP, RMSNorm
from nanoseek.model.registry import Family, LoadHints, PretrainedModel, register
from nanoseek.model.rope import RotaryEmbedding
from nanoseek.model.transformer import DeepSeekV3, Losses

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
ROPE_TYPES = ("default", "linear", "llama3")


# ------------------------------------------------------------------------------ config
@dataclass
class DenseConfig:
    model_type: str = "llama"  # llama | qwen2 | qwen3
    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 192
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None  # None: as many as query heads (plain multi-head attention)
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": "linear" | "llama3", "factor", ...}
    rms_norm_eps: float = 1e-6
    attention_bias: bool | None = None  # None: the family's (qwen2 True, else False)
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # unknown HF fields, kept for round trips

    def __post_init__(self):
        if self.model_type not in ARCHITECTURES:
            raise ValueError(
                f"model_type: expected one of {', '.join(ARCHITECTURES)}, got {show_value(self.model_type)}"
            )
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None and _is_int(self.hidden_size) and _is_int(self.num_attention_heads):
            self.head_dim = self.hidden_size // max(self.num_attention_heads, 1)
        if self.attention_bias is None:
            self.attention_bias = self.model_type == "qwen2"
        _check(self)

    # ------------------------------------------------------------------ what the family decides
    @property
    def qkv_bias(self) -> bool:
        return self.attention_bias

    @property
    def o_bias(self) -> bool:
        return self.attention_bias and self.model_type != "qwen2"

    @property
    def qk_norm(self) -> bool:
        return self.model_type == "qwen3"

    @property
    def kv_groups(self) -> int:
        """Query heads per K/V head (H / G)."""
        return self.num_attention_heads // self.num_key_value_heads

    def replace(self, **changes) -> DenseConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ HF conversion
    def to_hf_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        if self.model_type == "qwen2":
            del d["attention_bias"]  # not a Qwen2Config field: its q/k/v always have a bias
        del d["rope_scaling"]
        d["rope_parameters"] = {
            "rope_theta": self.rope_theta,
            "rope_type": "default",
            **(self.rope_scaling or {}),
        }
        d["hidden_act"] = "silu"
        d["architectures"] = [ARCHITECTURES[self.model_type]]
        return {**self.extra, **d}

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> DenseConfig:
        """A config.json of transformers (v4: rope_theta + rope_scaling; v5: rope_parameters) or ours.
        A field of the wrong type or range, or a feature this model lacks, raises ValueError naming it."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object of config fields, got {show_value(d)}")
        d = dict(d)
        d["rope_theta"], d["rope_scaling"] = _rope_from_hf(d)
        _refuse_unsupported(d)
        if isinstance(d.get("eos_token_id"), list):  # stop tokens beyond the first: generation_config.json
            if not d["eos_token_id"]:
                raise ValueError("eos_token_id: expected an integer or a non-empty list, got []")
            d["eos_token_id"] = d["eos_token_id"][0]
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names and (v is not None or k == "rope_scaling")}
        extra = {k: v for k, v in d.items() if k not in names and k not in _DERIVED_HF_FIELDS}
        return cls(**known, extra=extra)


# fields that transformers or we derive; never stored in `extra`
_DERIVED_HF_FIELDS = {
    "hidden_act",
    "architectures",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "use_cache",
}
_DERIVED_HF_FIELDS |= {
    "rope_parameters",
    "mlp_bias",
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
}
_DERIVED_HF_FIELDS |= {"layer_types", "attention_dropout", "pretraining_tp", "pad_token_id"}


def _rope_from_hf(d: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """(rope_theta, rope_scaling or None for plain rope) from either config.json layout."""
    rp = d.get("rope_parameters")
    if rp is not None and not isinstance(rp, dict):
        raise ValueError(f"rope_parameters: expected an object, got {show_value(rp)}")
    rs = d.get("rope_scaling")
    if rs is not None and not isinstance(rs, dict):
        raise ValueError(f"rope_scaling: expected an object (or null), got {show_value(rs)}")
    params = {**(rp or {}), **(rs or {})}
    theta = params.pop("rope_theta", d.get("rope_theta", 10000.0))
    kind = params.pop("rope_type", params.pop("type", "default"))
    if kind not in ROPE_TYPES:
        raise ValueError(f"rope_scaling: type {kind!r} is not supported; supported: {', '.join(ROPE_TYPES)}")
    return theta, None if kind == "default" else {"rope_type": kind, **params}


def _refuse_unsupported(d: dict[str, Any]) -> None:
    if d.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act: only 'silu' (SwiGLU) is supported, got {show_value(d['hidden_act'])}")
    if d.get("mlp_bias"):
        raise ValueError("mlp_bias: true is not supported (the MLP projections have no bias)")
    if d.get("use_sliding_window"):
        raise ValueError(
            "use_sliding_window: true is not supported (every layer attends over the full context)"
        )


_POSITIVE_INTS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
)
_POSITIVE_INTS += ("num_key_value_heads", "head_dim", "max_position_embeddings")


def _check(cfg: DenseConfig) -> None:
    """ValueError("field: expected ..., got ...") for the first field of the wrong type or range."""
    for name in _POSITIVE_INTS:
        value = getattr(cfg, name)
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {show_value(value)}")
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(cfg, name)
        if value is not None and (not _is_int(value) or value < 0):
            raise ValueError(f"{name}: expected an integer >= 0, got {show_value(value)}")
    for name, positive in (("rope_theta", True), ("rms_norm_eps", True), ("initializer_range", False)):
        value = getattr(cfg, name)
        if not _is_number(value) or not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise ValueError(
                f"{name}: expected a {'positive number' if positive else 'number >= 0'}, got {show_value(value)}"
            )
    for name in ("attention_bias", "tie_word_embeddings"):
        if not isinstance(getattr(cfg, name), bool):
            raise ValueError(f"{name}: expected true or false, got {show_value(getattr(cfg, name))}")
    if cfg.model_type == "qwen2" and not cfg.attention_bias:
        raise ValueError("attention_bias: qwen2 always has a bias on q/k/v; use model_type llama for none")
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise ValueError(
            f"num_key_value_heads: {cfg.num_key_value_heads} does not divide "
            f"num_attention_heads={cfg.num_attention_heads}"
        )
    if cfg.head_dim % 2:
        raise ValueError(f"head_dim: expected an even number (rope rotates halves), got {cfg.head_dim}")
    if cfg.rope_scaling is not None:
        _check_rope_scaling(cfg.rope_scaling)


def _check_rope_scaling(rs: Any) -> None:
    if not isinstance(rs, dict) or rs.get("rope_type") not in ROPE_TYPES[1:]:
        raise ValueError(
            f"rope_scaling: expected {{'rope_type': 'linear' | 'llama3', ...}}, got {show_value(rs)}"
        )
    need = ["factor"] + (["low_freq_factor", "high_freq_factor"] if rs["rope_type"] == "llama3" else [])
    for key in need:
        value = rs.get(key)
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"rope_scaling.{key}: expected a positive number, got {show_value(value)}")
    if rs["rope_type"] == "llama3":
        if not rs["low_freq_factor"] < rs["high_freq_factor"]:
            raise ValueError("rope_scaling.high_freq_factor: must exceed low_freq_factor")
        original = rs.get("original_max_position_embeddings")
        if not _is_int(original) or original < 1:
            raise ValueError(
                f"rope_scaling.original_max_position_embeddings: expected a positive integer, got {show_value(original)}"
            )


# ------------------------------------------------------------------------------ rope (rotate_half)
def rope_frequencies(cfg: DenseConfig) -> torch.Tensor:
    """Inverse frequencies (D / 2,), rescaled as `rope_scaling` says (module docstring)."""
    D = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    rs = cfg.rope_scaling
    if rs is None:
        return inv_freq
    factor = rs["factor"]
    if rs["rope_type"] == "linear":
        return inv_freq / factor
    original, low, high = (
        rs["original_max_position_embeddings"],
        rs["low_freq_factor"],
        rs["high_freq_factor"],
    )
    wavelength = 2 * math.pi / inv_freq
    scaled = torch.where(wavelength > original / low, inv_freq / factor, inv_freq)
    s = (original / wavelength - low) / (high - low)
    smoothed = (1 - s) * scaled / factor + s * scaled
    medium = (wavelength >= original / high) & (wavelength <= original / low)
    return torch.where(medium, smoothed, scaled)


class DenseRotary(RotaryEmbedding):
    """rope.RotaryEmbedding's cos/sin tables (grown on demand) over this family's frequencies."""

    def __init__(self, cfg: DenseConfig):
        nn.Module.__init__(self)
        self.amplitude = 1.0
        self.register_buffer("inv_freq", rope_frequencies(cfg), persistent=False)
        self._build(cfg.max_position_embeddings)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, heads, D) as [x1 | x2] halves; cos/sin (B, T, D/2) -> [x1 cos - x2 sin | x2 cos + x1 sin]."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


# ------------------------------------------------------------------------------ the K/V cache
class KVCache(SlotCache):
    """Preallocated grouped-query K/V cache: per layer, each token's rotated keys and its values.

    kv[layer]: (num_slots, max_len, 2 G D), one row [K heads | V heads] per token (kv_cache.py), so
    decoding reads one contiguous block per sequence. Bytes per token = 2 G D x layers x dtype size.
    """

    def __init__(self, cfg: DenseConfig, num_slots: int, max_len: int, device=None, dtype=torch.float32):
        width = 2 * cfg.num_key_value_heads * cfg.head_dim
        super().__init__(cfg.num_hidden_layers, num_slots, max_len, width, device, dtype)


# ------------------------------------------------------------------------------ the model
class GQAttention(nn.Module):
    def __init__(self, cfg: DenseConfig, layer_idx: int):
        super().__init__()
        self.cfg, self.layer_idx = cfg, layer_idx
        C, H, G, D = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(C, H * D, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(C, G * D, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(C, G * D, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(H * D, C, bias=cfg.o_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(D, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(D, cfg.rms_norm_eps)
        self.scale = D**-0.5

    def forward(self, x, cos, sin, cache: KVCache | None = None, positions=None, slots=None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). Without a cache, causal attention over x's own tokens; with one,
        this step's [K | V] rows go into the cache at (slot, position) and each query attends over its
        slot's cached positions <= its own."""
        B, T, _ = x.shape
        q, k, v = self.project(x, cos, sin)
        if cache is None:  # training, prefill without a cache
            out = causal_attention(
                q.transpose(1, 2), self.expand(k), self.expand(v), self.scale
            )  # (B, H, T, D)
            return linear(out.transpose(1, 2).reshape(B, T, -1), self.o_proj)
        kv = cache.kv[self.layer_idx]  # (slots, max_len, 2 G D)
        kv[slots[:, None].expand_as(positions), positions] = torch.cat([k.flatten(2), v.flatten(2)], -1).to(
            kv.dtype
        )
        S = int(positions.max()) + 1
        prefix = kv[:, :S].index_select(0, slots).to(x.dtype)  # (B, S, 2 G D): the first S positions
        k, v = prefix.view(B, S, 2, self.cfg.num_key_value_heads, -1).unbind(2)  # (B, S, G, D) each
        visible = None  # one query at the end of one sequence sees all S positions: no mask needed
        if positions.numel() > 1:
            visible = torch.arange(S, device=x.device)[None, None, :] <= positions[:, :, None]  # (B, T, S)
        return linear(self.grouped(q, k, v, visible), self.o_proj)

    def project(self, x, cos, sin):
        """x (B, T, C) -> q (B, T, H, D), k and v (B, T, G, D); q and k normalized (qwen3) and rotated."""
        B, T, _ = x.shape
        q, k, v = fused_linear(x, self.q_proj, self.k_proj, self.v_proj)  # one matmul when bias-free
        q, k, v = (
            q.view(B, T, -1, self.cfg.head_dim),
            k.view(B, T, -1, self.cfg.head_dim),
            v.view(B, T, -1, self.cfg.head_dim),
        )
        if self.cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        return rotate(q, cos, sin), rotate(k, cos, sin), v

    def expand(self, kv: torch.Tensor) -> torch.Tensor:
        """(B, T, G, D) -> (B, H, T, D), K/V head g repeated for its H/G query heads (transformers' repeat_kv)."""
        B, T, G, D = kv.shape
        return kv.transpose(1, 2)[:, :, None].expand(B, G, self.cfg.kv_groups, T, D).reshape(B, -1, T, D)

    def grouped(self, q, k, v, visible) -> torch.Tensor:
        """Attention over cached K/V without expanding them: q (B, T, H, D), k, v (B, S, G, D), visible
        (B, T, S) bool or None (all visible) -> (B, T, H * D). A group's T x H/G queries are one matrix
        against its one K/V head: one bmm for the scores, one for the output."""
        B, T, H, D = q.shape
        G, n = k.shape[2], self.cfg.kv_groups
        q = q.view(B, T, G, n, D).permute(0, 2, 1, 3, 4).reshape(B, G, T * n, D)
        scores = (q @ k.permute(0, 2, 3, 1)).float() * self.scale  # (B, G, T n, S)
        if visible is not None:
            scores = scores.view(B, G, T, n, -1).masked_fill(~visible[:, None, :, None], float("-inf"))
        probs = scores.view(B, G, T * n, -1).softmax(dim=-1).to(v.dtype)
        out = probs @ v.transpose(1, 2)  # (B, G, T n, D)
        return out.view(B, G, T, n, D).permute(0, 2, 1, 3, 4).reshape(B, T, H * D)


class DenseBlock(nn.Module):
    def __init__(self, cfg: DenseConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = GQAttention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, h, cos, sin, cache=None, positions=None, slots=None):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, cache, positions, slots)
        return h + self.mlp(self.post_attention_layernorm(h))


class DenseTransformer(PretrainedModel):
    """Initialization (from scratch) as DeepSeekV3's: matrices reading the residual stream N(0, 1/fan_in),
    those writing back into it (o_proj, down_proj) and an untied head zero, biases zero, norms one; the
    embedding N(0, 1), or N(0, 1/C^2) when the head shares it: then a token's logit for itself,
    norm(e) . e = sqrt(C) |e|, is about 1 and the others about 1/sqrt(C), so the first loss is near ln(vocab)."""

    def __init__(self, cfg: DenseConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DenseBlock(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = DenseRotary(cfg)
        self.init_weights()

    def forward(self, input_ids, targets=None, positions=None, cache: KVCache | None = None, slots=None):
        """input_ids (B, T) -> logits (B, T, vocab), or Losses when targets (B, T) are given (ignore
        index -100). With a cache, `positions` (B, T) are absolute positions and `slots` (B,) the cache
        rows of the sequences."""
        h, _ = self.hidden_states(input_ids, positions, cache, slots)
        if targets is None:
            return linear(self.norm(h), self.lm_head)
        lm = self.head_loss(self.norm(h), targets)
        zero = lm.new_zeros(())
        return Losses(lm, lm, zero, zero)

    def hidden_states(self, input_ids, positions=None, cache=None, slots=None):
        """Final hidden state before the norm (B, T, C), and [] (no balance losses: the engine's contract)."""
        B, T = input_ids.shape
        if positions is None:
            positions = torch.arange(T, device=input_ids.device).expand(B, T)
        cos, sin = self.rotary(positions)
        h = self.embed_tokens(input_ids)
        for layer in self.layers:
            h = layer(h, cos, sin, cache, positions, slots)
        return h, []

    head_loss = DeepSeekV3.head_loss  # the chunked linear_cross_entropy for a plain head, else the plain loss

    def moe_layers(self) -> list:
        return []  # no routers to balance

    @torch.no_grad()
    def init_weights(self) -> None:
        tied = self.config.tie_word_embeddings
        for name, p in self.named_parameters():  # a tied head appears once, as embed_tokens.weight
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:  # norm weights
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")) or name == "lm_head.weight":
                nn.init.zeros_(p)
            elif name == "embed_tokens.weight":
                nn.init.normal_(p, std=1 / self.config.hidden_size if tied else 1.0)
            else:
                nn.init.normal_(p, std=p.shape[-1] ** -0.5)

    def new_cache(self, num_slots: int, max_len: int, with_mtp: bool = False, dtype=None) -> KVCache:
        if with_mtp:
            raise ValueError(f"{self.config.model_type} has no multi-token prediction layers to cache")
        p = self.embed_tokens.weight
        return KVCache(self.config, num_slots, max_len, device=p.device, dtype=dtype or p.dtype)


# ------------------------------------------------------------------------------ HF key map and loading
def to_hf_state_dict(model: DenseTransformer) -> dict[str, torch.Tensor]:
    """Our names are transformers' without the `model.` prefix; a tied head is not written."""
    out = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        out[name if name.startswith("lm_head") else f"model.{name}"] = t.detach().contiguous()
    return out


def from_hf_state_dict(cfg: DenseConfig, hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF names -> ours. Tied: the head is the embedding (an lm_head.weight in the files is ignored, as
    transformers ignores it)."""
    ours = {name.removeprefix("model."): t for name, t in hf.items()}
    if cfg.tie_word_embeddings and "embed_tokens.weight" in ours:
        ours["lm_head.weight"] = ours["embed_tokens.weight"]
    return ours


def check_layers(cfg: DenseConfig, hf: dict[str, torch.Tensor], where: Path) -> None:
    """The weights hold exactly layers 0 .. num_hidden_layers - 1 (named on its own: the commonest error)."""
    found = sorted({int(m.group(1)) for n in hf if (m := re.match(r"model\.layers\.(\d+)\.", n))})
    L = cfg.num_hidden_layers
    if found != list(range(L)):
        holds = f"{len(found)} layers ({', '.join(map(str, found[:8]))}{', ...' if len(found) > 8 else ''})"
        raise CheckpointError(
            where,
            f"num_hidden_layers: config.json says {L}, but the weights hold {holds}",
            "num_hidden_layers",
        )


def hf_name(cfg: DenseConfig, name: str) -> str:
    return name if name.startswith("lm_head") else f"model.{name}"


_Q_HEADS, _KV_HEADS = "num_attention_heads x head_dim", "num_key_value_heads x head_dim"
SHAPES = (
    (r"(embed_tokens|lm_head)\.weight$", ("vocab_size", "hidden_size")),
    (r"\.q_proj\.weight", (_Q_HEADS, "hidden_size")),
    (r"\.q_proj\.bias", (_Q_HEADS,)),
    (r"\.(k|v)_proj\.weight", (_KV_HEADS, "hidden_size")),
    (r"\.(k|v)_proj\.bias", (_KV_HEADS,)),
    (r"\.o_proj\.weight", ("hidden_size", _Q_HEADS)),
    (r"\.o_proj\.bias", ("hidden_size",)),
    (r"\.(q|k)_norm\.", ("head_dim",)),
    (r"\.mlp\.(gate|up)_proj\.", ("intermediate_size", "hidden_size")),
    (r"\.mlp\.down_proj\.", ("hidden_size", "intermediate_size")),
    (r"norm", ("hidden_size",)),
)
PRESENCE = (
    (r"_proj\.bias$", "attention_bias / model_type"),
    (r"\.(q|k)_norm\.", "model_type"),
    (r"^lm_head\.", "tie_word_embeddings"),
)


def build_counts(cfg: DenseConfig) -> tuple[int, int]:
    """(parameters, rope-table numbers) that `DenseTransformer(cfg)` allocates (a tied head once)."""
    from nanoseek.model.accounting import account

    return account(cfg).total_params, 2 * cfg.max_position_embeddings * (cfg.head_dim // 2)


HINTS = LoadHints(
    check_layers=check_layers, hf_name=hf_name, shapes=SHAPES, presence=PRESENCE, build_counts=build_counts
)
LLAMA, QWEN2, QWEN3 = (
    register(Family(t, DenseTransformer, DenseConfig, KVCache, to_hf_state_dict, from_hf_state_dict, HINTS))
    for t in ARCHITECTURES
)
