"""Evaluation during training: validation loss, bits per byte, the unigram baseline, greedy samples.

    loss, n = validation_loss(model, val_loader(), max_batches=20)       # nats per target token
    bpb = bits_per_byte(loss, bytes_per_token)
    h = unigram_entropy("runs/x/data")                                 # the no-context baseline, nats
    rows = sample(model, tokenizer, [("2+2", ids)], chat=True, max_new_tokens=64)

Bits per byte: loss (nats per token) x tokens / (ln 2 x bytes), with tokens / bytes the ratio of the
validation split in the shard manifest; it compares models with different tokenizers. The unigram
entropy -sum p log p of the train split's token frequencies is what a model with no context can reach;
a model that learned anything beyond token frequencies goes below it.

Samples decode greedily with `nanoseek.engine.naive.greedy_generate`, a tiny loop that re-runs the
whole sequence for every token (no cache): enough for a few short samples during training.
Under FSDP every rank must call these functions with the same arguments (forwards are collectives).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nanoseek.data import read_manifest
from nanoseek.engine.naive import greedy_generate
from nanoseek.tokenizer import split_completion
from nanoseek.train.distributed import all_reduce_min, all_reduce_sum

IGNORE_INDEX = -100


@torch.no_grad()
def validation_loss(
    model: nn.Module, batches, max_batches: int = 0, autocast=contextlib.nullcontext
) -> tuple[float, int]:
    """(mean next-token loss in nats over all ranks' target tokens, number of those tokens).
    Every rank evaluates the same number of its own batches (the smallest count over ranks)."""
    device = model.embed_tokens.weight.device
    taken = []
    for inputs, targets in batches:
        taken.append((inputs, targets))
        if max_batches and len(taken) >= max_batches:
            break
    n = int(all_reduce_min(torch.tensor([len(taken)], device=device)).item())
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for inputs, targets in taken[:n]:
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast():
            loss = model(inputs, targets=targets).lm
        count = (targets != IGNORE_INDEX).sum()
        totals += torch.stack([loss.double() * count, count.double()])
    all_reduce_sum(totals)
    model.train(was_training)
    loss_sum, count = totals.tolist()
    return loss_sum / max(count, 1), int(count)


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    return loss_nats / (math.log(2) * bytes_per_token)


def unigram_entropy(shard_dir: str | Path, split: str = "train", max_tokens: int = 200_000_000) -> float:
    """Entropy in nats of the token distribution of a split's shards (reading at most max_tokens)."""
    manifest = read_manifest(shard_dir)
    counts = np.zeros(manifest["vocab_size"], dtype=np.int64)
    budget = max_tokens
    for shard in manifest["splits"][split]["shards"]:
        tokens = np.memmap(Path(shard_dir) / shard["file"], dtype=manifest["dtype"], mode="r")[:budget]
        counts += np.bincount(tokens, minlength=len(counts))[: len(counts)]
        budget -= len(tokens)
        if budget <= 0:
            break
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def sample(
    model: nn.Module,
    tokenizer,
    prompts: list[tuple[str, list[int]]],
    chat: bool,
    max_new_tokens: int,
    autocast=contextlib.nullcontext,
) -> list[dict]:
    """Greedy completions of (label, ids) prompts: {"prompt", "completion"} and, for chat prompts,
    the completion split by the chat format into reasoning_content and content."""
    was_training = model.training
    model.eval()
    rows = []
    for label, ids in prompts:
        new = greedy_generate(model, ids, max_new_tokens, tokenizer.eos_id, autocast)
        text = tokenizer.decode(new)
        row = {"prompt": label, "completion": text}
        if chat:
            row["reasoning_content"], row["content"] = split_completion(text)
        rows.append(row)
    model.train(was_training)
    return rows
