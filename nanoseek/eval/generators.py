"""A Generator from what a user names on the command line: a checkpoint path or an OpenAI-compatible URL.

    loaded = load_generator("runs/sft")                                  # native Engine on the checkpoint
    loaded = load_generator("https://api.deepseek.com", remote_model="deepseek-reasoner",
                            api_key_env="DEEPSEEK_API_KEY", split_n=True)
    loaded = load_generator("runs/sft", backend="vllm")                  # vLLM on the checkpoint
    loaded.generator.generate(requests); loaded.scorer (likelihood scoring, native only); loaded.close()
    loaded.tokenizer   # the checkpoint's tokenizer (not for a URL): renders R1's forced "<think>\\n" replies

A path may be a model directory, a checkpoint directory or a run directory (its newest checkpoint).
A URL is the API's base (`.../v1`); without `remote_model` the first model the server lists at
`GET {url}/models` is used. The API key is read from the environment variable `api_key_env`, never
from the command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanoseek.engine.protocol import Generator
from nanoseek.eval.likelihood import LikelihoodScorer


@dataclass
class LoadedGenerator:
    generator: Generator
    label: str  # what the report calls the model
    scorer: LikelihoodScorer | None = None  # native checkpoints only
    model_dir: Path | None = None  # native checkpoints only
    tokenizer: Any = None  # the checkpoint's tokenizer (native and vLLM; an API renders its own prompts)

    def close(self) -> None:
        close = getattr(self.generator, "close", None)
        if close is not None:
            close()


def is_url(model: str) -> bool:
    return model.startswith(("http://", "https://"))


def first_served_model(base_url: str, api_key_env: str, timeout: float = 30.0) -> str:
    """The id of the first model an OpenAI-compatible server lists (GET /models)."""
    import httpx

    key = os.environ.get(api_key_env)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = base_url.rstrip("/") + "/models"
    try:
        response = httpx.get(url, headers=headers, timeout=timeout)
        response.raise_for_status()
        models = response.json().get("data") or []
    except (httpx.HTTPError, ValueError) as e:
        raise RuntimeError(
            f"could not list the models at {url} ({e}); name one with --remote-model"
        ) from None
    if not models:
        raise RuntimeError(f"{url} lists no models; name one with --remote-model")
    return models[0]["id"]


def load_generator(
    model: str | Path,
    remote_model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 32,
    split_n: bool = False,
    int8: bool = False,
    mc_style: str = "cloze",
    timeout: float = 600.0,
    backend: str = "native",
) -> LoadedGenerator:
    """The native Engine on a checkpoint (with a likelihood scorer), vLLM on it (backend "vllm"; no
    scorer), or a RemoteGenerator on a URL."""
    model = str(model)
    if backend not in ("native", "vllm"):
        raise ValueError(f"backend: expected native or vllm, got {backend!r}")
    if backend == "vllm" and (is_url(model) or int8):
        raise ValueError("backend vllm runs a checkpoint directory (not a URL), in its own dtype (no --int8)")
    if is_url(model):
        from nanoseek.engine.remote import RemoteGenerator

        name = remote_model or first_served_model(model, api_key_env)
        generator = RemoteGenerator(
            model, name, api_key_env=api_key_env, concurrency=concurrency, split_n=split_n, timeout=timeout
        )
        return LoadedGenerator(generator, f"{name} @ {model}")
    from nanoseek.engine.engine import Engine
    from nanoseek.model.formats.gguf import find_gguf
    from nanoseek.model.run_dirs import resolve_model_dir

    gguf = find_gguf(model)  # a GGUF file (or a directory holding one) brings its own tokenizer
    model_dir = gguf or resolve_model_dir(model)
    if gguf is None and not (model_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no tokenizer.json; an eval renders chat prompts and needs one")
    if backend == "vllm":
        from nanoseek.engine.vllm import VLLMGenerator

        generator = VLLMGenerator(model_dir)
        return LoadedGenerator(generator, f"{model} (vLLM)", None, model_dir, generator.tokenizer)
    engine = Engine.from_pretrained(
        model_dir, int8=int8, max_slots=concurrency, token_budget=max(512, 4 * concurrency)
    )
    scorer = LikelihoodScorer(engine.model, engine.tokenizer, mc_style)
    return LoadedGenerator(engine, str(model), scorer, model_dir, engine.tokenizer)
