"""Weight file formats, each read tensor by tensor so that loading never holds two copies of a model.

    from nanoseek.model.formats import open_weights
    source = open_weights("model_dir")        # safetensors (one file or shards), FP8 scales folded in
    source.meta()                             # {HF name: tensor on the meta device}: names, shapes, dtypes
    source.load(["model.norm.weight"])        # {HF name: tensor}: only these, read now

A *tensor source* is what the strict loader (checkpoint.py) reads from: `where` (the file or
directory its errors name), `meta()` (every tensor's name, shape and dtype without reading data) and
`load(names)` (a few tensors, read from disk as they are asked for). The loader checks names and
shapes against the model on the meta device first, then fills the model one layer at a time.

Modules, one concern each: safetensors_io.py (single and sharded safetensors with
model.safetensors.index.json; saving sharded above a size), fp8.py (DeepSeek's float8_e4m3fn weights
with 128x128 block `weight_scale_inv`, dequantized as they are read), gguf.py (llama.cpp's GGUF files:
weights dequantized with the `gguf` package, the config from its metadata).
"""

from pathlib import Path

from nanoseek.model.formats.fp8 import Fp8Source, dequantize_blockwise, has_fp8
from nanoseek.model.formats.safetensors_io import SafetensorsSource, TensorSource, parse_size, save_sharded


def open_weights(path: str | Path, config: dict | None = None) -> TensorSource:
    """The weights of a model directory as a tensor source: its safetensors (one file or the shards
    of model.safetensors.index.json), float8 weights dequantized in blocks of config.json's
    quantization_config.weight_block_size. CheckpointError names the file at fault."""
    source = SafetensorsSource.from_dir(path)
    if has_fp8(source.meta()):
        return Fp8Source(source, Fp8Source.block_of(config or {}, Path(path) / "config.json"))
    return source


__all__ = [
    "Fp8Source",
    "SafetensorsSource",
    "TensorSource",
    "dequantize_blockwise",
    "has_fp8",
    "open_weights",
    "parse_size",
    "save_sharded",
]
