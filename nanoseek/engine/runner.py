"""ModelRunner: the tensor side of the engine, a DeepSeekV3 model and its preallocated latent cache.

    runner = ModelRunner(model, num_slots=16, max_len=1024, speculative=False)
    h = runner.hidden([[1, 2, 3], [4, 5]], starts=[0, 7], slots=[0, 3])   # (2, 3, C), ragged rows padded
    logits = runner.logits(h[:, -1])                                        # (2, V)

Every call writes the new tokens' latents into the cache at (slot, start + t) and attends over the
slot's positions <= its own (see `nanoseek.model.attention`). Ragged rows are right-padded: a pad
token sits at a position after the row's last real token, so no real token attends to it and the
next real token written there replaces it. The cache has one position more than `max_len`, a scratch
row end that pads and speculative drafts past the end may write to.

The cache holds, per token and layer, only the normalized latent and the rope key:
`cache_bytes_per_token` = (kv_lora_rank + qk_rope_head_dim) x layers x dtype size, measured from
the allocated tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from nanoseek.engine.decode import FastDecoder
from nanoseek.model import DeepSeekV3


@contextmanager
def inference_mode(model: nn.Module) -> Iterator[None]:
    """No autograd, and eval mode for the duration (a GRPO trainer's model may be in train mode,
    where MoE layers would count the generated tokens into their balancing statistics)."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


class ModelRunner:
    def __init__(
        self,
        model: DeepSeekV3,
        num_slots: int,
        max_len: int,
        speculative: bool = False,
        cache_dtype: torch.dtype | None = None,
        fast_decode: bool = True,
    ):
        self.model = model
        self.num_slots, self.max_len = num_slots, max_len
        self.speculative = speculative
        self.device = model.device
        self.cache = model.new_cache(num_slots, max_len + 1, with_mtp=speculative, dtype=cache_dtype)
        self.fast = FastDecoder(model) if fast_decode else None
        if self.fast is not None and not self.fast.supports(self.cache):
            self.fast = None

    @property
    def cache_bytes_per_token(self) -> int:
        """Bytes of cache per token over the main layers (and the MTP layer with speculation)."""
        return self.cache.bytes_per_token

    def _batch(self, ids: list[list[int]], starts: list[int], slots: list[int]):
        T = max(len(row) for row in ids)
        tokens = torch.zeros(len(ids), T, dtype=torch.long)
        for i, row in enumerate(ids):
            tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        positions = (torch.tensor(starts)[:, None] + torch.arange(T)[None, :]).clamp(max=self.max_len)
        dev = self.device
        return tokens.to(dev), positions.to(dev), torch.tensor(slots, device=dev)

    def hidden(self, ids: list[list[int]], starts: list[int], slots: list[int]) -> torch.Tensor:
        """Run rows of new tokens (row i at positions starts[i]..) through the main layers, writing
        the cache; returns the final hidden states (B, T, C), before the final norm."""
        tokens, positions, slot_ids = self._batch(ids, starts, slots)
        with inference_mode(self.model):
            h, _ = self.model.hidden_states(tokens, positions, self.cache, slot_ids)
        return h

    def _token_rows(self, ids: list[list[int]], starts: list[int], slots: list[int]):
        """Runs of tokens (row i: ids[i] from position starts[i] of slot slots[i]) as one row per
        token for the fused decode path: (tokens, positions, slots), flat. As in `_batch`, a position
        past the end goes to the scratch row."""
        tokens = [t for row in ids for t in row]
        positions = [min(start + k, self.max_len) for start, row in zip(starts, ids) for k in range(len(row))]
        return tokens, positions, [slot for slot, row in zip(slots, ids) for _ in row]

    def decode(self, tokens: list[int], starts: list[int], slots: list[int]) -> torch.Tensor:
        """One new token per row (row i: tokens[i] at position starts[i] of slot slots[i]), through
        the fused decode path (`decode.FastDecoder`) when the model allows; returns (B, C)."""
        return self.decode_runs([[t] for t in tokens], starts, slots)[:, 0]

    def decode_runs(self, ids: list[list[int]], starts: list[int], slots: list[int]) -> torch.Tensor:
        """A few consecutive new tokens per row (row i: ids[i] from position starts[i] of slot
        slots[i], every row the same length T): speculation's [pending, draft]. Through the fused
        decode path as one row per token where the model allows (a row's tokens share its slot: each
        attends to the cache up to its own position, its run's earlier tokens included); returns
        (B, T, C)."""
        if self.fast is None:
            return self.hidden(ids, starts, slots)
        with inference_mode(self.model):
            h = self.fast.hidden(*self._token_rows(ids, starts, slots), self.cache)
        return h.view(len(ids), len(ids[0]), -1)

    @torch.no_grad()
    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Next-token logits (..., V) of final hidden states (..., C)."""
        if self.fast is not None:
            return self.fast.logits(h)
        return self.model.lm_head(self.model.norm(h)).float()

    def mtp_hidden(
        self, h: torch.Tensor, next_ids: list[list[int]], starts: list[int], slots: list[int]
    ) -> torch.Tensor:
        """The MTP module (depth 1) at the positions of h (B, T, C): it combines the main model's
        hidden state at position p with the token at p + 1 and predicts the token at p + 2. Writes
        the MTP layer's cache; returns its hidden states (B, T, C)."""
        if self.fast is not None:  # one row per token on the C step, where it runs
            B, T = h.shape[:2]
            tokens, positions, rows = self._token_rows(next_ids, starts, slots)
            with inference_mode(self.model):
                out = self.fast.mtp_hidden(0, h.reshape(B * T, -1), tokens, positions, rows, self.cache)
            if out is not None:
                return out.view(B, T, -1)
        tokens, positions, slot_ids = self._batch(next_ids, starts, slots)
        with inference_mode(self.model):
            return self.model.mtp_hidden(0, h, tokens, positions, self.cache, slot_ids)

    @torch.no_grad()
    def mtp_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.mtp_logits(0, h).float()

    def fork(self, src: int, dst: int, length: int) -> None:
        """Slot dst gets src's first `length` positions in every layer (the MTP layer included)."""
        self.cache.copy_slot(src, dst, length)
