"""Server settings: limits, prices, auth and sampling defaults, in one dataclass the app is built from.

    config = ServerConfig(model_name="tiny", api_keys=["sk-1"], max_queue=64)
    config = ServerConfig.for_model("runs/sft/model")   # name and sampling defaults from the directory

`nanoseek serve` fills it from flags (see `cli.py`); tests build it directly. The limits and why
they are there are in docs/serving.md ("Errors and limits", "Slow clients"). Prices are US dollars
per million tokens and default to DeepSeek-R1's launch prices (input $0.55 on a cache miss, $0.14 on
a cache hit, output $2.19); every response's `usage.cost` and the `/metrics` counters use them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nanoseek.errors import CheckpointError

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


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")  # Host header names always accepted


@dataclass
class ServerConfig:
    model_name: str = "nanoseek"
    api_keys: list[str] = field(default_factory=list)  # empty: no auth
    cors_origins: list[str] = field(default_factory=list)  # empty: no CORS headers at all
    # Host header names served (DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends
    # "Host: evil.example"); LOCAL_HOSTS always; "*" turns the check off
    allowed_hosts: list[str] = field(default_factory=list)
    max_queue: int = 256  # samples (prompts x n) waiting for a slot; a request that would exceed it gets 429
    max_prompts: int = 128  # prompts in one /v1/completions request (400 beyond)
    max_body_bytes: int = 4 * 1024 * 1024
    request_timeout: float = 600.0  # seconds from arrival to the last token
    # slow clients (enforced by the server `nanoseek serve` runs, `connections.py`)
    header_timeout: float = 10.0  # seconds for a request's headers to arrive (then the connection is closed)
    body_timeout: float = 60.0  # seconds for its body to arrive after the headers (408, then closed)
    max_connections: int = 512  # open connections; more are answered 503 and closed
    max_reasoning_tokens: int | None = None  # thinking budget when only max_tokens (answer) is given
    prices: Prices = field(default_factory=Prices)
    # sampling defaults for requests that leave them out (generation_config.json when present)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0

    @classmethod
    def for_model(cls, path: str | Path, **overrides) -> ServerConfig:
        """Name the model after its directory and take sampling defaults from generation_config.json
        (CheckpointError, naming the file, if it is not a JSON object)."""
        path = Path(path)
        settings: dict = {"model_name": path.resolve().name or "nanoseek"}
        gen_file = path / "generation_config.json"
        if gen_file.is_file():
            gen = read_generation_config(gen_file)
            if gen.get("do_sample", True) is False:
                settings["temperature"] = 0.0
            for key, cast in (("temperature", float), ("top_p", float), ("top_k", int)):
                value = gen.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    settings[key] = cast(value)
        settings.update(overrides)
        return cls(**settings)


def read_generation_config(path: Path) -> dict:
    """A generation_config.json as a dict; CheckpointError naming the file if it is not a JSON object."""
    try:
        gen = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, f"not a JSON file ({exc})") from None
    if not isinstance(gen, dict):
        raise CheckpointError(path, f"expected a JSON object, got {type(gen).__name__}")
    return gen
