"""The decode cache's memory: a cache sized for a long context costs memory only for the positions
written (`kv_cache.lazy_zeros`), reads as zeros elsewhere, and is freed with the tensors."""

import gc
import sys

import pytest
import torch
from helpers import random_model, tiny_config

from nanoseek.model.kv_cache import SlotCache, lazy_zeros
from nanoseek.rl import completion_logprobs

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads resident memory from /proc/self/statm")


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_a_long_context_cache_costs_only_the_positions_written():
    before = resident_mib()
    cache = SlotCache(layers=2, num_slots=8, max_len=2**17, width=256)  # 2 GiB if every page were kept
    assert sum(t.untyped_storage().nbytes() for t in cache.kv) == 2 * 2**30
    for t in cache.kv:
        t[3, :100] = 1.5  # one sequence's first 100 positions
    cache.copy_slot(src=3, dst=5, length=100)
    assert resident_mib() - before < 64
    assert torch.equal(cache.kv[1][5, :100], torch.full((100, 256), 1.5))
    assert not cache.kv[0][5, 100:200].any() and not cache.kv[1][0, -10:].any()
    del cache
    gc.collect()
    assert resident_mib() - before < 64


def test_lazy_zeros_is_an_ordinary_tensor():
    t = lazy_zeros((3, 4), dtype=torch.bfloat16)
    assert t.dtype == torch.bfloat16 and t.shape == (3, 4) and not t.any()
    t += 2
    assert torch.equal(t.clone(), torch.full((3, 4), 2.0, dtype=torch.bfloat16))
    assert lazy_zeros((0, 5)).shape == (0, 5)


def test_gradients_flow_through_values_written_into_the_cache():
    """GRPO's update forks its prompts' cache rows into the completions' cache with values that carry
    gradients, then writes the completions' rows: the cache must take both in place."""
    model = random_model(tiny_config())
    logp, _, mask = completion_logprobs(model, [[1, 2, 3], [1, 2, 3], [4, 5]], [[6, 7], [8], [9, 10, 11]], 0)
    (logp * mask).sum().backward()
    assert all(p.grad is not None for p in model.layers[0].self_attn.parameters())
