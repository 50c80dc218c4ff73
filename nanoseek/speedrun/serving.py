"""What serving the speedrun's model costs on this machine, measured with the native engine.

    m = measure_serving("runs/speedrun/grpo/checkpoints/step_000030/model", prompts, max_new_tokens=128,
                        concurrency=64, temperature=0.6, price_per_device_hour=0.05)
    m["input_usd_per_million"], m["output_usd_per_million"]

Input and output tokens cost different amounts (a prompt token is one row of a batched forward, an
output token one decode step), so they are measured apart, as DeepSeek prices them apart:
1. prefill: every prompt as a chat request with max_new_tokens = 1: the seconds per prompt token;
2. generation: the same prompts sampled to the end: its seconds minus the prefill's, per output token.
Each is timed after a warm-up batch; $ per million = seconds per token x 1e6 x price per device-hour / 3600.
"""

from __future__ import annotations

import time
from typing import Any

from nanoseek.engine import Engine, GenerationRequest, SamplingParams


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


def measure_serving(
    model_dir: str,
    prompts: list[str],
    max_new_tokens: int,
    concurrency: int,
    temperature: float,
    price_per_device_hour: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Measured prefill and decode rates of the engine on `prompts`, and $ per million tokens of each."""
    engine = Engine.from_pretrained(model_dir, max_slots=concurrency, token_budget=max(512, 4 * concurrency))
    try:
        engine.generate(_requests(prompts[:concurrency], 4, temperature, seed))  # warm-up
        t0 = time.perf_counter()
        prefill = engine.generate(_requests(prompts, 1, temperature, seed))
        t_prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        full = engine.generate(_requests(prompts, max_new_tokens, temperature, seed))
        t_full = time.perf_counter() - t0
    finally:
        engine.close()
    input_tokens = sum(c.prompt_tokens for c in prefill)
    output_tokens = sum(c.completion_tokens for c in full)
    decode_seconds = max(t_full - t_prefill, 1e-9)
    per_second = price_per_device_hour / 3600
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
        "input_usd_per_million": per_second * t_prefill / max(input_tokens, 1) * 1e6,
        "output_usd_per_million": per_second * decode_seconds / max(output_tokens, 1) * 1e6,
    }
