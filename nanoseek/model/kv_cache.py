"""What every family's decode cache shares: per-layer tensors of one row per (slot, position).

    cache = model.new_cache(num_slots=8, max_len=2048)     # LatentCache (MLA) or KVCache (dense GQA)
    cache.kv[layer]                                        # (num_slots, max_len, width)
    cache.copy_slot(src=0, dst=3, length=120)              # fork a prefix (GRPO groups, prefix sharing)
    cache.bytes_per_token                                  # measured from the tensors

A row holds what one token contributes to attention at that layer, so decoding reads one contiguous
block per sequence: MLA's [latent | rope key] (attention.LatentCache), a dense model's [K heads | V
heads] (dense.KVCache). The model writes a token's row at (slot, position) and a query attends over
its slot's positions <= its own, so stale rows past a sequence's end are never read.
"""

from __future__ import annotations

import torch


class SlotCache:
    """Per-layer (num_slots, max_len, width) tensors, zero-filled."""

    def __init__(
        self, layers: int, num_slots: int, max_len: int, width: int, device=None, dtype=torch.float32
    ):
        self.kv = [torch.zeros(num_slots, max_len, width, device=device, dtype=dtype) for _ in range(layers)]
        self.num_slots, self.max_len = num_slots, max_len

    @property
    def bytes_per_token(self) -> int:
        total = sum(t.untyped_storage().nbytes() for t in self.kv)
        return total // (self.num_slots * self.max_len)

    def copy_slot(self, src: int, dst: int, length: int) -> None:
        """Forks a sequence: slot `dst` gets slot `src`'s first `length` positions (prefix sharing)."""
        for t in self.kv:
            t[dst, :length] = t[src, :length]
