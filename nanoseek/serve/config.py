"""Server settings: limits, prices, auth and sampling defaults, in one dataclass the app is built from.

    config = ServerConfig(model_name="tiny", api_keys=["sk-1"], max_queue=64)
    config = ServerConfig.for_model("runs/sft/model")   # name and sampling defaults from the directory

`nanoseek serve` fills it from flags (see `cli.py`); tests build it directly. Prices are US dollars
per million tokens and default to DeepSeek-R1's launch prices (input $0.55 on a cache miss, $0.14 on
a cache hit, output $2.19); every response's `usage.cost` and the `/metrics` counters use them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

R1_PRICE_INPUT = 0.55  # $ per million input tokens (cache miss), DeepSeek-R1 at launch
R1_PRICE_CACHED_INPUT = 0.14  # $ per million input tokens (cache hit)
R1_PRICE_OUTPUT = 2.19  # $ per million output tokens (reasoning included)


@dataclass
class Prices:
    """US dollars per million tokens."""

    input: float = R1_PRICE_INPUT
    cached_input: float = R1_PRICE_CACHED_INPUT
    output: float = R1_PRICE_OUTPUT

    def cost(self, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> float:
        """Dollars for one request (cached prompt tokens at the cache-hit price)."""
        fresh = prompt_tokens - cached_tokens
        return (
            fresh * self.input + cached_tokens * self.cached_input + completion_tokens * self.output
        ) / 1e6


@dataclass
class ServerConfig:
    model_name: str = "nanoseek"
    api_keys: list[str] = field(default_factory=list)  # empty: no auth
    cors_origins: list[str] = field(default_factory=list)  # empty: no CORS headers at all
    max_queue: int = 256  # requests waiting for a slot before new ones get 429
    max_body_bytes: int = 4 * 1024 * 1024
    request_timeout: float = 600.0  # seconds from arrival to the last token
    max_reasoning_tokens: int | None = None  # thinking budget when only max_tokens (answer) is given
    prices: Prices = field(default_factory=Prices)
    # sampling defaults for requests that leave them out (generation_config.json when present)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0

    @classmethod
    def for_model(cls, path: str | Path, **overrides) -> ServerConfig:
        """Name the model after its directory and take sampling defaults from generation_config.json."""
        path = Path(path)
        settings: dict = {"model_name": path.resolve().name or "nanoseek"}
        gen_file = path / "generation_config.json"
        if gen_file.is_file():
            gen = json.loads(gen_file.read_text())
            if gen.get("do_sample", True) is False:
                settings["temperature"] = 0.0
            for key, cast in (("temperature", float), ("top_p", float), ("top_k", int)):
                value = gen.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    settings[key] = cast(value)
        settings.update(overrides)
        return cls(**settings)
