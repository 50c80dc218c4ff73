"""A whole decode step in one C call: N tokens through every layer (decode_step.c).

    step = CDecodeStep.build(fast_decoder.layers)           # None where it cannot run (see `build`)
    h = step.hidden(h, positions, slots, cache, cos, sin)   # (N, C) embedded tokens -> final hidden

`FastDecoder.hidden` takes this path when the C kernels are built. A decode step's time is the
weights streamed once plus ~70 small operations per layer (norms, rope, attention over the cache,
routing, activations); as torch calls those cost ~4 ms per step at d10, a third of the batch-1 step,
and in C well under a millisecond. The C code follows `LayerWeights.forward` formula by formula on
the same fused weights and the same matmul kernels; the other operations round differently from
torch's in the last bits, as any two float implementations do. Every row is computed alone (the
matmul kernels give a row the same bits in any batch), so a request's tokens do not depend on what
else is decoded with it.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import torch

from nanoseek.engine import kernels

if TYPE_CHECKING:
    from nanoseek.engine.decode import LayerWeights, Mat

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
    ]


def _fp32(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()


def _weight(mat: Mat | None) -> Weight:
    """A Mat's matrix for the C code: fp32 (out, in) or int8 (out, in) with per-row scales."""
    if mat is None:
        return Weight()
    if mat.w is not None and _fp32(mat.w):
        return Weight(mat.w.data_ptr(), None, None, *mat.w.shape)
    if mat.q is not None and mat.q.device.type == "cpu" and _fp32(mat.scale):
        return Weight(None, mat.q.data_ptr(), mat.scale.data_ptr(), *mat.q.shape)
    raise ValueError("no C-ready weight")  # fp32 kept as W^T for MKL: the kernels are not built


def _layer(lw: LayerWeights, keep: list) -> Layer:
    """The C struct for one layer's fused weights; `keep` collects what must outlive it (the struct
    holds raw pointers into lw's tensors: lw itself, and the copies made here)."""
    keep.append(lw)
    H, Dn, Dr, R, Dv = lw.dims
    (w_attn, e_attn), (w_mlp, e_mlp), (w_kv, e_kv) = lw.norms
    w_q, e_q = lw.q_norm if lw.q_lora else (None, 0.0)
    tensors = [w_attn, w_mlp, w_kv, lw.w_uk_k, lw.w_uv_k] + ([w_q] if lw.q_lora else [])
    if not all(t is not None and _fp32(t) for t in tensors):
        raise ValueError("norms and absorbed weights must be contiguous fp32 on the CPU")
    L = Layer(C=w_attn.shape[0], H=H, Dn=Dn, Dr=Dr, R=R, Dv=Dv, q_rank=w_q.shape[0] if lw.q_lora else 0)
    L.norm_attn, L.norm_mlp, L.norm_kv = w_attn.data_ptr(), w_mlp.data_ptr(), w_kv.data_ptr()
    L.norm_q = w_q.data_ptr() if lw.q_lora else None
    L.eps_attn, L.eps_mlp, L.eps_kv, L.eps_q = e_attn, e_mlp, e_kv, e_q
    L.qkv, L.q_b, L.o = _weight(lw.qkv), _weight(lw.q_b if lw.q_lora else None), _weight(lw.o)
    L.uk, L.uv, L.scale = lw.w_uk_k.data_ptr(), lw.w_uv_k.data_ptr(), lw.scale
    keep += tensors
    if not lw.moe:
        L.gate_up, L.down = _weight(lw.gate_up), _weight(lw.down)
        return L
    cfg = lw.cfg
    L.E, L.K, L.G, L.topk_group = cfg.n_routed_experts, cfg.num_experts_per_tok, cfg.n_group, cfg.topk_group
    L.norm_topk, L.routed_scaling = int(cfg.norm_topk_prob), cfg.routed_scaling_factor
    if lw.router_shared is not None:  # fp32: [router | shared gate | shared up] in one matrix
        L.router, L.shared_fused = _weight(lw.router_shared), 1
    else:
        router = lw.router.float().contiguous()
        keep.append(router)
        L.router = Weight(router.data_ptr(), None, None, *router.shape)
        L.shared_gu = _weight(lw.shared[0] if lw.shared is not None else None)
    L.shared_down = _weight(lw.shared[1] if lw.shared is not None else None)
    bias = lw.bias.float().contiguous()
    gu, down = (Weight * L.E)(*map(_weight, lw.gu)), (Weight * L.E)(*map(_weight, lw.dn))
    keep += [bias, gu, down]
    L.bias, L.experts_gu, L.experts_down = bias.data_ptr(), gu, down
    return L


class CDecodeStep:
    """FastDecoder's layers as C structs, and the call that runs a decode step through all of them."""

    def __init__(self, layers: ctypes.Array, keep: list):
        self.layers, self.keep = layers, keep
        self.lib = kernels.library()
        self.work, self.work_for = torch.empty(0), (0, 0)  # scratch for (rows, cache length)

    @classmethod
    def build(cls, layers: list[LayerWeights]) -> CDecodeStep | None:
        """None when the C kernels are not built or a weight is not in a form the C code reads
        (fp32 or int8 (out, in) on the CPU)."""
        if not kernels.available():
            return None
        keep: list = []
        try:
            structs = [_layer(lw, keep) for lw in layers]
        except ValueError:
            return None
        return cls((Layer * len(structs))(*structs), keep)

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
        (N, Dr/2) their rope factors. Rows may share a slot at consecutive positions (speculation's
        [pending, draft]): every row's cache entry is written before any row attends, and each
        attends up to its own position. kv: the layers' caches in order (`LatentCache.kv`; extra ones
        after them are not touched). Writes each layer's cache rows; returns the final hidden states
        (N, C)."""
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
