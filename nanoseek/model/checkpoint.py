"""Hugging Face model directories, for every registered family: save, and load strictly.

    save_model(model, "out/")             # config.json, model.safetensors, generation_config.json
    model = from_pretrained("out/")       # also directories written by transformers or DeepSeek
    # == nanoseek.model.from_pretrained; DeepSeekV3.from_pretrained("out/") insists on that class

The directory is what `transformers.AutoModelForCausalLM.from_pretrained` and vLLM read: config.json
(`model_type` and the family's HF field names) and `*.safetensors` under HF key names (one file, or
shards with model.safetensors.index.json; `save_model(..., max_shard_size="5GB")`). bf16/fp16 files
load as float32 on CPU (or `dtype=`), bfloat16 on a GPU; DeepSeek's FP8 files are dequantized while
read; a GGUF file (or a directory holding one) loads too (formats/gguf.py). Loading goes config.json
-> model_type -> the registered family (registry.py) -> its config_cls.from_hf_dict -> model_cls(config)
built on the meta device -> names and shapes checked against the files' headers -> the parameters
allocated once and filled one layer at a time by family.from_hf(config, that layer's tensors), so
memory holds the model and one layer of the files, never two models (tests/test_model_formats.py
measures the peak at under 1.3x the model). The family's load hints receive meta tensors (names,
shapes, dtypes; no data). Training state (optimizer, RNG, data position) never goes in here; it lives beside
the model directory in the run directory.

Loading is strict, and fails in one CheckpointError line (errors.py) naming the file, the config field
that probably disagrees and what was expected. In order: config.json parses, names a registered
model_type, and every field has its type and range (the family's config class); the model the config
describes fits in the memory it is to be built in (`check_memory`, from the family's closed-form
parameter counts, before anything is allocated); each weights file is safetensors; the weights hold
the config's layers (the family's `check_layers`: a wrong num_hidden_layers is the commonest mistake
and is named on its own); then every tensor is used, every parameter filled and every shape the one
config.json implies, the family's tables (`LoadHints.shapes`, `.presence`) naming the fields that set
each dimension or decide whether a tensor exists. The checks cost ~1.5 ms on a 10-layer model (~0.1 s
of key matching on DeepSeek-V3's 47k tensor names) and leave the loaded bits unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from nanoseek.model.accounting import human
from nanoseek.model.config import show_value
from nanoseek.model.errors import CheckpointError, some
from nanoseek.model.formats import Fp8Source, SafetensorsSource, open_weights, save_sharded
from nanoseek.model.formats.fp8 import FP8_DTYPES
from nanoseek.model.formats.gguf import find_gguf
from nanoseek.model.registry import Family, family_of, get_family


def save_model(model: nn.Module, path: str | Path, max_shard_size: int | str = "5GB") -> None:
    """`model` as a Hugging Face model directory (its family's HF names and config.json fields);
    weights over `max_shard_size` bytes ("5GB", "500MB" or an int) in shards with an index, as
    transformers' save_pretrained writes them."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    config = cfg.to_hf_dict()
    config["torch_dtype"] = str(model.embed_tokens.weight.dtype).removeprefix("torch.")
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.95,
    }  # DeepSeek-R1's recommended sampling
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    save_sharded(family_of(model).to_hf(model), path, max_shard_size)


def read_config(path: str | Path):
    """The config (of its family's class) of a model directory; CheckpointError names config.json and
    the field at fault."""
    return _family_and_config(Path(path))[1]


def _family_and_config(path: Path) -> tuple[Family, object]:
    config_file = path / "config.json"
    return _config_of(_read_config_json(path), config_file)


def _read_config_json(path: Path) -> dict:
    config_file = path / "config.json"
    if not path.is_dir():
        raise CheckpointError(path, "no such model directory")
    if not config_file.is_file():
        raise CheckpointError(config_file, f"no config.json; is {path} a model directory?")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(config_file, "not UTF-8 text; expected a JSON object") from None
    except json.JSONDecodeError as e:
        problem = f"not JSON ({e.msg} at line {e.lineno}, column {e.colno}); expected a JSON object"
        raise CheckpointError(config_file, problem) from None
    if not isinstance(config, dict):
        raise CheckpointError(
            config_file, f"expected a JSON object of config fields, got {show_value(config)}"
        )
    return config


def _config_of(config: dict, where: Path) -> tuple[Family, object]:
    """(family, its config object) of config.json's fields; CheckpointError names the field at fault."""
    family = get_family(config.get("model_type"), where)
    try:
        return family, family.config_cls.from_hf_dict(config)
    except ValueError as e:
        field = re.match(r"[\w.]+(?=: )", str(e))  # the messages open with the field they are about
        raise CheckpointError(where, str(e), field and field.group()) from None


def weight_files(path: str | Path) -> list[Path]:
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise CheckpointError(path, "no *.safetensors weights in the model directory")
    return files


def read_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    """Every tensor in `files` (HF names), all in memory; CheckpointError names a file that is not
    safetensors or a tensor found in two files. (Loading a model reads tensor by tensor instead.)"""
    source = SafetensorsSource.from_files(files)
    return source.load(source.meta())


def from_pretrained(
    path: str | Path, device=None, dtype=None, model_cls: type | None = None, gguf_file: str | None = None
) -> nn.Module:
    """A model directory (or a GGUF file, or a directory holding one) as its family's model, strictly:
    every tensor in the files is used, every parameter filled, every shape as config.json implies;
    anything else raises CheckpointError (see errors.py). `model_cls`: refuse a directory of another
    family's class. `dtype`: the parameters' dtype (default float32, or bfloat16 on a GPU for bf16,
    fp16 and FP8 checkpoints). The model is built on the meta device and filled one layer at a time
    from the memory-mapped files, so loading holds the model and one layer's tensors, not two models."""
    path = Path(path)
    gguf = find_gguf(path, gguf_file)
    if gguf is not None:
        from nanoseek.model.formats.gguf import GGUFSource

        source = GGUFSource(gguf)
        where = config_where = gguf
        family, cfg = _config_of(source.config, gguf)
    else:
        raw = _read_config_json(path)
        config_where = path / "config.json"
        family, cfg = _config_of(raw, config_where)
        source = None
    if model_cls is not None and not issubclass(family.model_cls, model_cls):
        problem = (
            f"model_type: {family.model_type!r} is a {family.model_cls.__name__}, not a {model_cls.__name__}; "
            "load it with nanoseek.model.from_pretrained"
        )
        raise CheckpointError(config_where, problem, "model_type")
    check_memory(cfg, config_where, device)
    if source is None:
        source = open_weights(path, raw)
        where = source.where
    return load_from_source(family, cfg, source, where, device, dtype)


def load_from_source(family: Family, cfg, source, where: Path, device=None, dtype=None) -> nn.Module:
    """`family.model_cls(cfg)` filled from a tensor source (formats/): names and shapes checked on the
    meta device first (CheckpointError at `where`), then the parameters allocated once and filled one
    layer of the files at a time, each tensor converted to `dtype` as it is copied in."""
    meta = source.meta()
    cfg = family.hints.fit_config(cfg, meta, where)
    if isinstance(source, Fp8Source) and "quantization_config" in getattr(cfg, "extra", {}):
        # the weights are dequantized: a config.json saved from this model must not claim FP8
        cfg = dataclasses.replace(
            cfg, extra={k: v for k, v in cfg.extra.items() if k != "quantization_config"}
        )
    device = torch.device(device or "cpu")
    dtype = dtype or default_dtype(source, device)
    with torch.device(device), _parameters_on_meta():
        model = family.model_cls(cfg)
    checked_state(model, meta, where)  # names, shapes: no tensor read yet
    _fill(model, family, cfg, source, device, dtype, where)
    return model.to(dtype)


def default_dtype(source, device: torch.device) -> torch.dtype:
    """float32, except on a GPU for half-precision or FP8 files (bfloat16, as they were trained)."""
    if device.type != "cuda":
        return torch.float32
    stored = getattr(source, "inner", source).meta().values()
    sizes: dict[torch.dtype, int] = {}
    for t in stored:
        if t.is_floating_point():
            sizes[t.dtype] = sizes.get(t.dtype, 0) + t.numel() * t.element_size()
    most = max(sizes, key=sizes.get, default=torch.float32)
    return torch.bfloat16 if most in (torch.bfloat16, torch.float16, *FP8_DTYPES) else torch.float32


@contextmanager
def _parameters_on_meta():
    """Modules built inside get their parameters on the meta device (no memory, no init cost);
    buffers (rope tables) are computed for real, on the current device."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param):
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _fill(model: nn.Module, family: Family, cfg, source, device, dtype, where) -> None:
    """Allocate the meta parameters (tied ones once) and copy the files' tensors in, one layer at a
    time; `checked_state` has already matched the names and shapes."""
    made: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None or not p.is_meta:
                continue
            if id(p) not in made:
                kind = dtype if p.is_floating_point() else p.dtype
                made[id(p)] = nn.Parameter(torch.empty(p.shape, dtype=kind, device=device), p.requires_grad)
            module._parameters[name] = made[id(p)]
    targets = model.state_dict()
    filled: set[str] = set()
    with torch.no_grad():
        for group in _layer_groups(list(source.meta())):
            for name, t in family.from_hf(cfg, source.load(group)).items():
                targets[name].copy_(t)
                filled.add(name)
    if filled != set(targets):  # the key map named a tensor per layer differently than for the whole
        raise CheckpointError(where, f"{some(sorted(set(targets) - filled))} not filled while loading")


def _layer_groups(names: list[str]) -> list[list[str]]:
    """HF names grouped by decoder layer (model.layers.N.*), then everything else in one group."""
    groups: dict[int, list[str]] = {}
    for n in names:
        m = re.match(r"(?:model\.)?layers\.(\d+)\.", n)
        groups.setdefault(int(m.group(1)) if m else -1, []).append(n)
    return [groups[k] for k in sorted(groups)]


def checked_state(model: nn.Module, hf: dict[str, torch.Tensor], where: str | Path) -> dict:
    """The weights `hf` (HF names) under `model`'s parameter names, for `model.load_state_dict`, after
    checking that they are exactly the model's: the layers, then the names, then the shapes. `where`
    (the weights file or directory) heads the CheckpointError."""
    cfg, family = model.config, family_of(model)
    hints = family.hints
    hints.check_layers(cfg, hf, where)
    try:
        state = family.from_hf(cfg, hf)
    except ValueError as e:  # tensors the key map cannot arrange (experts with a gap in their numbering)
        raise CheckpointError(where, str(e)) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        field = _field_for_names(hints, missing + unexpected)
        parts = [f"missing {some([hints.hf_name(cfg, n) for n in missing])}"] if missing else []
        parts += [f"unexpected {some([hints.hf_name(cfg, n) for n in unexpected])}"] if unexpected else []
        blame = f"; check {field} (config.json: {_values(cfg, field)})" if field else ""
        raise CheckpointError(
            where, f"the weights do not match config.json: {'; '.join(parts)}{blame}", field
        )
    wrong = [n for n in sorted(state) if state[n].shape != expected[n].shape]
    if wrong:
        suspects = [_shape_fields(hints, cfg, n, state[n].shape, expected[n].shape) for n in wrong]
        common = [f for f in suspects[0][1] if all(f in fields for _, fields in suspects)]
        field = " / ".join(common or suspects[0][1]) or None
        name = wrong[0]
        got, want = hints.shown_shape(name, state[name].shape), hints.shown_shape(name, expected[name].shape)
        problem = f"{hints.hf_name(cfg, name)} has shape {got} in the weights; config.json implies {want}"
        problem += f" ({suspects[0][0]})" if suspects[0][0] else ""
        if len(wrong) > 1:
            problem += f", and so do {some([hints.hf_name(cfg, n) for n in wrong[1:]], 2)}"
        blame = f"; check {field} (config.json: {_values(cfg, field)})" if field else ""
        raise CheckpointError(where, problem + blame, field)
    return state


# ------------------------------------------------------------------------------ strictness helpers
_FIELD_WORD = re.compile(r"[a-z][a-z_]+")


def _shape_fields(hints, cfg, name: str, got: torch.Size, want: torch.Size) -> tuple[str, list[str]]:
    """Which dimensions of `name` differ, said in words, and the config fields that set them."""
    got, want = hints.shown_shape(name, got), hints.shown_shape(name, want)
    dims = next((dims for pattern, dims in hints.shapes if re.search(pattern, name)), ())
    if len(got) != len(want) or len(dims) != len(want):
        return "", []
    differ = [i for i in range(len(want)) if got[i] != want[i]]
    words = ", ".join(f"dim {i} is {dims[i]}" for i in differ)
    names = {f.name for f in dataclasses.fields(cfg)}
    fields = [f for i in differ for f in _FIELD_WORD.findall(dims[i]) if f in names]
    return words, list(dict.fromkeys(fields))


def _field_for_names(hints, names: list[str]) -> str | None:
    for name in names:
        for pattern, field in hints.presence:
            if re.search(pattern, name):
                return field
    return None


def _values(cfg, fields: str) -> str:
    return ", ".join(f"{f} {getattr(cfg, f)}" for f in fields.split(" / "))


# ------------------------------------------------------------------------------ memory
def build_bytes(cfg) -> int:
    """Bytes that the model of `cfg` allocates in the default dtype (float32), from its family's
    closed-form counts (parameters and rope tables; a few small buffers aside); 0 if not counted."""
    counts = get_family(cfg.model_type).hints.build_counts
    return sum(counts(cfg)) * torch.get_default_dtype().itemsize if counts else 0


def memory_size(device=None) -> tuple[int, str] | None:
    """(bytes, what) of the memory a model on `device` lives in: a GPU's total memory, or this
    machine's RAM (or the container's memory limit, if lower); None where it cannot be told."""
    device = torch.device(device or "cpu")
    if device.type == "cuda" and torch.cuda.is_available():  # (without CUDA, torch says so itself)
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory, f"GPU {index}"
    if device.type != "cpu":
        return None
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = int(Path(limit_file).read_text().strip())
        except (OSError, ValueError):  # absent, or "max"
            continue
        if 0 < limit < ram:
            return limit, "this container's memory limit"
    return ram, "this machine's RAM"


def check_memory(cfg, where: str | Path, device=None) -> None:
    """Refuse, before allocating anything, a config whose model would not fit in the memory it is to
    be built in (a lower bound on what loading needs: the file's tensors come on top)."""
    have = memory_size(device)
    need = build_bytes(cfg)
    if have is None or need <= have[0]:
        return
    hints = get_family(cfg.model_type).hints
    # the integer field whose value, put back to its default, shrinks the model most
    sizes = [f.name for f in dataclasses.fields(cfg) if type(getattr(cfg, f.name)) is int]
    field = max(sizes, key=lambda f: need / max(_bytes_with_default(cfg, f), 1))
    dtype = str(torch.get_default_dtype()).removeprefix("torch.")
    problem = (
        f"{field}: the model needs {_bytes(need)} ({human(hints.build_counts(cfg)[0])} "
        f"parameters in {dtype}) but {have[1]} is {_bytes(have[0])}; {field} = "
        f"{getattr(cfg, field)} is the largest factor"
    )
    raise CheckpointError(where, problem, field)


def _bytes(n: int) -> str:
    for unit, div in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= div:
            return f"{n / div:,.1f} {unit}"
    return f"{n} bytes"


def _bytes_with_default(cfg, field: str) -> int:
    try:
        return build_bytes(dataclasses.replace(cfg, **{field: getattr(type(cfg), field)}))
    except ValueError:  # the default breaks another constraint (expert groups): not this one
        return build_bytes(cfg)
