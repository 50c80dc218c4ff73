"""Reference generation by full recompute, and perplexity: what the engine is checked against.

    from nanoseek.engine.naive import greedy_generate, naive_generate, perplexity
    outs = naive_generate(model, [[0, 5, 9], [0, 7]], max_new_tokens=16)   # greedy, no cache
    new = greedy_generate(model, [0, 5, 9], 16, eos_id=1)                   # one prompt
    ppl = perplexity(model, ids)                                            # ids (B, T)

`greedy_generate` runs the whole sequence through `model(ids)` (naive attention, no cache, no
batching) for every new token and takes the argmax of the last position: slow and obviously right.
Training uses it for its few greedy samples (`train/evaluate.py`); the tests hold the engine to it.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn


@torch.no_grad()
def greedy_generate(
    model: nn.Module,
    ids: list[int],
    max_new_tokens: int,
    eos_id: int | None = None,
    autocast=contextlib.nullcontext,
) -> list[int]:
    """The argmax continuation of `ids` (the new tokens only), recomputing everything per token and
    stopping after eos_id; each forward sees the last max_position_embeddings tokens. autocast: a
    context factory for mixed precision (training's)."""
    device = next(model.parameters()).device
    window = model.config.max_position_embeddings
    out = list(ids)
    for _ in range(max_new_tokens):
        with autocast():
            logits = model(torch.tensor([out[-window:]], device=device))
        token = int(logits[0, -1].argmax())
        out.append(token)
        if token == eos_id:
            break
    return out[len(ids) :]


def naive_generate(
    model: nn.Module, prompts: list[list[int]], max_new_tokens: int, eos_id: int | None = None
) -> list[list[int]]:
    """`greedy_generate` of each prompt."""
    return [greedy_generate(model, prompt, max_new_tokens, eos_id) for prompt in prompts]


@torch.no_grad()
def perplexity(model: nn.Module, ids: torch.Tensor) -> float:
    """exp(mean next-token cross-entropy) of token ids (B, T) under the model."""
    targets = torch.roll(ids, -1, dims=1)
    targets[:, -1] = -100
    return math.exp(model(ids, targets=targets).lm.item())
