"""A whole decode step in one C call: N token ids through every layer to hidden states, and on to
logits (decode_step.c).

    step = CDecodeStep(fast_decoder.layers, ends)        # the fused layers as C structs
    h, logits, top = step.run(tokens, positions, slots, cache.kv, rope, logits=True, argmax=True)

`FastDecoder` runs every decode step through this, for MLA layers (`LayerWeights`) and dense GQA
layers (`DenseLayerWeights`, the struct's `kind` 1), and the MTP module's drafter as a one-layer step
(`StepEnds.mix`: its eh_proj input). The C code follows `reference.py` (the decode step written out in
torch) formula by formula, on the same fused weights and the same matmul kernels; its other
operations (norms, rope, softmax, routing) round differently from torch's in the last bits, as any
two float implementations do. Every row is computed alone (the matmul kernels give a row the same
bits in any batch), so a request's tokens do not depend on what else is decoded with it. The structs
hold raw pointers into the fused weights; `keep` holds those tensors alive.

The embedding lookup, the rope factors (a table by position, `rope_tables`), the final norm and the
head run inside the call as well: at batch 1 on a small model each torch call around the step costs
about what a layer does (docs/engine.md), and the speculative step makes two steps.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nanoseek.engine import kernels

if TYPE_CHECKING:
    from nanoseek.engine.decode import DenseLayerWeights, LayerWeights, Matrix

P, LONG, F32, F64, I32 = ctypes.c_void_p, ctypes.c_long, ctypes.c_float, ctypes.c_double, ctypes.c_int


class Weight(ctypes.Structure):
    _fields_ = [("w", P), ("q", P), ("scale", P), ("out", LONG), ("in_", LONG)]


class Layer(ctypes.Structure):
    _fields_ = [
        *[(name, LONG) for name in ("C", "H", "Dn", "Dr", "R", "Dv", "q_rank")],
        *[(name, P) for name in ("norm_attn", "norm_mlp", "norm_kv", "norm_q")],
        *[(name, F32) for name in ("eps_attn", "eps_mlp", "eps_kv", "eps_q")],
        ("qkv", Weight),
        ("q_b", Weight),
        ("o", Weight),
        ("uk", P),
        ("uv", P),
        ("scale", F32),
        ("gate_up", Weight),
        ("down", Weight),
        *[(name, LONG) for name in ("E", "K", "G", "topk_group")],
        ("norm_topk", I32),
        ("shared_fused", I32),
        ("routed_scaling", F64),
        ("router", Weight),
        ("shared_gu", Weight),
        ("shared_down", Weight),
        ("bias", P),
        ("experts_gu", ctypes.POINTER(Weight)),
        ("experts_down", ctypes.POINTER(Weight)),
        # kind 1: grouped-query attention (the dense families)
        ("kind", I32),
        ("Hkv", LONG),
        ("D", LONG),
        *[(name, P) for name in ("qkv_bias", "o_bias", "norm_qh", "norm_kh")],
        ("eps_qh", F32),
        ("eps_kh", F32),
    ]


def _fp32(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()


def _weight(m: Matrix | None) -> Weight:
    """A Matrix for the C code: fp32 (out, in), or int8 (out, in) with per-row fp32 scales."""
    if m is None:
        return Weight()
    if m.w is not None and _fp32(m.w):
        return Weight(m.w.data_ptr(), None, None, *m.w.shape)
    if m.q is not None and m.q.device.type == "cpu" and m.q.is_contiguous() and _fp32(m.scale):
        return Weight(None, m.q.data_ptr(), m.scale.data_ptr(), *m.q.shape)
    raise ValueError("the C step reads contiguous fp32 or int8 matrices on the CPU")


def _pointer(t: torch.Tensor | None):
    if t is None:
        return None
    if not _fp32(t):
        raise ValueError("norms and biases must be contiguous fp32 on the CPU")
    return t.data_ptr()


def _dense_layer(lw: DenseLayerWeights) -> Layer:
    """The C struct of a dense GQA layer (kind 1)."""
    H, G, D = lw.dims
    (w_attn, e_attn), (w_mlp, e_mlp) = lw.norm_attn, lw.norm_mlp
    L = Layer(C=w_attn.shape[0], H=H, kind=1, Hkv=G, D=D)
    L.norm_attn, L.norm_mlp = _pointer(w_attn), _pointer(w_mlp)
    L.eps_attn, L.eps_mlp = e_attn, e_mlp
    if lw.norm_q is not None:
        (w_q, L.eps_qh), (w_k, L.eps_kh) = lw.norm_q, lw.norm_k
        L.norm_qh, L.norm_kh = _pointer(w_q), _pointer(w_k)
    L.qkv_bias, L.o_bias = _pointer(lw.qkv_bias), _pointer(lw.o_bias)
    L.qkv, L.o, L.scale = _weight(lw.qkv), _weight(lw.o), lw.scale
    L.gate_up, L.down = _weight(lw.gate_up), _weight(lw.down)
    return L


def _layer(lw: LayerWeights | DenseLayerWeights, keep: list) -> Layer:
    """The C struct for one layer's fused weights; `keep` collects what must outlive it (the struct
    holds raw pointers into lw's tensors: lw itself, and the arrays made here)."""
    keep.append(lw)
    if lw.kind == 1:
        return _dense_layer(lw)
    H, Dn, Dr, R, Dv = lw.dims
    (w_attn, e_attn), (w_mlp, e_mlp), (w_kv, e_kv) = lw.norm_attn, lw.norm_mlp, lw.norm_kv
    w_q, e_q = lw.norm_q if lw.norm_q is not None else (None, 0.0)
    tensors = [w_attn, w_mlp, w_kv, lw.uk, lw.uv] + ([w_q] if w_q is not None else [])
    if not all(_fp32(t) for t in tensors):
        raise ValueError("norms and absorbed weights must be contiguous fp32 on the CPU")
    L = Layer(C=w_attn.shape[0], H=H, Dn=Dn, Dr=Dr, R=R, Dv=Dv, q_rank=w_q.shape[0] if w_q is not None else 0)
    L.norm_attn, L.norm_mlp, L.norm_kv = w_attn.data_ptr(), w_mlp.data_ptr(), w_kv.data_ptr()
    L.norm_q = w_q.data_ptr() if w_q is not None else None
    L.eps_attn, L.eps_mlp, L.eps_kv, L.eps_q = e_attn, e_mlp, e_kv, e_q
    L.qkv, L.q_b, L.o = _weight(lw.qkv), _weight(lw.q_b), _weight(lw.o)
    L.uk, L.uv, L.scale = lw.uk.data_ptr(), lw.uv.data_ptr(), lw.scale
    if lw.router is None:  # dense
        L.gate_up, L.down = _weight(lw.gate_up), _weight(lw.down)
        return L
    E, K, G, topk_group, norm_topk, scaling = lw.routing
    L.E, L.K, L.G, L.topk_group, L.norm_topk, L.routed_scaling = E, K, G, topk_group, int(norm_topk), scaling
    L.router, L.shared_fused = _weight(lw.router), int(lw.shared_fused)
    L.shared_gu, L.shared_down = _weight(lw.shared_gu), _weight(lw.shared_down)
    if not _fp32(lw.bias):
        raise ValueError("the router bias must be contiguous fp32 on the CPU")
    gu = (Weight * E)(*map(_weight, lw.experts_gu))
    down = (Weight * E)(*map(_weight, lw.experts_down))
    keep += [gu, down]
    L.bias, L.experts_gu, L.experts_down = lw.bias.data_ptr(), gu, down
    return L


@dataclass
class StepEnds:
    """What a step starts from and ends with (decode_step.c's `Ends`): the token embeddings (V, C),
    the final norm (weight, eps) and the output head; an MTP module's step also mixes its embedding
    with the main model's hidden state, `mix` = (enorm, hnorm, eh_proj)."""

    embed: torch.Tensor
    norm_out: tuple[torch.Tensor, float]
    head: Matrix
    mix: tuple[tuple[torch.Tensor, float], tuple[torch.Tensor, float], Matrix] | None = None


class Ends(ctypes.Structure):
    _fields_ = [
        ("embed", P),
        ("V", LONG),
        ("norm_emb", P),
        ("norm_prev", P),
        ("eps_emb", F32),
        ("eps_prev", F32),
        ("mix", Weight),
        ("norm_out", P),
        ("eps_out", F32),
        ("head", Weight),
        ("cos2", P),
        ("sin2", P),
    ]


def rope_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (positions, Dr/2) -> the C step's tables (positions, Dr): [cos | cos], [-sin | sin]."""
    return torch.cat([cos, cos], dim=-1).contiguous(), torch.cat([-sin, sin], dim=-1).contiguous()


def _ends(ends: StepEnds, keep: list) -> Ends:
    embed, (w_out, eps_out) = ends.embed.detach().contiguous(), ends.norm_out
    keep += [embed, w_out, ends]
    out = Ends(embed=_pointer(embed), V=embed.shape[0], norm_out=_pointer(w_out), eps_out=eps_out)
    out.head = _weight(ends.head)
    if ends.mix is not None:
        (w_emb, out.eps_emb), (w_prev, out.eps_prev), eh_proj = ends.mix
        out.norm_emb, out.norm_prev, out.mix = _pointer(w_emb), _pointer(w_prev), _weight(eh_proj)
    return out


class CDecodeStep:
    """Fused layers (`decode.LayerWeights`) and a step's ends as C structs, and the call that runs a
    decode step through them. Raises ValueError when the kernels are not built or a weight is not in a
    form the C code reads (see `FastDecoder.supports`)."""

    def __init__(self, layers: list[LayerWeights], ends: StepEnds):
        self.lib = kernels.library()
        self.keep: list = []
        structs = [_layer(lw, self.keep) for lw in layers]
        self.layers = (Layer * len(structs))(*structs)
        self.ends = _ends(ends, self.keep)
        self.C, self.V = structs[0].C, self.ends.V
        self.rope_width = structs[0].D if structs[0].kind == 1 else structs[0].Dr
        self.mtp = ends.mix is not None
        self.work, self.work_for = torch.empty(0), (0, 0)  # scratch for (rows, cache length)
        self.kv_for: tuple = ()  # the caches checked last, and their pointer array
        self.rope_for: tuple = ()

    def _caches(self, kv: list[torch.Tensor]):
        ptrs = tuple(t.data_ptr() for t in kv)
        if not self.kv_for or ptrs != self.kv_for[0]:
            if not all(_fp32(t) for t in kv) or len({t.shape[:2] for t in kv}) != 1:
                raise ValueError("the C decode step needs contiguous fp32 caches of one shape")
            self.kv_for = (ptrs, (P * len(kv))(*ptrs))
        return self.kv_for[1]

    def _rope(self, rope: tuple[torch.Tensor, torch.Tensor], max_len: int) -> None:
        cos2, sin2 = rope
        key = (cos2.data_ptr(), sin2.data_ptr(), max_len, cos2.shape, sin2.shape)
        if key != self.rope_for:
            if not (
                _fp32(cos2)
                and _fp32(sin2)
                and cos2.shape == sin2.shape
                and cos2.shape[0] >= max_len
                and cos2.shape[1] == self.rope_width
            ):
                raise ValueError(
                    f"rope tables {tuple(cos2.shape)} for a cache of {max_len} positions, rope width {self.rope_width}"
                )
            self.ends.cos2, self.ends.sin2, self.rope_for = key[0], key[1], key

    def run(
        self,
        tokens: list[int],
        positions: list[int],
        slots: list[int],
        kv: list[torch.Tensor],
        rope: tuple[torch.Tensor, torch.Tensor],
        h_prev: torch.Tensor | None = None,
        logits: bool = False,
        argmax: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[int] | None]:
        """Row i: token tokens[i] at positions[i] of cache slot slots[i]. Rows may share a slot at
        consecutive positions (speculation's [pending, draft]): every row's cache entry is written
        before any row attends, and each attends up to its own position. kv: the layers' caches in
        order (`cache.kv`; extra ones after them are not touched); rope: `rope_tables` over at least
        the cache's positions; h_prev (N, C): an MTP step's main hidden states. Writes each layer's
        cache rows; returns the final hidden states (N, C) before the final norm, and with `logits`
        the head's logits (N, V) fp32, with `argmax` each row's most likely token."""
        N = len(tokens)
        pointers = self._caches(kv)
        n_slots, max_len = kv[0].shape[:2]
        if not (len(slots) == len(positions) == N and min(slots) >= 0 and max(slots) < n_slots):
            raise ValueError(f"slots {slots} for {N} rows and a cache of {n_slots} slots")
        if not (min(positions) >= 0 and max(positions) < max_len):
            raise ValueError(f"positions {positions} outside a cache of {max_len} positions")
        if self.mtp != (h_prev is not None):
            raise ValueError("an MTP step takes the main hidden states h_prev, a plain step none")
        prev = None
        if h_prev is not None:
            prev = h_prev.detach().float().contiguous()
            if prev.shape != (N, self.C):
                raise ValueError(f"h_prev {tuple(prev.shape)} for {N} rows of width {self.C}")
        self._rope(rope, max_len)
        if self.work_for[0] < N or self.work_for[1] != max_len:
            size = self.lib.decode_tokens_work(ctypes.addressof(self.layers), len(self.layers), N, max_len)
            self.work, self.work_for = torch.empty(size), (N, max_len)
        h = torch.empty(N, self.C)
        out = torch.empty(N, self.V) if logits or argmax else None
        top = (LONG * N)() if argmax else None
        ids, rows, where = (
            (LONG * N)(*tokens),
            (LONG * N)(*slots),
            (LONG * N)(*positions),
        )  # alive for the call
        status = self.lib.decode_tokens(
            ctypes.addressof(self.layers),
            len(self.layers),
            ctypes.addressof(self.ends),
            ctypes.addressof(ids),
            prev.data_ptr() if prev is not None else None,
            N,
            ctypes.addressof(pointers),
            ctypes.addressof(rows),
            ctypes.addressof(where),
            max_len,
            h.data_ptr(),
            out.data_ptr() if out is not None else None,
            ctypes.addressof(top) if top is not None else None,
            self.work.data_ptr(),
        )
        if status == -2:
            raise ValueError(f"token ids {tokens} outside the vocabulary of {self.V}")
        if status != 0:
            raise MemoryError(f"decode_tokens: no memory for the buffers of {N} rows")
        return h, out, list(top) if top is not None else None
