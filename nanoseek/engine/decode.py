"""The decode fast path: one new token per row through the main layers, on precomputed fused weights.

    decoder = FastDecoder(model)                       # fp32 or int8 (`quant.quantize_int8`) models
    if decoder.supports(cache):
        h = decoder.hidden(tokens, positions, slots, cache)   # (B,) ids, positions, slots -> (B, C)

`ModelRunner.decode` uses it for every decode step, and speculation for its [pending, draft] pairs
(two rows of one slot) and its drafter (`mtp_hidden`: the MTP module's block as a one-layer C step);
prefill goes through the model's own forward. It computes what `DeepSeekV3.hidden_states` computes
with the absorbed MLA form, as the same function of the same weights, with far fewer (and larger)
operations per layer. Where the C kernels are built, the whole step runs through all layers in one
C call (`decode_step`: the same formulas on the same fused weights, without ~70 torch calls a
layer); the torch code here is the reference it is tested against, and the path where no C
compiler is available:

- queries and the latent come out of one matmul: [q_proj | kv_a_proj_with_mqa] (or [q_a | kv_a] with a
  low-rank query) fused row-wise, with rows reordered so the output reads
  [q_nope (H*Dn) | q_rope (H*Dr) | k_rope (Dr) | latent (R)], the rope dimensions already split into
  [evens | odds] (what `apply_rope` returns), so rope is x * [cos|cos] + swap_halves(x) * [-sin|sin]
  over all heads and the key at once;
- attention reads the slot's cache rows [latent | rope key] in place (a view when the slots are a
  contiguous range) with one score matmul, [q W_uk | q_rope] . [c | k_r], and a per-step mask that
  all layers share;
- the dense MLP's gate and up are one matmul, and so (fp32) are the MoE router and the shared expert's
  gate and up; residual adds ride on the output matmuls (accumulated in place);
- routed experts: with one row, its K experts one after another with the routing weight as the
  matmul's alpha; with more rows, pairs sorted by expert on the host (one `tolist`), one gather, and one
  matmul pair per used expert.

Every matmul is a `Mat`. fp32, where the C decode kernels are built (`kernels`): W (out, in), one and
two rows (routed experts: up to KERNEL_MAX_ROWS) on the kernel, more on oneDNN's packed copy of the
weight (`pack`, built on first use; the output head too). Without the kernels: W^T (in, out), which
MKL's few-row matmuls stream fastest, each weight read once right before its matmul (`touch`). int8
weights stay (out, in) rows with per-row scales for `quant.int8_matmul`'s kernel. Row-wise fusion and
reordering keep every output channel's weights and scale, so int8 results are the per-layer results.
The fused copies are rebuilt when a source weight changes (its in-place version counter), so a trainer
can keep updating the model the engine samples from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoseek.engine import kernels
from nanoseek.engine.decode_step import CDecodeStep
from nanoseek.engine.quant import HAS_INT8PACK, Int8Experts, Int8Linear, int8_matmul
from nanoseek.model.attention import LatentCache
from nanoseek.model.moe import MoE, RoutedExperts


def _version(t: torch.Tensor) -> tuple[int, int]:
    return (t._version, t.data_ptr())  # in-place updates bump the first; .to() / .data = move the second


def _bf16(x: torch.Tensor) -> torch.Tensor | None:
    """x in bfloat16 where `quant.int8_matmul` would use torch's int8 kernel (so one cast serves every
    int8 matmul that reads x), else None (nanoseek's kernel reads fp32)."""
    if kernels.available() or not HAS_INT8PACK or x.device.type != "cpu" or x.shape[-1] % 16:
        return None
    return x.to(torch.bfloat16)


def _int8(x, xb, q, scale, scale_bf16, float_out: bool = True) -> torch.Tensor:
    """`quant.int8_matmul(x, q, scale, scale_bf16)` with x's bfloat16 copy xb made beforehand (or None);
    float_out=False may return bfloat16 (for a consumer that promotes it anyway)."""
    if xb is None:
        return int8_matmul(x, q, scale, scale_bf16)
    y = torch._weight_int8pack_mm(xb, q, scale_bf16)
    return y.to(x.dtype) if float_out else y


PREFETCH_MIN_BYTES = 128 * 1024  # smaller weights are cheap enough to fetch on demand
# From this many rows on, an fp32 matmul runs on oneDNN's packed copy of the weight: 1.3-1.9x MKL's
# at 4-16 rows on d10's shapes, slower at 1-2 rows, where the prefetched MKL gemv stays.
PACKED_MIN_ROWS = 3
# Unpacked fp32 weights (routed experts) go to the decode kernel up to this many rows: 1.3-1.9x
# MKL's prefetched matmul at 3-6 rows on the experts' shapes, break-even at 8.
KERNEL_MAX_ROWS = 8
ONEDNN_PACK = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def pack(w: torch.Tensor) -> torch.Tensor | None:
    """w (out, in) fp32 -> oneDNN's blocked copy for `packed_matmul`; None where there is no oneDNN."""
    if not ONEDNN_PACK or w.device.type != "cpu" or w.dtype != torch.float32:
        return None
    return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), 16)  # 16: the rows it is tuned for


def packed_matmul(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """x (N, in) @ W^T -> (N, out), W packed by `pack`."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


HEAD_CHUNK = 1024  # rows of an int8 output head per prefetched matmul (640 KiB at C = 640)


def touch(t: torch.Tensor) -> None:
    """Read weights t once, front to back, at streaming speed (see FastDecoder's `prefetch`). int8
    weights are read as int64 words by `max` (an int8 or int32 `sum` is slower than the matmul's saving)."""
    if t.is_floating_point():
        t.sum()
    elif t.is_contiguous() and t.shape[-1] % 8 == 0:
        t.view(torch.int64).max()


class Mat:
    """y = x W^T for x (N, in), from one or more bias-free linear layers fused row-wise (their outputs
    concatenated), optionally with the output rows reordered. fp32: W (out, in) for the decode kernel
    (`kernels`) and oneDNN, or, where the kernel is not available, W^T (in, out), which MKL's few-row
    matmuls stream fastest; int8: rows (out, in) and per-row scales."""

    def __init__(
        self,
        layers: list[nn.Module],
        rows: torch.Tensor | None = None,
        prefetch: bool = False,
        weight: torch.Tensor | None = None,
        int8: tuple[torch.Tensor, torch.Tensor] | None = None,
        packable: bool = True,
    ):
        """weight: an fp32 W (out, in) fused elsewhere, or int8: its (q, per-row scale), instead of
        layers; packable: use oneDNN's packed copy for 3+ rows (off for routed experts: ~4 rows each
        at batch 16, where the kernel is faster)."""
        self.q = self.w = self.wt = None
        if int8 is None and weight is None and all(isinstance(m, Int8Linear) for m in layers):
            int8 = torch.cat([m.qweight for m in layers]), torch.cat([m.scale for m in layers])  # (out, in)
            if rows is not None:
                int8 = int8[0][rows], int8[1][rows]
        if int8 is not None:
            q, scale = int8
            self.q, self.scale, self.scale_bf16 = q.contiguous(), scale, scale.to(torch.bfloat16)
        elif weight is None and all(isinstance(m, nn.Linear) and m.bias is None for m in layers):
            weight = torch.cat([m.weight.detach() for m in layers])  # (out, in)
            if rows is not None:
                weight = weight[rows]
        elif weight is None:
            raise TypeError("fuse bias-free nn.Linear layers, or Int8Linear layers, not a mix")
        if weight is not None and weight.device.type == "cpu" and kernels.available():
            self.w = weight.contiguous()
        elif weight is not None:
            self.wt = weight.t().contiguous()
        stored = next(t for t in (self.w, self.wt, self.q) if t is not None)
        streams = self.q is not None and kernels.available()  # the int8 kernel needs no prefetch
        self.prefetch = (
            prefetch and not streams and stored.numel() * stored.element_size() >= PREFETCH_MIN_BYTES
        )
        self.packable = packable
        self._packed: torch.Tensor | None = None
        self._packed_built = False

    def packed(self, x: torch.Tensor) -> torch.Tensor | None:
        """oneDNN's packed fp32 weight when x has enough rows to use it (built on first use), else
        None. int8 weights stay on the int8 kernel: its bf16 outputs would round differently from any
        other kernel's, and int8 decoding is held to the int8 model's own outputs token for token."""
        if self.q is not None or not self.packable or x.shape[0] < PACKED_MIN_ROWS:
            return None
        if not self._packed_built:
            self._packed = pack(self.w if self.w is not None else self.wt.t())
            self._packed_built = True
        return self._packed

    def kernel(self, x: torch.Tensor) -> bool:
        """Whether the decode kernel takes these rows: up to 2 (then oneDNN's packed weight), or up to
        KERNEL_MAX_ROWS for weights that are not packed (routed experts: ~4 rows each at batch 16)."""
        return self.w is not None and x.shape[0] <= (
            KERNEL_MAX_ROWS if not self.packable else PACKED_MIN_ROWS - 1
        )

    def _fp32(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel(x):
            return kernels.matmul(x, self.w)  # streams W itself: no prefetch
        if self.prefetch:
            touch(self.w if self.w is not None else self.wt)
        return F.linear(x, self.w) if self.w is not None else x @ self.wt

    def __call__(self, x: torch.Tensor, xb: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, in) -> (N, out); xb: x in bfloat16 when the caller has it (int8 only)."""
        if self.q is None:
            packed = self.packed(x)
            return packed_matmul(x, packed) if packed is not None else self._fp32(x)
        if self.prefetch:
            touch(self.q)
        return _int8(x, _bf16(x) if xb is None else xb, self.q, self.scale, self.scale_bf16)

    def add_to(self, residual: torch.Tensor, x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """residual + alpha x W^T, (N, out); may update residual in place."""
        if self.q is None:
            if alpha == 1.0 and (packed := self.packed(x)) is not None:
                return torch.ops.mkldnn._linear_pointwise.binary(x, residual, packed, None, "add")
            if self.kernel(x) and residual.is_contiguous():
                return kernels.matmul(x, self.w, out=residual, alpha=alpha)
            if self.w is not None:
                return residual.add_(self._fp32(x), alpha=alpha)
            if self.prefetch:
                touch(self.wt)
            return torch.addmm(residual, x, self.wt, alpha=alpha)
        if kernels.available() and residual.is_contiguous():
            return kernels.matmul_int8(x, self.q, self.scale, out=residual, alpha=alpha)
        if self.prefetch:
            touch(self.q)
        y = _int8(x, _bf16(x), self.q, self.scale, self.scale_bf16, float_out=False)
        return residual.add_(y, alpha=alpha)


def _sources(module: nn.Module) -> list[torch.Tensor]:
    """The tensors a block's fused weights are built from (not the MoE's load counter)."""
    buffers = [b for name, b in module.named_buffers() if not name.endswith("expert_load")]
    return list(module.parameters()) + buffers


def _rope_order(dr: int) -> torch.Tensor:
    # interleaved pairs (x0, x1), (x2, x3), ... -> [x0, x2, ... | x1, x3, ...], as apply_rope reads them
    return torch.cat([torch.arange(0, dr, 2), torch.arange(1, dr, 2)])


class LayerWeights:
    """One block's fused decode weights (see the module docstring)."""

    def __init__(self, block: nn.Module, prefetch: bool = False):
        attn, cfg = block.self_attn, block.self_attn.cfg
        self.prefetch = prefetch
        H, Dn, Dr, R, Dv = (
            cfg.num_attention_heads,
            cfg.qk_nope_head_dim,
            cfg.qk_rope_head_dim,
            cfg.kv_lora_rank,
            cfg.v_head_dim,
        )
        Dq, rope = Dn + Dr, _rope_order(Dr)
        q_nope = (torch.arange(H)[:, None] * Dq + torch.arange(Dn)).flatten()  # q's rows, head by head
        q_rope = (torch.arange(H)[:, None] * Dq + Dn + rope).flatten()
        kv_rows = lambda off: [off + R + rope, off + torch.arange(R)]  # noqa: E731  [k_rope | latent]
        self.q_lora = bool(cfg.q_lora_rank)
        if self.q_lora:  # [q_a | k_rope | latent], then q_b -> [q_nope | q_rope]
            ql = cfg.q_lora_rank
            self.qkv = Mat(
                [attn.q_a_proj, attn.kv_a_proj_with_mqa],
                torch.cat([torch.arange(ql), *kv_rows(ql)]),
                prefetch,
            )
            self.q_b = Mat([attn.q_b_proj], torch.cat([q_nope, q_rope]), prefetch)
            self.q_norm = (attn.q_a_layernorm.weight.detach(), attn.q_a_layernorm.eps)
        else:  # [q_nope | q_rope | k_rope | latent]
            self.qkv = Mat(
                [attn.q_proj, attn.kv_a_proj_with_mqa],
                torch.cat([q_nope, q_rope, *kv_rows(H * Dq)]),
                prefetch,
            )
        w_uk, w_uv = attn.absorbed_weights()  # (H, Dn, R), (H, Dv, R)
        self.w_uk, self.w_uv_t = w_uk, w_uv.transpose(1, 2).contiguous()  # (H, Dn, R), (H, R, Dv)
        # the decode kernel's layout, (out, in) per head: W_uk^T (H, R, Dn), W_uv (H, Dv, R)
        self.w_uk_k = w_uk.transpose(1, 2).contiguous() if kernels.available() else None
        self.w_uv_k = w_uv.contiguous() if kernels.available() else None
        self.o = Mat([attn.o_proj], prefetch=prefetch)
        self.scale = attn.scale
        norms = (block.input_layernorm, block.post_attention_layernorm, attn.kv_a_layernorm)
        self.norms = [(n.weight.detach(), n.eps) for n in norms]
        self.dims = (H, Dn, Dr, R, Dv)
        mlp = block.mlp
        self.moe = isinstance(mlp, MoE)
        if not self.moe:
            self.gate_up = Mat([mlp.gate_proj, mlp.up_proj], prefetch=prefetch)
            self.down = Mat([mlp.down_proj], prefetch=prefetch)
            return
        self.cfg = mlp.cfg
        self.router = mlp.gate.weight.detach()  # (E, C), full precision
        self.bias = mlp.gate.e_score_correction_bias
        shared = mlp.shared_experts
        self.shared: tuple[Mat, Mat] | None = None
        self.router_shared: Mat | None = None  # fp32: [router^T | shared gate^T | shared up^T]
        if shared is not None:
            self.shared = (
                Mat([shared.gate_proj, shared.up_proj], prefetch=prefetch),
                Mat([shared.down_proj], prefetch=prefetch),
            )
            if isinstance(shared.gate_proj, nn.Linear) and isinstance(shared.up_proj, nn.Linear):
                fused = [
                    self.router.float(),
                    shared.gate_proj.weight.detach(),
                    shared.up_proj.weight.detach(),
                ]
                self.router_shared = Mat([], prefetch=prefetch, weight=torch.cat(fused))
        experts = mlp.experts
        if isinstance(experts, Int8Experts):  # per expert a Mat: gate-up (2I, C), down (C, I)
            ex, self.experts_int8 = experts, True
            mat = lambda q, s: Mat([], prefetch=prefetch, int8=(q, s), packable=False)  # noqa: E731
            self.gu = [mat(q, s) for q, s in zip(ex.gate_up_q.unbind(0), ex.gate_up_scale.unbind(0))]
            self.dn = [mat(q, s) for q, s in zip(ex.down_q.unbind(0), ex.down_scale.unbind(0))]
        elif isinstance(experts, RoutedExperts):
            self.experts_int8 = False
            gu = torch.cat([experts.gate_proj.detach(), experts.up_proj.detach()], dim=-1)  # (E, C, 2I)
            mat = lambda w: Mat([], prefetch=prefetch, weight=w.t(), packable=False)  # noqa: E731
            self.gu = [mat(w) for w in gu.unbind(0)]
            self.dn = [mat(w) for w in experts.down_proj.detach().unbind(0)]  # (I, C) each
        else:
            raise TypeError(f"unknown experts module {type(experts).__name__}")

    # ------------------------------------------------------------------ MLPs
    def expert_up(self, e: int, x: torch.Tensor, xb: torch.Tensor | None) -> torch.Tensor:
        """silu(gate) * up of expert e on rows x (n, C) (xb: their bfloat16 copy, int8) -> (n, I)."""
        gu = self.gu[e](x, xb)
        i = gu.shape[-1] // 2
        return F.silu(gu[:, :i]) * gu[:, i:]

    def route(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Router logits (N, E) -> expert ids (N, K), weights (N, K): `moe.Router.forward`'s selection."""
        cfg = self.cfg
        N, E, G = logits.shape[0], cfg.n_routed_experts, cfg.n_group
        scores = logits.sigmoid()
        biased = scores + self.bias
        if G > 1:
            grouped = biased.view(N, G, E // G)
            group_scores = grouped.topk(2, dim=-1).values.sum(-1)  # (N, G)
            top_groups = group_scores.topk(cfg.topk_group, dim=-1).indices
            keep = torch.zeros(N, G, 1, dtype=torch.bool, device=logits.device)
            keep[torch.arange(N, device=logits.device)[:, None], top_groups] = True
            biased = grouped.masked_fill(~keep, float("-inf")).view(N, E)
        ids = biased.topk(cfg.num_experts_per_tok, dim=-1).indices
        weights = scores.gather(1, ids)
        if cfg.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return ids, weights * cfg.routed_scaling_factor

    def route_one(self, logits: torch.Tensor) -> tuple[list[int], list[float]]:
        """`route` for a single token on the host: one sync instead of ~15 tiny tensor ops. Affinities
        and biased scores are the same float32 numbers; the group sums and the weights' normalization
        run in float64 (a near-tie may break the other way, like any float-rounding difference)."""
        cfg = self.cfg
        scores = logits[0].sigmoid()
        s, b = scores.tolist(), (scores + self.bias).tolist()
        E, G = cfg.n_routed_experts, cfg.n_group
        allowed = range(E)
        if G > 1:
            n = E // G
            group = [sum(sorted(b[g * n : (g + 1) * n], reverse=True)[:2]) for g in range(G)]
            top = sorted(range(G), key=lambda g: -group[g])[: cfg.topk_group]
            allowed = [e for g in sorted(top) for e in range(g * n, (g + 1) * n)]
        ids = sorted(allowed, key=lambda e: -b[e])[: cfg.num_experts_per_tok]
        weights = [s[e] for e in ids]
        if cfg.norm_topk_prob:
            total = sum(weights) + 1e-20
            weights = [w / total for w in weights]
        return ids, [w * cfg.routed_scaling_factor for w in weights]

    def mlp(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """h + MLP(x): residual h (N, C), normalized input x (N, C)."""
        if not self.moe:
            gu = self.gate_up(x)
            i = gu.shape[-1] // 2
            return self.down.add_to(h, F.silu(gu[:, :i]) * gu[:, i:])
        E = self.cfg.n_routed_experts
        if self.router_shared is not None:
            both = self.router_shared(x)  # (N, E + 2 I_shared)
            logits, shared_gu = both[:, :E], both[:, E:]
        else:
            logits, shared_gu = x @ self.router.t(), None
        N = x.shape[0]
        xb = _bf16(x) if self.experts_int8 or shared_gu is None else None
        if self.shared is not None:
            if shared_gu is None:
                shared_gu = self.shared[0](x, xb)
            i = shared_gu.shape[-1] // 2
            out = self.shared[1].add_to(h, F.silu(shared_gu[:, :i]) * shared_gu[:, i:])
        else:
            out = h.clone()
        if N == 1:  # one token: its K experts, weighted into the residual one by one
            for e, w in zip(*self.route_one(logits)):
                out = self.dn[e].add_to(out, self.expert_up(e, x, xb), alpha=w)
            return out
        ids, weights = self.route(logits)
        K = ids.shape[1]
        id_list = ids.tolist()
        flat = [e for row in id_list for e in row]
        order = sorted(range(N * K), key=flat.__getitem__)  # (token, expert) pairs grouped by expert
        order_t = torch.tensor(order, device=x.device)
        token_of = order_t // K
        xs = x.index_select(0, token_of)  # (N*K, C)
        xsb = xb.index_select(0, token_of) if xb is not None else None
        ys, start = torch.empty_like(xs), 0  # (N*K, C): each expert writes its rows in place
        while start < len(order):
            e = flat[order[start]]
            end = start + 1
            while end < len(order) and flat[order[end]] == e:
                end += 1
            a = self.expert_up(e, xs[start:end], xsb[start:end] if xsb is not None else None)
            ys[start:end] = self.dn[e](a)
            start = end
        ys.mul_(weights.view(-1).index_select(0, order_t)[:, None])
        return out.index_add_(0, token_of, ys)

    # ------------------------------------------------------------------ attention
    def per_head(self, x: torch.Tensor, w_kernel: torch.Tensor | None, w: torch.Tensor) -> torch.Tensor:
        """x (H, N, in) times each head's absorbed matrix -> (H, N, out): the decode kernel on w_kernel
        (H, out, in) for 1-2 rows, else bmm on w (H, in, out)."""
        if w_kernel is not None and x.shape[1] < PACKED_MIN_ROWS and x.device.type == "cpu":
            return kernels.bmatmul(x, w_kernel)
        if self.prefetch:
            touch(w)
        return torch.bmm(x, w)

    def attention(self, h: torch.Tensor, x: torch.Tensor, step: DecodeStep, kv: torch.Tensor) -> torch.Tensor:
        """h + MLA(x): residual h (N, C), normalized input x (N, C); writes this token's cache row."""
        H, Dn, Dr, R, Dv = self.dims
        N = x.shape[0]
        a = self.qkv(x)
        if self.q_lora:
            ql = a.shape[1] - Dr - R
            wq, eps = self.q_norm
            q = self.q_b(F.rms_norm(a[:, :ql], (ql,), wq, eps))  # (N, H*(Dn+Dr))
            q_nope = q[:, : H * Dn].view(N, H, Dn)
            rope_in = torch.cat([q[:, H * Dn :].view(N, H, Dr), a[:, ql : ql + Dr].view(N, 1, Dr)], dim=1)
        else:
            q_nope = a[:, : H * Dn].view(N, H, Dn)
            rope_in = a[:, H * Dn : H * Dn + (H + 1) * Dr].view(N, H + 1, Dr)
        roped = torch.addcmul(rope_in * step.cos, rope_in.roll(Dr // 2, -1), step.sin)  # (N, H+1, Dr)
        w_kv, eps = self.norms[2]
        latent = F.rms_norm(a[:, -R:], (R,), w_kv, eps)  # (N, R)
        kv.index_put_(step.where, torch.cat([latent, roped[:, H]], dim=-1))
        rows = step.rows(kv)  # (N, S, R + Dr)
        q_latent = self.per_head(q_nope.transpose(0, 1), self.w_uk_k, self.w_uk)  # (H, N, R)
        q = torch.cat([q_latent.transpose(0, 1), roped[:, :H]], dim=-1)  # (N, H, R + Dr)
        scores = torch.baddbmm(step.mask, q, rows.transpose(1, 2), alpha=self.scale)  # (N, H, S)
        out_latent = torch.bmm(scores.softmax(-1), rows[..., :R])  # (N, H, R)
        out = self.per_head(out_latent.transpose(0, 1), self.w_uv_k, self.w_uv_t)  # (H, N, Dv)
        return self.o.add_to(h, out.transpose(0, 1).reshape(N, H * Dv))

    def forward(self, h: torch.Tensor, step: DecodeStep, kv: torch.Tensor) -> torch.Tensor:
        (w1, e1), (w2, e2) = self.norms[0], self.norms[1]
        C = h.shape[-1]
        h = self.attention(h, F.rms_norm(h, (C,), w1, e1), step, kv)
        return self.mlp(h, F.rms_norm(h, (C,), w2, e2))


class DecodeStep:
    """What every layer of one decode step shares: where the new tokens go, which cache rows they
    read, the attention mask over them, and the rope factors."""

    def __init__(self, positions: list[int], slots: list[int], cos: torch.Tensor, sin: torch.Tensor):
        device = cos.device
        self.positions, self.slots = positions, slots
        pos_t = torch.tensor(positions, device=device)
        slot_t = torch.tensor(slots, device=device)
        self.where = (slot_t, pos_t)
        self.S = max(positions) + 1
        self.slot_t = slot_t
        first = slots[0]
        self.contiguous = slots == list(range(first, first + len(slots)))
        # rope as x * [cos|cos] + swap_halves(x) * [-sin|sin], broadcast over heads: (N, 1, Dr)
        self.cos = torch.cat([cos, cos], dim=-1).unsqueeze(1)
        self.sin = torch.cat([-sin, sin], dim=-1).unsqueeze(1)
        if min(positions) == self.S - 1:  # every row sees every position < S
            self.mask = torch.zeros(1, 1, 1, device=device)
        else:
            seen = torch.arange(self.S, device=device)[None, :] <= pos_t[:, None]
            self.mask = torch.zeros(len(slots), 1, self.S, device=device).masked_fill_(
                ~seen[:, None], float("-inf")
            )

    def rows(self, kv: torch.Tensor) -> torch.Tensor:
        """The rows' first S cache positions, (N, S, R + Dr): a view for a contiguous range of slots."""
        if self.contiguous:
            return kv[self.slots[0] : self.slots[0] + len(self.slots), : self.S]
        return kv[:, : self.S].index_select(0, self.slot_t)


class FastDecoder:
    """Decode-step forward over a DeepSeekV3's main layers with fused weights (see module docstring)."""

    def __init__(self, model: nn.Module, prefetch: bool | None = None, c_step: bool = True):
        """c_step: run the step through all layers in one C call (`decode_step`) where the kernels
        are built (False: layer by layer in torch, the reference). prefetch (torch path): read each
        weight matrix of 128 KiB or more once, front to back, right before the matmul that uses it.
        MKL's few-row matmuls stall on weights that are not in cache; a plain streaming pass brings
        them in at memory speed first (measured 1.1-1.25x per decode step at d10 on this project's
        CPU). Default: on for CPU models whose weights (~what a step streams) exceed 64 MiB, which no
        cache holds; smaller models stay cached and skip the extra reads."""
        self.model = model
        if prefetch is None:
            nbytes = sum(
                t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())
            )
            prefetch = model.embed_tokens.weight.device.type == "cpu" and nbytes > 64 * 2**20
        self.prefetch = prefetch
        self.layers: list[LayerWeights | None] = [None] * len(model.layers)
        self.keys: list[tuple | None] = [None] * len(model.layers)
        # each block's source tensors, listed once (walking the modules every step costs ~0.3 ms a layer)
        self.sources = [_sources(block) for block in model.layers]
        self.all_sources = [t for tensors in self.sources for t in tensors]
        self.key: tuple[int, int] | None = None
        self.head_key: tuple[int, int] | None = None
        self.head_chunks: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.packed_head_key: tuple[int, int] | None = None
        self.packed_head_weight: torch.Tensor | None = None
        self.c_step = c_step
        self.step: CDecodeStep | None = None
        self.step_key: tuple[int, int] | None = None
        # the MTP modules' blocks, each its own one-layer C step, rebuilt when their weights change
        self.mtp_sources = [_sources(m) for m in getattr(model, "mtp", [])]
        self.mtp_steps: dict[int, tuple[tuple, CDecodeStep | None]] = {}

    def supports(self, cache: LatentCache) -> bool:
        """fp32 models (weights int8 or fp32) with an fp32 cache; anything else takes the model's path."""
        emb = self.model.embed_tokens.weight
        return emb.dtype == torch.float32 and cache.kv[0].dtype == torch.float32

    def refresh(self) -> None:
        """Rebuild the fused weights of every block whose source tensors changed since the last step
        (one cheap sum over all of them per step; per-block keys only when it moved)."""
        tensors = self.all_sources
        key = (sum(t._version for t in tensors), sum(t.data_ptr() for t in tensors))
        if key == self.key:
            return
        for i, block in enumerate(self.model.layers):
            block_key = tuple(_version(t) for t in self.sources[i])
            if self.keys[i] != block_key:
                self.layers[i], self.keys[i] = LayerWeights(block, self.prefetch), block_key
        self.key = key

    def packed_head(self) -> torch.Tensor | None:
        """oneDNN's packed copy of an fp32 output head, rebuilt when the weight changes."""
        w = self.model.lm_head.weight
        if self.packed_head_key != _version(w):
            self.packed_head_weight = pack(w.detach())
            self.packed_head_key = _version(w)
        return self.packed_head_weight

    @torch.no_grad()
    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Next-token logits (..., V) in fp32 of final hidden states (..., C). From PACKED_MIN_ROWS
        rows on, an fp32 head runs on oneDNN's packed weight (~1.7x at 16 rows for d10's 16k x 640
        head) and fewer on the decode kernel. An int8 head on torch's int8 kernel with prefetch runs in
        row chunks of HEAD_CHUNK tokens, each read once before its matmul (~1.2x at batch 1)."""
        model = self.model
        x, head = model.norm(h), model.lm_head
        rows = x.numel() // x.shape[-1]
        fp32_head = isinstance(head, nn.Linear) and head.bias is None and head.weight.dtype == torch.float32
        if fp32_head and rows >= PACKED_MIN_ROWS and (packed := self.packed_head()) is not None:
            return packed_matmul(x.reshape(rows, -1), packed).view(*x.shape[:-1], -1)
        if fp32_head and head.weight.is_contiguous() and x.device.type == "cpu" and kernels.available():
            return kernels.matmul(x.reshape(rows, -1), head.weight.detach()).view(*x.shape[:-1], -1)
        xb = _bf16(x) if self.prefetch and isinstance(head, Int8Linear) else None
        if xb is None:
            return head(x).float()
        key = (head.qweight.data_ptr(), head.scale_bf16.data_ptr())
        if self.head_key != key:
            self.head_chunks = list(zip(head.qweight.split(HEAD_CHUNK), head.scale_bf16.split(HEAD_CHUNK)))
            self.head_key = key
        xb = xb.reshape(-1, x.shape[-1])
        outs = []
        for q, scale in self.head_chunks:
            touch(q)
            outs.append(torch._weight_int8pack_mm(xb, q, scale))
        return torch.cat(outs, dim=1).float().view(*x.shape[:-1], -1)

    @torch.no_grad()
    def mtp_hidden(
        self,
        k: int,
        h_prev: torch.Tensor,
        next_tokens: list[int],
        positions: list[int],
        slots: list[int],
        cache: LatentCache,
    ) -> torch.Tensor | None:
        """`DeepSeekV3.mtp_hidden` for one row per token: the depth-k MTP module combines h_prev (N, C),
        the main model's hidden states at `positions`, with the tokens one step ahead, and runs its
        block as a one-layer C step on its own cache (rows may share a slot, as in `hidden`). Returns
        (N, C), or None where the C step cannot run (the caller then uses the model's own forward)."""
        if not self.c_step or not kernels.available():
            return None
        model, module = self.model, self.model.mtp[k]
        key = tuple(_version(t) for t in self.mtp_sources[k])
        if k not in self.mtp_steps or self.mtp_steps[k][0] != key:
            self.mtp_steps[k] = key, CDecodeStep.build([LayerWeights(module.block, self.prefetch)])
        step = self.mtp_steps[k][1]
        if step is None:
            return None
        device = model.embed_tokens.weight.device
        emb = model.embed_tokens(torch.tensor(next_tokens, device=device))  # (N, C)
        x = module.eh_proj(torch.cat([module.enorm(emb), module.hnorm(h_prev)], dim=-1))
        cos, sin = model.rotary(torch.tensor(positions, device=device))
        mtp_kv = [cache.kv[len(model.layers) + k]]
        return step.hidden(x, positions, slots, mtp_kv, cos, sin)

    @torch.no_grad()
    def hidden(
        self, tokens: list[int], positions: list[int], slots: list[int], cache: LatentCache
    ) -> torch.Tensor:
        """Row i: token tokens[i] at position positions[i] of slot slots[i]. Writes each layer's cache
        row and returns the final hidden states (N, C), before the final norm."""
        model = self.model
        device = model.embed_tokens.weight.device
        pos_t = torch.tensor(positions, device=device)
        cos, sin = model.rotary(pos_t)  # (N, Dr/2)
        h = model.embed_tokens(torch.tensor(tokens, device=device))  # (N, C)
        self.refresh()
        if self.c_step:
            if self.step_key != self.key:
                self.step, self.step_key = CDecodeStep.build(self.layers), self.key
            if self.step is not None:
                return self.step.hidden(h, positions, slots, cache.kv, cos, sin)
        step = DecodeStep(positions, slots, cos, sin)
        for layer, kv in zip(self.layers, cache.kv):
            h = layer.forward(h, step, kv)
        return h
