"""A whole decode step in one C call: N tokens through every layer (decode_step.c).

    step = CDecodeStep(fast_decoder.layers)                 # the fused layers as C structs
    h = step.hidden(h, positions, slots, cache.kv, cos, sin)   # (N, C) embedded tokens -> final hidden

`FastDecoder` runs every decode step through this, for MLA layers (`LayerWeights`) and dense GQA
layers (`DenseLayerWeights`, the struct's `kind` 1). The C code follows `reference.py` (the decode
step written out in torch) formula by formula, on the same fused weights and the same matmul
kernels; its other operations (norms, rope, softmax, routing) round differently from torch's in the
last bits, as any two float implementations do. Every row is computed alone (the matmul kernels give
a row the same bits in any batch), so a request's tokens do not depend on what else is decoded with
it. The structs hold raw pointers into the fused weights; `keep` holds those tensors alive.
"""

from __future__ import annotations

import ctypes
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


class CDecodeStep:
    """Fused layers (`decode.LayerWeights`) as C structs, and the call that runs a decode step through
    all of them. Raises ValueError when the kernels are not built or a weight is not in a form the C
    code reads (see `FastDecoder.supports`)."""

    def __init__(self, layers: list[LayerWeights]):
        self.lib = kernels.library()
        self.keep: list = []
        structs = [_layer(lw, self.keep) for lw in layers]
        self.layers = (Layer * len(structs))(*structs)
        self.work, self.work_for = torch.empty(0), (0, 0)  # scratch for (rows, cache length)

    def hidden(
        self,
        h: torch.Tensor,
        positions: list[int],
        slots: list[int],
        kv: list[torch.Tensor],
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        """h (N, C) fp32: the embedded tokens, row i at positions[i] of cache slot slots[i]; cos, sin
        (N, Dr/2) their rope factors (dense layers: (N, head_dim/2)). Rows may share a slot at
        consecutive positions (speculation's [pending, draft]): every row's cache entry is written
        before any row attends, and each attends up to its own position. kv: the layers' caches in
        order (`cache.kv`; extra ones after them are not touched). Writes each layer's cache rows;
        returns the final hidden states (N, C)."""
        N = h.shape[0]
        n_slots, max_len = kv[0].shape[:2]
        if not all(_fp32(t) for t in kv) or h.dtype != torch.float32:
            raise ValueError("the C decode step needs fp32 hidden states and contiguous fp32 caches")
        if not (len(slots) == len(positions) == N and min(slots) >= 0 and max(slots) < n_slots):
            raise ValueError(f"slots {slots} for {N} rows and a cache of {n_slots} slots")
        if not (min(positions) >= 0 and max(positions) < max_len):
            raise ValueError(f"positions {positions} outside a cache of {max_len} positions")
        if self.work_for[0] < N or self.work_for[1] != max_len:
            size = max(
                self.lib.decode_step_work(ctypes.addressof(layer), N, max_len) for layer in self.layers
            )
            self.work, self.work_for = torch.empty(size), (N, max_len)
        cos2 = torch.cat([cos, cos], dim=-1).contiguous()
        sin2 = torch.cat([-sin, sin], dim=-1).contiguous()
        h = h.contiguous().clone()
        pointers = (P * len(kv))(*(t.data_ptr() for t in kv))
        slot_array, position_array = (LONG * N)(*slots), (LONG * N)(*positions)
        args = (ctypes.addressof(self.layers), len(self.layers), h.data_ptr(), N, ctypes.addressof(pointers))
        args += (ctypes.addressof(slot_array), ctypes.addressof(position_array), max_len)
        if self.lib.decode_step(*args, cos2.data_ptr(), sin2.data_ptr(), self.work.data_ptr()) != 0:
            raise MemoryError(f"decode_step: no memory for the buffers of {N} rows")
        return h
