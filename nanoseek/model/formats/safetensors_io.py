"""Safetensors weights, one file or sharded, read lazily: names and shapes from the headers, tensors
from the memory-mapped files only when asked for; and saved sharded above a size.

    source = SafetensorsSource.from_dir("model_dir")   # model.safetensors, or the shards that
                                                       # model.safetensors.index.json lists
    source.meta()["model.norm.weight"]                 # tensor(..., device='meta', size=(C,))
    source.load(["model.norm.weight"])                 # read now, from the mapped file
    save_sharded(tensors, "out/", max_shard_size="5GB")  # model.safetensors, or
                                                       # model-00001-of-0000N.safetensors + index.json

A sharded directory is what transformers' `save_pretrained(max_shard_size=...)` writes and every hub
checkpoint over a few GB is: `model.safetensors.index.json` = {"metadata": {"total_size": bytes},
"weight_map": {tensor name: shard file}}. Without an index every `*.safetensors` in the directory is
read (a name in two files is an error either way).

Why per-group file handles: `safe_open` maps the whole file, and a page of it once read stays counted
in the process's memory for as long as the mapping lives. `load` opens the files it needs, reads its
tensors and closes them again, so what stays resident is the model being filled, not the file too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nanoseek.model.errors import CheckpointError, some

INDEX = "model.safetensors.index.json"

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class TensorSource(Protocol):
    """What the strict loader reads weights from (see formats/__init__.py)."""

    where: Path

    def meta(self) -> dict[str, torch.Tensor]: ...

    def load(self, names: Iterable[str]) -> dict[str, torch.Tensor]: ...


class SafetensorsSource:
    """The tensors of some safetensors files; `file_of[name]` is the file holding each."""

    def __init__(
        self, files: list[Path], where: Path, file_of: dict[str, Path], metas: dict[str, torch.Tensor]
    ):
        self.files, self.where, self.file_of, self._meta = files, where, file_of, metas

    @classmethod
    def from_files(cls, files: list[Path], where: Path | None = None) -> SafetensorsSource:
        """Every tensor of `files`; CheckpointError names a file that is not safetensors, or a name
        found in two files."""
        file_of: dict[str, Path] = {}
        metas: dict[str, torch.Tensor] = {}
        for f in files:
            for name, meta in _header(f).items():
                if name in file_of:
                    problem = f"holds {name} again (already in {file_of[name].name})"
                    raise CheckpointError(f, problem)
                file_of[name], metas[name] = f, meta
        return cls(files, where or (files[0] if len(files) == 1 else files[0].parent), file_of, metas)

    @classmethod
    def from_dir(cls, path: str | Path) -> SafetensorsSource:
        """A model directory's weights: the shards its model.safetensors.index.json lists (checked
        against the files), or else every *.safetensors in it."""
        path = Path(path)
        index = path / INDEX
        if index.is_file():
            return cls._from_index(index)
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(path, "no *.safetensors weights in the model directory")
        return cls.from_files(files, path if len(files) > 1 else files[0])

    @classmethod
    def _from_index(cls, index: Path) -> SafetensorsSource:
        weight_map = _read_index(index)
        files = sorted({index.parent / f for f in weight_map.values()})
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise CheckpointError(
                index, f"weight_map names shard(s) that are not in the directory: {some(absent)}"
            )
        source = cls.from_files(files, index.parent)
        listed = {n: index.parent / f for n, f in weight_map.items()}
        elsewhere = sorted(n for n, f in listed.items() if source.file_of.get(n) != f)
        if elsewhere:
            n = elsewhere[0]
            found = f"it is in {source.file_of[n].name}" if n in source.file_of else "no shard holds it"
            problem = f"weight_map puts {n} in {listed[n].name}, but {found}"
            if len(elsewhere) > 1:
                problem += f" (and {len(elsewhere) - 1} more like it)"
            raise CheckpointError(index, problem)
        unlisted = sorted(set(source.file_of) - set(listed))
        if unlisted:
            raise CheckpointError(index, f"weight_map lacks {some(unlisted)}, which the shards hold")
        return source

    def meta(self) -> dict[str, torch.Tensor]:
        return dict(self._meta)

    def load(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        by_file: dict[Path, list[str]] = {}
        for n in names:
            by_file.setdefault(self.file_of[n], []).append(n)
        out = {}
        for f, group in by_file.items():
            try:
                with safe_open(str(f), framework="pt") as handle:
                    for n in group:
                        out[n] = handle.get_tensor(n)
            except (SafetensorError, OSError) as e:
                raise CheckpointError(
                    f, f"not a readable safetensors file ({e}); is it truncated or corrupt?"
                ) from None
        return out


def _header(f: Path) -> dict[str, torch.Tensor]:
    """{name: meta tensor} from a safetensors file's header alone."""
    try:
        with safe_open(str(f), framework="pt") as handle:
            metas = {}
            for name in handle.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                piece = handle.get_slice(name)
                dtype = _DTYPES.get(piece.get_dtype())
                if dtype is None:
                    raise CheckpointError(
                        f, f"{name} has dtype {piece.get_dtype()}, which nanoseek does not read"
                    )
                metas[name] = torch.empty(piece.get_shape(), dtype=dtype, device="meta")
            return metas
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f, f"not a readable safetensors file ({e}); is it truncated or corrupt?"
        ) from None


def _read_index(index: Path) -> dict[str, str]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(index, f"not JSON ({e}); expected {{'weight_map': {{name: file}}}}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(v, str) and "/" not in v and v.endswith(".safetensors") for v in weight_map.values()
    ):
        raise CheckpointError(
            index,
            "weight_map: expected an object of tensor name -> shard file (*.safetensors in this directory)",
        )
    return weight_map


# ------------------------------------------------------------------------------ saving
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: int | str) -> int:
    """Bytes in `size`: an int, or "5GB" / "500MB" / "2GiB" as transformers' max_shard_size reads."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?\s*", str(size).upper())
    if not m:
        raise ValueError(f"max_shard_size: expected bytes or a size such as '5GB', got {size!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def save_sharded(
    tensors: dict[str, torch.Tensor], path: str | Path, max_shard_size: int | str = "5GB"
) -> list[Path]:
    """`tensors` as model.safetensors, or, when they come to more than max_shard_size bytes, as
    model-0000K-of-0000N.safetensors shards of at most that size each (a larger tensor gets a shard
    of its own) with model.safetensors.index.json; removes weight files of an earlier save."""
    path = Path(path)
    limit = parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    for old in [*path.glob("*.safetensors"), path / INDEX]:
        old.unlink(missing_ok=True)
    if len(shards) == 1:
        save_file(shards[0], str(path / "model.safetensors"), metadata={"format": "pt"})
        return [path / "model.safetensors"]
    files, weight_map = [], {}
    for k, shard in enumerate(shards):
        f = path / f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(f), metadata={"format": "pt"})
        files.append(f)
        weight_map.update(dict.fromkeys(shard, f.name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return files
