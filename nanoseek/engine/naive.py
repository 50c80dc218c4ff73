"""Reference generation by full recompute, and perplexity: what the engine is checked against.

    from nanoseek.engine.naive import naive_generate, perplexity
    outs = naive_generate(model, [[0, 5, 9], [0, 7]], max_new_tokens=16)   # greedy, no cache
    ppl = perplexity(model, ids)                                            # ids (B, T)

`naive_generate` runs the whole sequence through `model(ids)` (naive attention, no cache, no
batching) for every new token and takes the argmax of the last position: slow and obviously right.
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def naive_generate(
    model: nn.Module, prompts: list[list[int]], max_new_tokens: int, eos_id: int | None = None
) -> list[list[int]]:
    """Greedy continuation of each prompt, recomputing everything per token; stops after eos_id."""
    device = next(model.parameters()).device
    outputs = []
    for prompt in prompts:
        ids, out = list(prompt), []
        for _ in range(max_new_tokens):
            token = int(model(torch.tensor([ids], device=device))[0, -1].argmax())
            out.append(token)
            ids.append(token)
            if token == eos_id:
                break
        outputs.append(out)
    return outputs


@torch.no_grad()
def perplexity(model: nn.Module, ids: torch.Tensor) -> float:
    """exp(mean next-token cross-entropy) of token ids (B, T) under the model."""
    targets = torch.roll(ids, -1, dims=1)
    targets[:, -1] = -100
    return math.exp(model(ids, targets=targets).lm.item())
