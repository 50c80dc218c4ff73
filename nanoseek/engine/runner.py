"""ModelRunner: the tensor side of the engine, a model, its preallocated cache and its decode path.

    runner = ModelRunner(model, num_slots=16, max_len=1024, speculative=False)
    h = runner.hidden([[1, 2, 3], [4, 5]], starts=[0, 7], slots=[0, 3])   # (2, 3, C), ragged rows padded
    logits = runner.logits(h[:, -1])                                        # (2, V)
    h, logits = runner.decode_logits([[9], [4]], starts=[3, 2], slots=[0, 3])   # a decode step: (2, 1, C|V)
    scored = runner.token_logprobs(h[0, :2], [2, 3], top=1)   # a prompt's own logprobs (TokenLogprob)
    runner.sync()                      # after a trainer changed the weights: rebuild what derives from them

Every call writes the new tokens' cache rows at (slot, start + t) and attends over the slot's
positions <= its own. Ragged rows are right-padded: a pad token sits at a position after the row's
last real token, so no real token attends to it and the next real token written there replaces it.
The cache (`model.new_cache`) has one position more than `max_len`, a scratch row end that pads and
speculative drafts past the end may write to; `cache_bytes_per_token` is measured from its tensors.

Prefill runs the model's own forward. Decode steps run the fused C step (`decode.FastDecoder`) when
it `supports` the model, else the model's forward too (the reason is logged once). The fused copies
are a snapshot of the weights taken at construction and at every `sync()`; `check_synced()` raises
when the model's weights changed since (a trainer that forgot to sync), so no step ever mixes stale
copies with live weights.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from nanoseek.engine.decode import FastDecoder
from nanoseek.engine.protocol import TokenLogprob

log = logging.getLogger(__name__)
_logged: set[str] = set()  # fast-path refusals already logged (once per reason per process)

# oneDNN (the fp32 matmuls of prefill, `model/kernels.py`; the packed head, `decode.py`) compiles a
# kernel for every new input shape and keeps it in two LRU caches (its primitive cache and ideep's),
# 1024 entries each by default at ~0.5 MB an entry (measured): prompts of every length grew a server's
# RSS by ~400 MB over 200 shapes. A small bound instead, unless the user set one. oneDNN reads these
# when it first runs, so they must be set before the process's first fp32 matmul (importing the
# engine does it); they bound the training matmuls of the same process too.
SHAPE_CACHE_ENTRIES = 64
SHAPE_CACHE_VARS = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
for _var in SHAPE_CACHE_VARS:
    os.environ.setdefault(_var, str(SHAPE_CACHE_ENTRIES))


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def trim_heap() -> None:
    """Hand the heap memory malloc keeps but no tensor uses back to the OS (glibc; a no-op elsewhere).
    glibc serves a freed large block's size from its heap from then on (its mmap threshold adapts), so
    prefill temporaries of ever new sizes leave free holes it never returns: ~250 MB over 200 shapes,
    measured. The engine's loop calls this when it runs out of work (~1 ms), never between steps."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


LOGPROB_ROWS = 128  # prompt positions whose (rows, vocab) log-probabilities are materialized at once
STALE = "weights changed since the last sync_weights(); call engine.sync_weights(model) after each update"


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


class WeightVersions:
    """Notices in-place updates of a model's weights (parameters and persistent buffers) cheaply: every
    in-place write bumps a tensor's version counter, which only grows, and replacing a tensor's data
    moves its pointer; one sum of each per check."""

    def __init__(self, model: nn.Module):
        tensors = model.state_dict(keep_vars=True).values()  # parameters and persistent buffers
        self.tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
        self.key = self.read()

    def read(self) -> tuple[int, int]:
        return sum(t._version for t in self.tensors), sum(t.data_ptr() for t in self.tensors)

    def changed(self) -> bool:
        return self.read() != self.key


class ModelRunner:
    def __init__(
        self,
        model: nn.Module,
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
        self.fast_decode = fast_decode
        self.fast: FastDecoder | None = None
        self.fast_decode_off: str | None = None  # why decode steps take the model's forward, or None
        self.sync()

    def sync(self) -> None:
        """Take the model's current weights: rebuild the fused decode weights (when the C step can run
        the model as it is now), snapshot the weights' versions."""
        reason = FastDecoder.supports(self.model, self.cache) if self.fast_decode else "fast_decode=False"
        if reason is not None and reason not in _logged:
            _logged.add(reason)
            log.info("decoding with the model's own forward: %s", reason)
        self.fast_decode_off = reason
        self.fast = FastDecoder(self.model) if reason is None else None
        self.versions = WeightVersions(self.model)

    def check_synced(self) -> None:
        """RuntimeError if the model's weights changed since the last `sync()`."""
        if self.versions.changed():
            raise RuntimeError(STALE)

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

    def decode_logits(
        self, ids: list[list[int]], starts: list[int], slots: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A few consecutive new tokens per row (row i: ids[i] from position starts[i] of slot
        slots[i], every row the same length T: one for a plain step, speculation's [pending, draft]),
        and the logits after each: (B, T, C) final hidden states, (B, T, V) fp32. On the fused path in
        one C call, as one row per token (a row's tokens share its slot: each attends to the cache up
        to its own position, its run's earlier tokens included)."""
        if self.fast is None:
            h = self.hidden(ids, starts, slots)
            return h, self.logits(h)
        h, logits = self.fast.forward(*self._token_rows(ids, starts, slots), self.cache)
        B, T = len(ids), len(ids[0])
        return h.view(B, T, -1), logits.view(B, T, -1)

    @torch.no_grad()
    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Next-token logits (..., V) of final hidden states (..., C)."""
        if self.fast is not None:
            return self.fast.logits(h)
        with inference_mode(self.model):
            return self.model.lm_head(self.model.norm(h)).float()

    def token_logprobs(self, h: torch.Tensor, targets: list[int], top: int = 0) -> list[TokenLogprob]:
        """log p(targets[t]) under the next-token distribution at each of the final hidden states h
        (T, C), and the `top` most likely tokens there: a prompt's own logprobs, from its prefill.
        LOGPROB_ROWS positions at a time, so no (T, vocab) matrix is ever whole."""
        out: list[TokenLogprob] = []
        for a in range(0, len(targets), LOGPROB_ROWS):
            b = min(a + LOGPROB_ROWS, len(targets))
            lp = self.logits(h[a:b]).float().log_softmax(-1)  # (rows, V)
            ids = torch.tensor(targets[a:b], device=lp.device)
            chosen = lp.gather(1, ids[:, None])[:, 0].tolist()
            tops: list[list[tuple[int, float]]] = [[] for _ in chosen]
            if top > 0:
                values, indices = lp.topk(min(top, lp.shape[-1]), dim=-1)
                tops = [list(zip(i, v)) for i, v in zip(indices.tolist(), values.tolist())]
            out += [TokenLogprob(t, v, k) for t, v, k in zip(targets[a:b], chosen, tops)]
        return out

    def mtp_hidden(
        self, h: torch.Tensor, next_ids: list[list[int]], starts: list[int], slots: list[int]
    ) -> torch.Tensor:
        """The MTP module (depth 1) at the positions of h (B, T, C): it combines the main model's
        hidden state at position p with the token at p + 1 and predicts the token at p + 2. Writes
        the MTP layer's cache; returns its hidden states (B, T, C)."""
        if self.fast is not None:  # one row per token on the C step
            B, T = h.shape[:2]
            tokens, positions, rows = self._token_rows(next_ids, starts, slots)
            out = self.fast.mtp_hidden(0, h.reshape(B * T, -1), tokens, positions, rows, self.cache)
            return out.view(B, T, -1)
        tokens, positions, slot_ids = self._batch(next_ids, starts, slots)
        with inference_mode(self.model):
            return self.model.mtp_hidden(0, h, tokens, positions, self.cache, slot_ids)

    def mtp_drafts(
        self, h: torch.Tensor, next_ids: list[list[int]], starts: list[int], slots: list[int], pick: list[int]
    ) -> list[int]:
        """`mtp_hidden` and the MTP module's draft for each row: the most likely token at position
        starts[i] + pick[i] (on the fused path in one C call, the head's argmax included)."""
        if self.fast is None:
            mh = self.mtp_hidden(h, next_ids, starts, slots)
            rows = mh[torch.arange(len(pick), device=mh.device), torch.tensor(pick, device=mh.device)]
            return self.mtp_logits(rows).argmax(-1).tolist()
        B, T = h.shape[:2]
        tokens, positions, rows = self._token_rows(next_ids, starts, slots)
        _, top = self.fast.mtp_hidden(
            0, h.reshape(B * T, -1), tokens, positions, rows, self.cache, argmax=True
        )
        return [top[i * T + p] for i, p in enumerate(pick)]

    @torch.no_grad()
    def mtp_logits(self, h: torch.Tensor) -> torch.Tensor:
        """The MTP module's draft logits (..., V) fp32."""
        if self.fast is not None:
            return self.fast.mtp_logits(0, h)
        with inference_mode(self.model):
            return self.model.mtp_logits(0, h).float()

    def fork(self, src: int, dst: int, length: int) -> None:
        """Slot dst gets src's first `length` positions in every layer (the MTP layer included)."""
        self.cache.copy_slot(src, dst, length)
