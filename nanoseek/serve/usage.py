"""The `usage` object of a response: OpenAI's token counts, DeepSeek's cache fields, and the cost in $.

    usage_dict(prompt_tokens=12, completion_tokens=40, reasoning_tokens=31, prices=Prices())
    # {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52,
    #  "prompt_tokens_details": {"cached_tokens": 0},
    #  "completion_tokens_details": {"reasoning_tokens": 31},
    #  "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": 12,
    #  "cost": 9.42e-05, "cost_details": {...}}

`completion_tokens` counts every generated token, reasoning and the end-of-sequence token included
(that is what was computed and what DeepSeek bills); `reasoning_tokens` is the part up to and
including `</think>` (0 for a model that answers without thinking). `cost` is US dollars (the field OpenRouter uses), priced per `config.Prices`.
"""

from __future__ import annotations

from typing import Any

from nanoseek.serve.config import Prices


def reasoning_token_count(
    token_ids: list[int], think_id: int | None, end_think_id: int | None, think: bool
) -> int:
    """Generated tokens that are reasoning, as `split_completion` splits their text: up to and
    including the first `</think>`; without one, all of them if the thinking never ended (the prompt
    opened the think block, `think`, or the model opened one itself: Qwen3), else none (a model that
    answers directly, or has no think tokens at all: Llama, SmolLM2)."""
    if end_think_id is not None and end_think_id in token_ids:
        return token_ids.index(end_think_id) + 1
    if think or (think_id is not None and think_id in token_ids):
        return len(token_ids)
    return 0


def usage_dict(
    prompt_tokens: int,
    completion_tokens: int,
    reasoning_tokens: int = 0,
    cached_tokens: int = 0,
    prices: Prices | None = None,
) -> dict[str, Any]:
    prices = prices or Prices()
    prompt_cost = ((prompt_tokens - cached_tokens) * prices.input + cached_tokens * prices.cached_input) / 1e6
    completion_cost = completion_tokens * prices.output / 1e6
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "prompt_cache_hit_tokens": cached_tokens,  # DeepSeek's spelling
        "prompt_cache_miss_tokens": prompt_tokens - cached_tokens,
        "cost": prompt_cost + completion_cost,
        "cost_details": {
            "currency": "USD",
            "prompt_cost": prompt_cost,
            "completion_cost": completion_cost,
            "price_per_million_input_tokens": prices.input,
            "price_per_million_cached_input_tokens": prices.cached_input,
            "price_per_million_output_tokens": prices.output,
        },
    }
