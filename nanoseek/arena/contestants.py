"""Arena contestants: the models that battle, listed in a small TOML or JSON file, each a `Generator`.

    specs = load_contestants("arena.toml")          # validated; errors name the file and the field
    contestants = open_contestants(specs)           # name -> Contestant (checkpoints load here)
    for delta in contestants["nanoseek-sft"].stream([{"role": "user", "content": "2+2?"}]): ...
    close_contestants(contestants)

The file (TOML; JSON is the same data, `{"contestants": [{...}, ...]}`):

    [[contestants]]
    name = "nanoseek-sft"              # shown on the leaderboard, hidden during a battle
    kind = "checkpoint"                # a model directory: config.json, model.safetensors, tokenizer.json
    path = "runs/sft/model"            # relative paths are relative to this file
    int8 = false                       # optional: int8 weights
    backend = "native"                 # optional: "vllm" generates with vLLM in this process (nanoseek[vllm])
    think = true                       # optional: open a think block (R1's way); false answers directly
    params = { temperature = 0.6, top_p = 0.95, max_new_tokens = 512 }    # optional SamplingParams

    [[contestants]]
    name = "deepseek-r1"
    kind = "openai"                    # any OpenAI-compatible API: DeepSeek, vLLM, `nanoseek serve`
    base_url = "https://api.deepseek.com"
    model = "deepseek-reasoner"
    api_key_env = "DEEPSEEK_API_KEY"   # optional: the environment variable that holds the key
    timeout = 600                      # optional: seconds per HTTP call
    role = "judge"                     # optional: "contestant" (default) or "judge" (never battles)

Sampling defaults are R1's recommended ones (temperature 0.6, top-p 0.95) with 512 new tokens.
A checkpoint contestant runs on the native `Engine` (or, with `backend = "vllm"`, on vLLM's offline
engine in this process, `nanoseek.engine.vllm.VLLMGenerator`, one call at a time: the offline engine
is not thread-safe and battles run on threads), an "openai" one on `RemoteGenerator`; any other object
that speaks the `Generator` protocol can be wrapped in a `Contestant` directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import threading
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanoseek.engine.protocol import Completion, Delta, GenerationRequest, Generator, SamplingParams

KINDS = ("checkpoint", "openai")
BACKENDS = ("native", "vllm")  # what generates from a checkpoint
ROLES = ("contestant", "judge")
DEFAULT_PARAMS = {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 512}
_COMMON = {"name": str, "kind": str, "role": str, "params": dict, "think": bool}
_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "checkpoint": {**_COMMON, "path": str, "int8": bool, "backend": str},
    "openai": {**_COMMON, "base_url": str, "model": str, "api_key_env": str, "timeout": (int, float)},
}
_REQUIRED = {"checkpoint": ("path",), "openai": ("base_url", "model")}
# SamplingParams field -> accepted types, from its annotations ("int", "float", "int | None", ...)
_ANNOTATIONS = {"int": int, "float": (int, float), "bool": bool, "int | None": (int, type(None))}
_PARAM_TYPES = {
    f.name: _ANNOTATIONS.get(str(f.type), list if str(f.type).startswith("list") else object)
    for f in dataclasses.fields(SamplingParams)
}
_PARAM_TYPES["stop"] = (str, list)  # one stop string or a list of them
_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    list: "a list",
    dict: "a table",
}


class ContestantError(ValueError):
    """A contestants file, or one of its entries, that cannot be used; the message names the field."""


@dataclass
class ContestantSpec:
    """One entry of a contestants file, validated. `where` locates it ("arena.toml: contestants[1]")."""

    name: str
    kind: str
    params: SamplingParams = field(default_factory=lambda: SamplingParams(**DEFAULT_PARAMS))
    role: str = "contestant"
    path: Path | None = None  # checkpoint
    int8: bool = False  # checkpoint
    backend: str = "native"  # checkpoint: "native" (the Engine) or "vllm" (VLLMGenerator)
    think: bool = True  # False: answer without thinking (vLLM: chat_template_kwargs.enable_thinking)
    base_url: str | None = None  # openai
    model: str | None = None  # openai
    api_key_env: str | None = None  # openai
    timeout: float = 600.0  # openai
    where: str = ""


class Contestant:
    """A named `Generator` with its sampling parameters: what one side of a battle runs."""

    def __init__(
        self, name: str, generator: Generator, params: SamplingParams | None = None, think: bool = True
    ) -> None:
        if params is not None and params.n != 1:
            raise ValueError(f"contestant {name!r}: a contestant answers once per battle; n must be 1")
        self.name, self.generator, self.think = name, generator, think
        self.params = params or SamplingParams(**DEFAULT_PARAMS)

    def request(self, messages: Sequence[Mapping[str, str]]) -> GenerationRequest:
        return GenerationRequest(messages=[dict(m) for m in messages], params=self.params, think=self.think)

    def stream(self, messages: Sequence[Mapping[str, str]]) -> Iterator[Delta]:
        """The answer to one conversation as it is generated (closing the iterator stops it)."""
        return self.generator.stream([self.request(messages)])

    def generate(self, conversations: Sequence[Sequence[Mapping[str, str]]]) -> list[Completion]:
        """One completion per conversation, in order (the generator batches them)."""
        return self.generator.generate([self.request(c) for c in conversations])

    def start(self) -> None:
        """Start the generator's background loop if it has one (the native engine, for servers)."""
        start = getattr(self.generator, "start", None)
        if callable(start):
            start()

    def close(self) -> None:
        for method in ("stop", "close"):  # Engine.stop ends its loop; RemoteGenerator.close its client
            fn = getattr(self.generator, method, None)
            if callable(fn):
                fn()

    def __repr__(self) -> str:
        return f"Contestant({self.name!r}, {type(self.generator).__name__})"


# ----------------------------------------------------------------------------- reading the file


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ContestantError(f"{path}: cannot read the contestants file ({err.strerror or err})") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ContestantError(f"{path}: line {err.lineno}: invalid JSON: {err.msg}") from None
    if path.suffix.lower() != ".toml":
        raise ContestantError(f"{path}: a contestants file is .toml or .json")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ContestantError(f"{path}: invalid TOML: {err}") from None


def _type_name(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return "a number" if float in types else " or ".join(_TYPE_NAMES[t] for t in types if t in _TYPE_NAMES)


def _params(value: Mapping[str, Any], where: str) -> SamplingParams:
    for key, item in value.items():
        if key not in _PARAM_TYPES:
            raise ContestantError(
                f"{where}.params.{key}: unknown sampling parameter; known: {', '.join(_PARAM_TYPES)}"
            )
        if key == "n" and item != 1:
            raise ContestantError(f"{where}.params.n: a contestant answers once per battle; n must be 1")
        expected = _PARAM_TYPES[key]
        if not isinstance(item, expected) or (isinstance(item, bool) and expected is not bool):
            raise ContestantError(f"{where}.params.{key}: expected {_type_name(expected)}, got {item!r}")
    try:
        return SamplingParams(**{**DEFAULT_PARAMS, **value})
    except (TypeError, ValueError) as err:
        raise ContestantError(f"{where}.params: {err}") from None


def _spec(entry: Any, where: str, base_dir: Path) -> ContestantSpec:
    if not isinstance(entry, Mapping):
        raise ContestantError(f"{where}: expected a table (name, kind, ...), got {type(entry).__name__}")
    name, kind = entry.get("name"), entry.get("kind")
    if not isinstance(name, str) or not name.strip():
        raise ContestantError(f"{where}.name: expected a non-empty model name, got {name!r}")
    if kind not in KINDS:
        raise ContestantError(f"{where}.kind: expected one of {list(KINDS)}, got {kind!r}")
    fields = _FIELDS[kind]
    for key, value in entry.items():
        if key not in fields:
            raise ContestantError(
                f"{where}.{key}: unknown field for kind {kind!r}; known: {', '.join(fields)}"
            )
        expected = fields[key]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ContestantError(f"{where}.{key}: expected {_type_name(expected)}, got {value!r}")
    for key in _REQUIRED[kind]:
        if not str(entry.get(key) or "").strip():
            raise ContestantError(f"{where}.{key}: required for kind {kind!r}")
    role = entry.get("role", "contestant")
    if role not in ROLES:
        raise ContestantError(f"{where}.role: expected one of {list(ROLES)}, got {role!r}")
    spec = ContestantSpec(
        name=name.strip(), kind=kind, role=role, think=entry.get("think", True), where=where
    )
    spec.params = _params(entry.get("params", {}), where)
    if kind == "checkpoint":
        spec.path = (base_dir / Path(entry["path"]).expanduser()).resolve()
        spec.int8 = entry.get("int8", False)
        spec.backend = entry.get("backend", "native")
        if spec.backend not in BACKENDS:
            raise ContestantError(f"{where}.backend: expected one of {list(BACKENDS)}, got {spec.backend!r}")
        if spec.backend == "vllm" and spec.int8:
            raise ContestantError(
                f"{where}.int8: backend 'vllm' runs the checkpoint in its own dtype, not int8"
            )
    else:
        if not entry["base_url"].startswith(("http://", "https://")):
            raise ContestantError(f"{where}.base_url: expected an http(s):// URL, got {entry['base_url']!r}")
        timeout = entry.get("timeout", 600.0)
        if timeout <= 0:
            raise ContestantError(f"{where}.timeout: expected a number of seconds > 0, got {timeout!r}")
        spec.base_url, spec.model, spec.timeout = entry["base_url"], entry["model"], float(timeout)
        spec.api_key_env = entry.get("api_key_env")
    return spec


def load_contestants(path: str | Path) -> list[ContestantSpec]:
    """Read and validate a contestants file (.toml or .json). Loads no model."""
    path = Path(path)
    data = _read(path)
    entries = data.get("contestants") if isinstance(data, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise ContestantError(f"{path}: contestants: expected a non-empty list of [[contestants]] tables")
    if isinstance(data, Mapping) and set(data) - {"contestants"}:
        extra = sorted(set(data) - {"contestants"})
        raise ContestantError(
            f"{path}: {extra[0]}: unknown top-level field; the file holds [[contestants]] only"
        )
    specs = [_spec(entry, f"{path}: contestants[{i}]", path.parent) for i, entry in enumerate(entries)]
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.name in seen:
            raise ContestantError(
                f"{spec.where}.name: {spec.name!r} is already the name of {seen[spec.name]}"
            )
        seen[spec.name] = spec.where.rpartition(": ")[2]
    return specs


# ----------------------------------------------------------------------------- loading the generators


def open_contestant(spec: ContestantSpec) -> Contestant:
    """Build the generator of one entry: the native engine on a checkpoint or a remote API client."""
    if spec.kind == "checkpoint":
        assert spec.path is not None
        from nanoseek.model.formats.gguf import find_gguf

        for needed in ("config.json", "tokenizer.json") if find_gguf(spec.path) is None else ():
            if not (spec.path / needed).is_file():
                raise ContestantError(
                    f"{spec.where}.path: {spec.path} is not a model directory with a tokenizer (no {needed})"
                )
        if spec.backend == "vllm" and not (spec.path / "config.json").is_file():
            raise ContestantError(
                f"{spec.where}.backend: vLLM runs a model directory (config.json), not a GGUF"
            )
        try:
            generator = _checkpoint_generator(spec)
        except ContestantError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise ContestantError(f"{spec.where}.path: cannot load {spec.path}: {err}") from err
        return Contestant(spec.name, generator, spec.params, spec.think)
    from nanoseek.engine.remote import RemoteGenerator

    api_key = ""  # no Authorization header unless api_key_env names a set variable
    if spec.api_key_env:
        if not os.environ.get(spec.api_key_env):
            raise ContestantError(
                f"{spec.where}.api_key_env: environment variable {spec.api_key_env} is not set"
            )
        api_key = os.environ[spec.api_key_env]
    assert spec.base_url is not None and spec.model is not None
    generator = RemoteGenerator(spec.base_url, spec.model, api_key=api_key, timeout=spec.timeout)
    return Contestant(spec.name, generator, spec.params, spec.think)


def _checkpoint_generator(spec: ContestantSpec) -> Generator:
    """The native Engine on the checkpoint, or vLLM on it (backend "vllm"), one call at a time."""
    assert spec.path is not None
    if spec.backend == "vllm":
        from nanoseek.engine.vllm import VLLMGenerator, VLLMUnavailable

        try:
            return OneAtATime(VLLMGenerator(spec.path))
        except VLLMUnavailable as err:  # the message says how to install it
            raise ContestantError(f"{spec.where}.backend: {err}") from None
    from nanoseek.engine.engine import Engine

    return Engine.from_pretrained(spec.path, int8=spec.int8)


class OneAtATime:
    """A Generator whose calls run one at a time (battles generate on threads; vLLM's offline engine must
    not be entered twice at once). `stream` generates under the lock and yields afterwards, so a slow
    reader never holds it; the offline engine does not stream anyway."""

    def __init__(self, generator: Generator) -> None:
        self.generator, self._lock = generator, threading.Lock()

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        with self._lock:
            return self.generator.generate(requests)

    def stream(self, requests: list[GenerationRequest]) -> Iterator[Delta]:
        with self._lock:
            deltas = list(self.generator.stream(requests))
        yield from deltas

    def sync_weights(self, model) -> None:
        with self._lock:
            self.generator.sync_weights(model)

    def close(self) -> None:
        close = getattr(self.generator, "close", None)
        if callable(close):
            close()


def open_contestants(specs: Sequence[ContestantSpec]) -> dict[str, Contestant]:
    """name -> Contestant for every spec (on an error, the ones already opened are closed)."""
    opened: dict[str, Contestant] = {}
    try:
        for spec in specs:
            opened[spec.name] = open_contestant(spec)
    except BaseException:
        close_contestants(opened)
        raise
    return opened


def close_contestants(contestants: Mapping[str, Contestant]) -> None:
    for contestant in contestants.values():
        contestant.close()


def pick_pair(names: Sequence[str], rng: random.Random) -> tuple[str, str]:
    """Two different contestants, uniformly at random, in random order (side A first)."""
    if len(set(names)) < 2:
        raise ValueError(f"a battle needs at least two contestants, got {list(names)}")
    a, b = rng.sample(sorted(set(names)), 2)
    return a, b
