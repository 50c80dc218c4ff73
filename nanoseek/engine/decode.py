"""The fast decode path: new tokens through every layer in one C call, on fused copies of the weights.

    reason = FastDecoder.supports(model, cache)           # None, or why this model takes its own forward
    decoder = FastDecoder(model)                          # fuses the weights once (again after a sync)
    h = decoder.hidden(tokens, positions, slots, cache)   # (N,) ids, positions, slots -> (N, C)
    h, logits = decoder.forward(tokens, positions, slots, cache)   # and the logits (N, V), one call

`ModelRunner` decodes with it whenever `supports` says yes: every plain decode step, speculation's
[pending, draft] pairs (two rows of one slot) and its drafter (`mtp_hidden`, the MTP module's block as
a one-layer step). Prefill, and every model it refuses (another family, another dtype or device, no C
compiler), run the model's own forward. It is built beside the model: it reads the model's weights
when it is built and never changes the model.

What it computes is `DeepSeekV3.hidden_states` in MLA's absorbed form (or `DenseTransformer`'s), the
same function of the same weights; `reference.py` writes it out in torch, row by row, as the
specification that `decode_step.c` is tested against. Why C: a decode step is the weights streamed
once plus ~70 small operations per layer (norms, rope, attention over the cache, routing,
activations); as torch calls those cost about a third of a batch-1 step, in C a small fraction
(docs/engine.md has the measurements).

The fused weights (`LayerWeights`, one per block), each matrix a `Matrix` (fp32, or int8 with per-row
scales from `quant.quantize_int8`):

- queries, rope key and latent come out of one matmul: [q_proj | kv_a_proj_with_mqa] (or [q_a_proj |
  kv_a] with a low-rank query) fused row-wise, rows reordered so the output reads [q_nope (H*Dn) |
  q_rope (H*Dr) | k_rope (Dr) | latent (R)], the rope dimensions already split into [evens | odds]
  (what `apply_rope` pairs up), so rope is x * [cos|cos] + swap_halves(x) * [-sin|sin];
- kv_b's halves as the absorbed per-head matrices, W_uk^T (H, R, Dn) and W_uv (H, Dv, R);
- the dense MLP's gate and up as one matrix; the MoE router with the shared expert's gate and up
  appended (fp32 models), each routed expert's gate and up as one (2I, C) matrix and its down (C, I).

For the dense GQA families (Llama, Qwen2, Qwen3: `DenseTransformer`) the step is grouped-query
attention over the K/V cache (`DenseLayerWeights`): [q_proj | k_proj | v_proj] fused row-wise with
their biases beside them (fp32, added after the product), q/k norm weights (Qwen3), o_proj and its bias,
and the same SwiGLU MLP; rope rotates each head's two halves, which is the C step's rope as it is (no
reordering). A tied head is the embedding matrix, read in place (int8: quantize_int8's own copy).

Row-wise fusion and reordering keep every output channel's weights and scale, so int8 results are the
per-layer results. Matrices used as they are (o_proj, the dense and shared down projections, the
MTP's eh_proj, the output head) are read in place. The C call starts from the token ids (the
embedding lookup, rope factors from a table by position) and, when asked (`forward`), ends with the
final norm and the head: fp32 from PACKED_MIN_ROWS rows the head runs after the call on oneDNN's
packed copy of the weight (but on the decode kernel where it has AVX2 blocks: faster there), fewer
rows and int8 heads inside it. The MTP drafter's call ends with the head's argmax, the drafts.

The engine rebuilds a FastDecoder when a trainer syncs new weights (`Engine.sync_weights`), and
refuses to step on weights changed since then, so the fused copies are never stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from nanoseek.engine import kernels
from nanoseek.engine.decode_step import CDecodeStep, StepEnds, rope_tables
from nanoseek.engine.quant import Int8Experts, Int8Linear
from nanoseek.model import DeepSeekV3, DenseTransformer, MoE
from nanoseek.model.moe import RoutedExperts

# From this many rows on, the fp32 output head runs on oneDNN's packed copy of its weight: its blocked
# GEMM beats the AVX-512 and portable decode kernels on a batch, and loses at 1-2 rows; the AVX2
# kernel's blocks beat it at every batch (docs/engine.md), so that build never packs.
PACKED_MIN_ROWS = 3
ONEDNN_PACK = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
LINEARS = (nn.Linear, Int8Linear)  # the layer types a Matrix reads (bias-free)


@dataclass
class Matrix:
    """y = x W^T for x (N, in): fp32 `w` (out, in), or int8 `q` (out, in) with fp32 per-row `scale`."""

    w: torch.Tensor | None = None
    q: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    @classmethod
    def of(cls, layer: nn.Module) -> Matrix:
        """One bias-free layer's matrix, in place (no copy for a contiguous weight)."""
        if isinstance(layer, Int8Linear):
            return cls(q=layer.qweight.contiguous(), scale=layer.scale.contiguous())
        return cls(w=layer.weight.detach().contiguous())

    @classmethod
    def fuse(cls, layers: list[nn.Module], rows: torch.Tensor | None = None) -> Matrix:
        """Layers reading the same input, fused row-wise (their outputs concatenated), the output rows
        optionally reordered: a new matrix."""
        if all(isinstance(m, Int8Linear) for m in layers):
            q, scale = torch.cat([m.qweight for m in layers]), torch.cat([m.scale for m in layers])
            if rows is not None:
                q, scale = q[rows], scale[rows]
            return cls(q=q.contiguous(), scale=scale.contiguous())
        w = torch.cat([m.weight.detach() for m in layers])
        return cls(w=(w[rows] if rows is not None else w).contiguous())

    @property
    def out_features(self) -> int:
        return (self.w if self.w is not None else self.q).shape[0]


def matmul(x: torch.Tensor, m: Matrix) -> torch.Tensor:
    """x (N, in) fp32 @ W^T on the decode kernels -> (N, out)."""
    if m.w is not None:
        return kernels.matmul(x, m.w)
    return kernels.matmul_int8(x, m.q, m.scale)


def _rope_order(dr: int) -> torch.Tensor:
    # interleaved pairs (x0, x1), (x2, x3), ... -> [x0, x2, ... | x1, x3, ...], as apply_rope reads them
    return torch.cat([torch.arange(0, dr, 2), torch.arange(1, dr, 2)])


def _norm(module: nn.Module) -> tuple[torch.Tensor, float]:
    return module.weight.detach().contiguous(), module.eps


@dataclass
class LayerWeights:
    """One block's fused decode weights (see the module docstring); `reference.py` says how they are
    used, `decode_step.py` hands them to the C step."""

    dims: tuple[int, int, int, int, int]  # H, Dn, Dr, R, Dv
    norm_attn: tuple[torch.Tensor, float]  # (weight, eps) of input_layernorm
    norm_mlp: tuple[torch.Tensor, float]  # post_attention_layernorm
    norm_kv: tuple[torch.Tensor, float]  # kv_a_layernorm
    norm_q: tuple[torch.Tensor, float] | None  # q_a_layernorm (low-rank query), else None
    qkv: Matrix  # [q_nope | q_rope | k_rope | latent], or [q_a | k_rope | latent]
    q_b: Matrix | None  # q_a -> [q_nope | q_rope] (low-rank query)
    uk: torch.Tensor  # (H, R, Dn): W_uk^T per head
    uv: torch.Tensor  # (H, Dv, R)
    o: Matrix
    scale: float  # softmax scale
    # dense MLP
    gate_up: Matrix | None = None  # (2I, C)
    down: Matrix | None = None
    # MoE
    router: Matrix | None = None  # fp32 (E, C), or (E + 2 I_shared, C) with the shared gate and up
    shared_fused: bool = False  # the router's rows E.. are the shared expert's [gate | up]
    shared_gu: Matrix | None = None  # (2 I_shared, C) when not fused
    shared_down: Matrix | None = None
    bias: torch.Tensor | None = None  # (E,) e_score_correction_bias, selection only
    experts_gu: list[Matrix] = field(default_factory=list)  # E of (2I, C)
    experts_down: list[Matrix] = field(default_factory=list)  # E of (C, I)
    routing: tuple = ()  # E, K, G, topk_group, norm_topk_prob, routed_scaling_factor
    kind = 0  # the C struct's layer kind: MLA

    @classmethod
    def of(cls, block: nn.Module) -> LayerWeights:
        attn, cfg = block.self_attn, block.self_attn.cfg
        H, Dn, Dr, R, Dv = (
            cfg.num_attention_heads,
            cfg.qk_nope_head_dim,
            cfg.qk_rope_head_dim,
            cfg.kv_lora_rank,
            cfg.v_head_dim,
        )
        rope = _rope_order(Dr)
        heads = torch.arange(H)[:, None] * (Dn + Dr)
        q_rows = torch.cat([(heads + torch.arange(Dn)).flatten(), (heads + Dn + rope).flatten()])

        def kv_rows(offset: int) -> list[torch.Tensor]:  # kv_a's rows as [k_rope | latent]
            return [offset + R + rope, offset + torch.arange(R)]

        if cfg.q_lora_rank:
            ql = cfg.q_lora_rank
            qkv = Matrix.fuse(
                [attn.q_a_proj, attn.kv_a_proj_with_mqa], torch.cat([torch.arange(ql), *kv_rows(ql)])
            )
            q_b, norm_q = Matrix.fuse([attn.q_b_proj], q_rows), _norm(attn.q_a_layernorm)
        else:
            qkv = Matrix.fuse(
                [attn.q_proj, attn.kv_a_proj_with_mqa], torch.cat([q_rows, *kv_rows(H * (Dn + Dr))])
            )
            q_b, norm_q = None, None
        w_kv_b = attn.kv_b_proj.weight.detach().view(H, Dn + Dv, R)
        lw = cls(
            dims=(H, Dn, Dr, R, Dv),
            norm_attn=_norm(block.input_layernorm),
            norm_mlp=_norm(block.post_attention_layernorm),
            norm_kv=_norm(attn.kv_a_layernorm),
            norm_q=norm_q,
            qkv=qkv,
            q_b=q_b,
            uk=w_kv_b[:, :Dn].transpose(1, 2).contiguous(),
            uv=w_kv_b[:, Dn:].contiguous(),
            o=Matrix.of(attn.o_proj),
            scale=attn.scale,
        )
        mlp = block.mlp
        if isinstance(mlp, MoE):
            lw._add_moe(mlp)
        else:
            lw.gate_up, lw.down = Matrix.fuse([mlp.gate_proj, mlp.up_proj]), Matrix.of(mlp.down_proj)
        return lw

    def _add_moe(self, moe: MoE) -> None:
        c = moe.cfg
        self.routing = (
            c.n_routed_experts,
            c.num_experts_per_tok,
            c.n_group,
            c.topk_group,
            c.norm_topk_prob,
            c.routed_scaling_factor,
        )
        self.bias = moe.gate.e_score_correction_bias.detach().float().contiguous()
        router = moe.gate.weight.detach().float()
        shared = moe.shared_experts
        if shared is not None and type(shared.gate_proj) is nn.Linear and type(shared.up_proj) is nn.Linear:
            router = torch.cat([router, shared.gate_proj.weight.detach(), shared.up_proj.weight.detach()])
            self.shared_fused = True
        elif shared is not None:
            self.shared_gu = Matrix.fuse([shared.gate_proj, shared.up_proj])
        self.router = Matrix(w=router.contiguous())
        self.shared_down = Matrix.of(shared.down_proj) if shared is not None else None
        experts = moe.experts
        if isinstance(experts, Int8Experts):  # (E, 2I, C) and (E, C, I) rows with per-row scales
            self.experts_gu = [Matrix(q=q, scale=s) for q, s in zip(experts.gate_up_q, experts.gate_up_scale)]
            self.experts_down = [Matrix(q=q, scale=s) for q, s in zip(experts.down_q, experts.down_scale)]
        else:  # stacked (E, C, I) / (E, I, C) -> per expert (out, in)
            gate_up = torch.cat([experts.gate_proj.detach(), experts.up_proj.detach()], dim=-1)
            self.experts_gu = [Matrix(w=w.t().contiguous()) for w in gate_up]
            self.experts_down = [Matrix(w=w.t().contiguous()) for w in experts.down_proj.detach()]


def _bias(*layers: nn.Module) -> torch.Tensor | None:
    """The layers' biases concatenated (fp32), or None when none has one (a missing one counts as zeros)."""
    if all(getattr(m, "bias", None) is None for m in layers):
        return None
    parts = [m.bias.detach().float() if m.bias is not None else torch.zeros(m.out_features) for m in layers]
    return torch.cat(parts).contiguous()


@dataclass
class DenseLayerWeights:
    """One dense GQA block's fused decode weights (module docstring); `reference.gqa_attention` says
    how they are used."""

    dims: tuple[int, int, int]  # H, G (K/V heads), D (head_dim)
    norm_attn: tuple[torch.Tensor, float]
    norm_mlp: tuple[torch.Tensor, float]
    qkv: Matrix  # [q (H*D) | k (G*D) | v (G*D)]
    qkv_bias: torch.Tensor | None  # (H*D + 2*G*D,) fp32
    norm_q: tuple[torch.Tensor, float] | None  # per-head q/k RMSNorm (Qwen3)
    norm_k: tuple[torch.Tensor, float] | None
    o: Matrix
    o_bias: torch.Tensor | None  # (C,)
    scale: float
    gate_up: Matrix
    down: Matrix
    router = None  # a dense MLP (reference.mlp reads it)
    kind = 1  # the C struct's layer kind: grouped-query attention

    @classmethod
    def of(cls, block: nn.Module) -> DenseLayerWeights:
        attn, cfg, mlp = block.self_attn, block.self_attn.cfg, block.mlp
        projections = [attn.q_proj, attn.k_proj, attn.v_proj]
        return cls(
            dims=(cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim),
            norm_attn=_norm(block.input_layernorm),
            norm_mlp=_norm(block.post_attention_layernorm),
            qkv=Matrix.fuse(projections),
            qkv_bias=_bias(*projections),
            norm_q=_norm(attn.q_norm) if cfg.qk_norm else None,
            norm_k=_norm(attn.k_norm) if cfg.qk_norm else None,
            o=Matrix.of(attn.o_proj),
            o_bias=_bias(attn.o_proj),
            scale=attn.scale,
            gate_up=Matrix.fuse([mlp.gate_proj, mlp.up_proj]),
            down=Matrix.of(mlp.down_proj),
        )


def _dense_layer_problem(name: str, block: nn.Module) -> str | None:
    """Why the C step cannot read this dense block's weights, or None (q/k/v/o may have a bias)."""
    attn, mlp = block.self_attn, block.mlp
    layers = {f"self_attn.{n}": (getattr(attn, n), True) for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
    layers |= {f"mlp.{n}": (getattr(mlp, n), False) for n in ("gate_proj", "up_proj", "down_proj")}
    for sub, (layer, bias_ok) in layers.items():
        has_bias = getattr(layer, "bias", None) is not None
        if type(layer) not in LINEARS or (has_bias and not bias_ok):
            kind = type(layer).__name__ + (" with a bias" if has_bias else "")
            return f"{name}.{sub} is {kind}; the C step reads nn.Linear or Int8Linear layers"
    return None


def pack(w: torch.Tensor) -> torch.Tensor | None:
    """w (out, in) fp32 -> oneDNN's blocked copy for `packed_matmul`; None where there is no oneDNN."""
    if not ONEDNN_PACK or w.device.type != "cpu" or w.dtype != torch.float32:
        return None
    return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), 16)  # 16: the rows it is tuned for


def packed_matmul(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """x (N, in) @ W^T -> (N, out), W packed by `pack`."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


def packed_head(rows: int) -> bool:
    """Whether an fp32 head runs `rows` rows on oneDNN's packed weight (else the decode kernel)."""
    return rows >= PACKED_MIN_ROWS and kernels.f32_path() != "avx2"


class Head:
    """The output head outside the C step: x (N, C) normalized -> logits (N, V) fp32."""

    def __init__(self, layer: nn.Module):
        self.matrix = Matrix.of(layer)
        self._packed: torch.Tensor | None = None  # built on first use

    def packed(self, rows: int) -> torch.Tensor | None:
        """oneDNN's packed copy of the weight when `rows` rows run on it, else None (the decode kernel,
        which the C step also runs the head on)."""
        if self.matrix.w is None or not packed_head(rows):
            return None
        if self._packed is None:
            self._packed = pack(self.matrix.w)
        return self._packed

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        flat = x.reshape(rows, -1).float()
        if (packed := self.packed(rows)) is not None:
            return packed_matmul(flat, packed).view(*x.shape[:-1], -1)
        return matmul(flat, self.matrix).view(*x.shape[:-1], -1)


def _layer_problem(name: str, block: nn.Module) -> str | None:
    """Why the C step cannot read this block's weights, or None."""
    attn, mlp = block.self_attn, block.mlp
    names = ["q_a_proj", "q_b_proj"] if attn.cfg.q_lora_rank else ["q_proj"]
    layers = {f"self_attn.{n}": getattr(attn, n) for n in [*names, "kv_a_proj_with_mqa", "o_proj"]}
    if type(attn.kv_b_proj) is not nn.Linear:
        kind = type(attn.kv_b_proj).__name__
        return f"{name}.self_attn.kv_b_proj is {kind}; the C step absorbs an nn.Linear's halves"
    if isinstance(mlp, MoE):
        if not isinstance(mlp.experts, (RoutedExperts, Int8Experts)):
            kind = type(mlp.experts).__name__
            return f"{name}.mlp.experts is {kind}; the C step reads RoutedExperts or Int8Experts"
        if mlp.shared_experts is not None:
            shared = mlp.shared_experts
            layers |= {
                f"mlp.shared_experts.{n}": getattr(shared, n) for n in ("gate_proj", "up_proj", "down_proj")
            }
    else:
        layers |= {f"mlp.{n}": getattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")}
    for sub, layer in layers.items():
        if type(layer) not in LINEARS or getattr(layer, "bias", None) is not None:
            kind = type(layer).__name__ + (" with a bias" if getattr(layer, "bias", None) is not None else "")
            return f"{name}.{sub} is {kind}; the C step reads bias-free nn.Linear or Int8Linear layers"
    return None


class FastDecoder:
    """Decode steps over a DeepSeekV3 or DenseTransformer model's layers on fused weights, in one C call
    each."""

    def __init__(self, model: nn.Module):
        reason = self.supports(model)
        if reason is not None:
            raise ValueError(f"the fast decode path cannot run this model: {reason}")
        self.model = model
        fuse = DenseLayerWeights.of if isinstance(model, DenseTransformer) else LayerWeights.of
        self.layers = [fuse(block) for block in model.layers]
        self.head = Head(model.lm_head)
        self.embed = model.embed_tokens.weight.detach()
        self.step = CDecodeStep(self.layers, StepEnds(self.embed, _norm(model.norm), self.head.matrix))
        self.mtp_steps: dict[int, CDecodeStep] = {}  # built on first use
        self.rope: tuple[torch.Tensor, torch.Tensor] | None = None  # rope_tables, grown with the cache

    @staticmethod
    def supports(model: nn.Module, cache=None) -> str | None:
        """None when the C step can decode this model (into this cache), else the reason it cannot:
        the C step implements DeepSeek-V3's MLA and MoE blocks and the dense families' GQA blocks,
        reads fp32 or int8 weights and an fp32 cache on the CPU, and needs the kernels built."""
        dense = isinstance(model, DenseTransformer)
        if not dense and not isinstance(model, DeepSeekV3):
            kind = type(model).__name__
            return f"{kind} is not DeepSeek-V3 or a dense GQA model (what the C step implements)"
        cfg = model.config
        if not dense and (cfg.scoring_func, cfg.topk_method) != ("sigmoid", "noaux_tc"):
            return f"routing {cfg.scoring_func}/{cfg.topk_method}; the C step implements sigmoid/noaux_tc"
        if not kernels.available():
            return "the C decode kernels are not built (no C compiler, a failed build, or NANOSEEK_KERNELS=0)"
        for name, p in model.named_parameters():
            if p.device.type != "cpu":
                return f"{name} is on {p.device}; the C step runs on the CPU"
            if p.dtype != torch.float32:
                return f"{name} is {p.dtype}; the C step reads float32 weights (or int8 from quantize_int8)"
        blocks = [(f"layers.{i}", block) for i, block in enumerate(model.layers)]
        blocks += [(f"mtp.{k}.block", module.block) for k, module in enumerate(getattr(model, "mtp", []))]
        for name, block in blocks:
            if (problem := (_dense_layer_problem if dense else _layer_problem)(name, block)) is not None:
                return problem
        heads = [("lm_head", model.lm_head)] + [
            (f"mtp.{k}.eh_proj", m.eh_proj) for k, m in enumerate(getattr(model, "mtp", []))
        ]
        for name, layer in heads:
            if type(layer) not in LINEARS or getattr(layer, "bias", None) is not None:
                return f"{name} is {type(layer).__name__}; the C step reads bias-free nn.Linear or Int8Linear"
        if cache is not None and any(t.dtype != torch.float32 or t.device.type != "cpu" for t in cache.kv):
            return f"the cache holds {cache.kv[0].dtype} on {cache.kv[0].device}; the C step reads float32 on the CPU"
        return None

    def _rope(self, cache) -> tuple[torch.Tensor, torch.Tensor]:
        """The rope tables over the cache's positions (the scratch row included)."""
        length = cache.kv[0].shape[1]
        if self.rope is None or self.rope[0].shape[0] < length:
            self.rope = rope_tables(*self.model.rotary(torch.arange(length)))
        return self.rope

    def hidden(self, tokens: list[int], positions: list[int], slots: list[int], cache) -> torch.Tensor:
        """Row i: token tokens[i] at position positions[i] of slot slots[i] (rows may share a slot at
        consecutive positions). Writes each layer's cache row; returns the final hidden states (N, C),
        before the final norm."""
        return self.step.run(tokens, positions, slots, cache.kv, self._rope(cache))[0]

    def forward(
        self, tokens: list[int], positions: list[int], slots: list[int], cache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`hidden` and the next-token logits (N, V) fp32 of its rows, the head inside the C call
        where the decode kernel runs it (oneDNN's packed head is faster from PACKED_MIN_ROWS rows)."""
        in_c = self.head.packed(len(tokens)) is None
        h, logits, _ = self.step.run(tokens, positions, slots, cache.kv, self._rope(cache), logits=in_c)
        return h, logits if in_c else self.logits(h)

    @torch.no_grad()
    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Next-token logits (..., V) in fp32 of final hidden states (..., C)."""
        return self.head(self.model.norm(h))

    def _mtp_step(self, k: int) -> CDecodeStep:
        if k not in self.mtp_steps:
            module = self.model.mtp[k]
            mix = _norm(module.enorm), _norm(module.hnorm), Matrix.of(module.eh_proj)
            ends = StepEnds(self.embed, _norm(module.shared_head.norm), self.head.matrix, mix)
            self.mtp_steps[k] = CDecodeStep([LayerWeights.of(module.block)], ends)
        return self.mtp_steps[k]

    def mtp_hidden(
        self,
        k: int,
        h_prev: torch.Tensor,
        next_tokens: list[int],
        positions: list[int],
        slots: list[int],
        cache,
        argmax: bool = False,
    ):
        """`DeepSeekV3.mtp_hidden` for one row per token: the depth-k MTP module combines h_prev (N, C),
        the main model's hidden states at `positions`, with the tokens one step ahead, and runs its
        block as a one-layer C step on its own cache (rows may share a slot, as in `hidden`) -> (N, C).
        With `argmax`, (N, C) and each row's draft: the most likely token of its logits."""
        kv = [cache.kv[len(self.model.layers) + k]]
        h, _, top = self._mtp_step(k).run(
            next_tokens, positions, slots, kv, self._rope(cache), h_prev=h_prev, argmax=argmax
        )
        return (h, top) if argmax else h

    @torch.no_grad()
    def mtp_logits(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """The depth-k MTP module's draft logits (..., V) fp32: the shared output head on its own norm."""
        return self.head(self.model.mtp[k].shared_head.norm(h))
