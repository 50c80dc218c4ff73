"""What serving the speedrun's model costs on this machine, measured with the native engine.

    m = measure_serving("runs/speedrun/grpo/checkpoints/step_000030/model", prompts, max_new_tokens=128,
                        concurrency=64, temperature=0.6, price_per_device_hour=0.05)
    m["input_usd_per_million"], m["cached_input_usd_per_million"], m["output_usd_per_million"]

Input and output tokens cost different amounts (a prompt token is one row of a batched forward, an
output token one decode step), and a prompt token whose cache rows are already in the prefix cache
costs a copy instead of a forward, so they are measured apart, as DeepSeek prices them apart
($0.14 cache hit / $0.55 cache miss / $2.19 output per million for R1):
1. prefill (cache miss): every prompt as a chat request with max_new_tokens = 1, the prefix cache
   off: the seconds per prompt token;
2. generation: the same prompts sampled to the end (cache off): its seconds minus the prefill's, per
   output token;
3. prefill (cache hit): an engine with the prefix cache sees every prompt once, then again; the
   second pass's seconds, less its uncached tokens at the miss rate, per cached token (the engine
   reuses whole blocks and always recomputes the last prompt token, so a repeat is part hit, part miss);
4. with an MTP module, the share of its drafts the model accepts on these prompts at temperature 0.
Each is timed after a warm-up batch; $ per million = seconds per token x 1e6 x price per device-hour / 3600.
"""

from __future__ import annotations

import time
from typing import Any

from nanoseek.engine import Engine, GenerationRequest, SamplingParams
from nanoseek.engine.speculative import has_mtp


def _requests(
    prompts: list[str], max_new_tokens: int, temperature: float, seed: int
) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            messages=[{"role": "user", "content": p}],
            params=SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed + i),
        )
        for i, p in enumerate(prompts)
    ]


def _timed(engine: Engine, requests: list[GenerationRequest]) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = engine.generate(requests)
    return time.perf_counter() - t0, out


def measure_serving(
    model_dir: str,
    prompts: list[str],
    max_new_tokens: int,
    concurrency: int,
    temperature: float,
    price_per_device_hour: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Measured prefill (cache miss and hit) and decode rates of the engine on `prompts`, $ per
    million tokens of each, and the MTP drafts' greedy acceptance where the model has a module."""
    budget = max(512, 4 * concurrency)
    mtp = has_mtp(model_dir)
    engine = Engine.from_pretrained(
        model_dir, max_slots=concurrency, token_budget=budget, prefix_cache_mb=0, speculative=mtp
    )
    engine.speculative = False  # the cost figures are plain decoding's, at this concurrency
    try:
        engine.generate(_requests(prompts[:concurrency], 4, temperature, seed))  # warm-up
        t_prefill, prefill = _timed(engine, _requests(prompts, 1, temperature, seed))
        t_full, full = _timed(engine, _requests(prompts, max_new_tokens, temperature, seed))
        acceptance = None
        if mtp:
            engine.speculative = True
            engine.generate(_requests(prompts, max_new_tokens, 0.0, seed))
            acceptance = engine.stats.acceptance
    finally:
        engine.close()
    input_tokens = sum(c.prompt_tokens for c in prefill)
    output_tokens = sum(c.completion_tokens for c in full)
    decode_seconds = max(t_full - t_prefill, 1e-9)
    per_second = price_per_device_hour / 3600
    miss_seconds = t_prefill / max(input_tokens, 1)
    hits = measure_cache_hits(model_dir, prompts, concurrency, budget, temperature, seed, miss_seconds)
    return {
        "model_dir": model_dir,
        "requests": len(prompts),
        "concurrency": concurrency,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "prefill_seconds": t_prefill,
        "generate_seconds": t_full,
        "input_tokens_per_s": input_tokens / max(t_prefill, 1e-9),
        "output_tokens_per_s": output_tokens / decode_seconds,
        "price_per_device_hour": price_per_device_hour,
        "input_usd_per_million": per_second * miss_seconds * 1e6,
        "output_usd_per_million": per_second * decode_seconds / max(output_tokens, 1) * 1e6,
        **hits,
        "cached_input_usd_per_million": per_second * hits["cached_input_seconds_per_token"] * 1e6,
        "mtp_acceptance_greedy": acceptance,
    }


def measure_cache_hits(
    model_dir: str,
    prompts: list[str],
    concurrency: int,
    budget: int,
    temperature: float,
    seed: int,
    miss_seconds: float,
) -> dict[str, Any]:
    """The prompts twice through an engine with the prefix cache: the second pass's cached tokens and
    what each cost (its seconds less its uncached tokens at `miss_seconds` each)."""
    engine = Engine.from_pretrained(model_dir, max_slots=concurrency, token_budget=budget)
    try:
        engine.generate([GenerationRequest(prompt=[0] * 40, params=SamplingParams(max_new_tokens=2))])
        engine.generate(_requests(prompts, 1, temperature, seed))  # fills the cache
        t_again, again = _timed(engine, _requests(prompts, 1, temperature, seed))
    finally:
        engine.close()
    cached = sum(c.cached_tokens for c in again)
    total = sum(c.prompt_tokens for c in again)
    hit_seconds = max(t_again - (total - cached) * miss_seconds, 0.0)
    return {
        "cached_input_tokens": cached,
        "cache_hit_rate": cached / max(total, 1),
        "cached_input_seconds_per_token": hit_seconds / cached if cached else float("nan"),
    }
