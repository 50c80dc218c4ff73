"""What every family's decode cache shares: per-layer tensors of one row per (slot, position).

    cache = model.new_cache(num_slots=8, max_len=2048)     # LatentCache (MLA) or KVCache (dense GQA)
    cache.kv[layer]                                        # (num_slots, max_len, width)
    cache.copy_slot(src=0, dst=3, length=120)              # fork a prefix (GRPO groups, prefix sharing)
    cache.bytes_per_token                                  # measured from the tensors

A row holds what one token contributes to attention at that layer, so decoding reads one contiguous
block per sequence: MLA's [latent | rope key] (attention.LatentCache), a dense model's [K heads | V
heads] (dense.KVCache). The model writes a token's row at (slot, position) and a query attends over
its slot's positions <= its own, so stale rows past a sequence's end are never read.

On the CPU the tensors live in fresh anonymous memory (`lazy_zeros`), whose pages the OS maps when
first written: a cache sized for a checkpoint's whole context (SmolLM2's 8,192 positions x 32 slots
x 30 layers: 12 GB) costs memory only for the positions sequences reach. `torch.zeros` writes, and so
keeps, every page.
"""

from __future__ import annotations

import math
import mmap

import torch


def lazy_zeros(shape: tuple[int, ...], device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Zeros of `shape`; on the CPU backed by an anonymous mapping (zero pages until written, memory
    returned to the OS when the tensor is freed), elsewhere `torch.zeros`."""
    count = math.prod(shape)
    if torch.device(device or "cpu").type != "cpu" or count == 0:
        return torch.zeros(shape, device=device, dtype=dtype)
    buffer = mmap.mmap(-1, count * dtype.itemsize)  # its storage keeps it alive
    storage = torch.frombuffer(buffer, dtype=dtype, count=count).untyped_storage()
    # a tensor of its own on that storage, not a view: a training forward writes values that carry
    # gradients into the cache in place (GRPO's prompt fork), which autograd refuses on a leaf's view
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


class SlotCache:
    """Per-layer (num_slots, max_len, width) tensors, zero-filled."""

    def __init__(
        self, layers: int, num_slots: int, max_len: int, width: int, device=None, dtype=torch.float32
    ):
        self.kv = [lazy_zeros((num_slots, max_len, width), device, dtype) for _ in range(layers)]
        self.num_slots, self.max_len = num_slots, max_len

    @property
    def bytes_per_token(self) -> int:
        total = sum(t.untyped_storage().nbytes() for t in self.kv)
        return total // (self.num_slots * self.max_len)

    def copy_slot(self, src: int, dst: int, length: int) -> None:
        """Forks a sequence: slot `dst` gets slot `src`'s first `length` positions (prefix sharing)."""
        for t in self.kv:
            t[dst, :length] = t[src, :length]
