"""llama.cpp's GGUF files as nanoseek models: weights dequantized as transformers does, the config from
the file's metadata. Needs the `gguf` package (llama.cpp's own reader; `pip install nanoseek[gguf]`).

    from nanoseek.model import from_pretrained
    model = from_pretrained("SmolLM2-135M-Instruct.Q4_1.gguf")        # or a directory holding one .gguf,
    model = from_pretrained("models/", gguf_file="x.Q4_1.gguf")       # as transformers' gguf_file=
    gguf_to_hf_dir("x.gguf", "out/")     # config.json, model.safetensors (fp32), generation_config.json

A GGUF file is a header of typed metadata (`llama.block_count`, `tokenizer.ggml.tokens`, ...) and
tensors under llama.cpp's names (`blk.N.attn_q.weight`), each in a ggml type (F32, Q8_0, Q4_1, ...).
Reading one is:
  1. the config: `{arch}.block_count` -> num_hidden_layers, `{arch}.embedding_length` -> hidden_size,
     ... (`_CONFIG` below), with model_type = general.architecture (llama, qwen2, qwen3), tied
     embeddings when the file has no `output.weight`, and BOS/EOS/PAD from the tokenizer metadata;
  2. each tensor dequantized to float32 with `gguf.quants.dequantize` (as transformers' loader does),
     renamed to its Hugging Face name (`_BLOCK` below), and for the llama architecture the Q and K rows
     put back in Hugging Face's order: llama.cpp's converter interleaves the two rope halves of each
     head (`permute` in convert_hf_to_gguf.py: rows (heads, 2, d/2) -> (heads, d/2, 2)); we undo it
     with the inverse reshape. Qwen2/Qwen3 files are not permuted.
Tensors are dequantized one at a time as the strict loader asks for them, so memory holds the model
and one tensor, not two models. The file's tokenizer (`tokenizer.ggml.*`) becomes a tokenizer.json in
`nanoseek.tokenizer.gguf_vocab` (the model layer knows no tokens); `tokenizer.chat_template` is there.

A file that is not GGUF, is truncated, or is of another architecture is one CheckpointError line.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanoseek.model.errors import CheckpointError, some

log = logging.getLogger(__name__)

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}

# {arch}.<key> -> config.json field
_CONFIG = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "attention.key_length": "head_dim",
    "vocab_size": "vocab_size",
}
_TOKEN_IDS = {
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
    "padding_token_id": "pad_token_id",
}

_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# tensors llama.cpp adds that transformers' model has no place for (and ignores on load)
_IGNORED = {"rope_freqs.weight"}


def _gguf():
    try:
        import gguf
    except ImportError:
        raise ImportError(
            "reading GGUF files needs the `gguf` package: pip install 'nanoseek[gguf]'"
        ) from None
    return gguf


def open_reader(path: str | Path):
    """A `gguf.GGUFReader` of `path` (memory-mapped); CheckpointError if it is not a readable GGUF."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such GGUF file")
    gguf = _gguf()
    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # the reader fails in many ways on a bad file (ValueError, struct/numpy errors)
        problem = (
            f"not a readable GGUF file ({type(e).__name__}: {str(e)[:200]}); is it truncated or corrupt?"
        )
        raise CheckpointError(path, problem) from None


def field(reader, key: str, default: Any = None) -> Any:
    """The value of metadata `key` (a number, string, or list), or `default` if the file lacks it."""
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def hf_name(gguf_name: str) -> str | None:
    """llama.cpp's tensor name -> the Hugging Face one (None: not a tensor of these architectures)."""
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
    if m and m.group(2) in _BLOCK:
        return f"model.layers.{m.group(1)}.{_BLOCK[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"(\w+)\.(weight|bias)", gguf_name)
    if m and m.group(1) in _GLOBAL:
        return f"{_GLOBAL[m.group(1)]}.{m.group(2)}"
    return None


def hf_config(reader, where: Path) -> dict[str, Any]:
    """config.json's fields for the model a GGUF file holds."""
    arch = field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        problem = f"general.architecture: {arch!r} is not supported from GGUF; supported: {', '.join(ARCHITECTURES)}"
        raise CheckpointError(where, problem, "model_type")
    config: dict[str, Any] = {
        "model_type": arch,
        "architectures": [ARCHITECTURES[arch]],
        "torch_dtype": "float32",
    }
    for key, name in _CONFIG.items():
        value = field(reader, f"{arch}.{key}")
        if value is not None:
            config[name] = value
    absent = [
        f"{arch}.{k}"
        for k, n in _CONFIG.items()
        if n in ("num_hidden_layers", "hidden_size") and n not in config
    ]
    if absent or "num_attention_heads" not in config:
        raise CheckpointError(where, f"the metadata lacks {some(absent or [f'{arch}.attention.head_count'])}")
    config.setdefault("num_key_value_heads", config["num_attention_heads"])
    if "head_dim" not in config and arch == "llama" and field(reader, f"{arch}.rope.dimension_count"):
        config["head_dim"] = field(reader, f"{arch}.rope.dimension_count")
    names = {t.name for t in reader.tensors}
    if "vocab_size" not in config:
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        config["vocab_size"] = len(tokens.data) if tokens is not None else _rows(reader, "token_embd.weight")
    config["tie_word_embeddings"] = "output.weight" not in names
    if arch != "qwen2":  # Qwen2 always has q/k/v bias; the others only if the file holds it
        config["attention_bias"] = "blk.0.attn_q.bias" in names
    scaling = field(reader, f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        config["rope_scaling"] = {
            "rope_type": scaling,
            "factor": field(reader, f"{arch}.rope.scaling.factor", 1.0),
            "original_max_position_embeddings": field(
                reader, f"{arch}.rope.scaling.original_context_length", config.get("max_position_embeddings")
            ),
        }
    for key, name in _TOKEN_IDS.items():
        value = field(reader, f"tokenizer.ggml.{key}")
        if value is not None:
            config[name] = value
    return config


def _rows(reader, name: str) -> int:
    for t in reader.tensors:
        if t.name == name:
            return int(t.shape[-1])
    raise CheckpointError(
        reader.data.filename, f"no {name} and no tokenizer.ggml.tokens: the vocabulary size is unknown"
    )


def generation_config(config: dict[str, Any]) -> dict[str, Any]:
    """generation_config.json for a GGUF's config (its BOS/EOS/PAD ids; llama.cpp keeps no sampling defaults)."""
    keys = ("bos_token_id", "eos_token_id", "pad_token_id")
    return {k: config[k] for k in keys if k in config}


class GGUFSource:
    """A GGUF file as a tensor source (formats/__init__.py): HF names, float32, dequantized on load."""

    def __init__(self, path: str | Path):
        self.where = Path(path)
        self.reader = open_reader(self.where)
        self.config = hf_config(self.reader, self.where)
        self._tensors = {}
        for t in self.reader.tensors:
            if t.name in _IGNORED:
                log.warning("%s: %s ignored, as transformers ignores it", self.where, t.name)
                continue
            self._tensors[hf_name(t.name) or t.name] = t  # an unknown name stays, for the loader to name

    def meta(self) -> dict[str, torch.Tensor]:
        # ggml lists dimensions fastest-first; torch (and numpy) slowest-first
        shape = lambda t: [int(d) for d in reversed(t.shape.tolist())]  # noqa: E731
        return {
            n: torch.empty(shape(t), dtype=torch.float32, device="meta") for n, t in self._tensors.items()
        }

    def load(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        return {n: self._load(n) for n in names}

    def _load(self, name: str) -> torch.Tensor:
        t = self._tensors[name]
        try:
            w = _gguf().quants.dequantize(t.data, t.tensor_type)
        except (NotImplementedError, ValueError) as e:
            raise CheckpointError(
                self.where, f"{t.name}: cannot dequantize ggml type {t.tensor_type.name} ({e})"
            ) from None
        w = torch.from_numpy(np.require(w, np.float32, ["C", "W"]))  # copies only the memory-mapped F32 ones
        if self.config["model_type"] == "llama" and re.search(r"\.(q|k)_proj\.", name):
            kv = ".k_proj." in name
            w = unpermute_rope(w, self.config["num_key_value_heads" if kv else "num_attention_heads"])
        return w


def unpermute_rope(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Inverse of llama.cpp's Q/K row permutation for `heads` heads: within each head, rows ordered
    (d/2, 2) -> (2, d/2), i.e. interleaved rope pairs back to the two halves transformers rotates."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape).contiguous()


def find_gguf(path: str | Path, gguf_file: str | Path | None = None) -> Path | None:
    """The GGUF file meant by `path` (+ `gguf_file`, as transformers takes it): a .gguf path, the file
    `gguf_file` in directory `path`, or the only .gguf in a directory without config.json; None for a
    Hugging Face directory."""
    path = Path(path)
    if gguf_file is not None:
        f = Path(gguf_file)
        return f if f.is_absolute() or not path.is_dir() else path / f
    if path.suffix == ".gguf" and not path.is_dir():
        return path
    if not path.is_dir() or (path / "config.json").exists():
        return None
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
        problem = (
            f"holds {len(found)} GGUF files ({some([f.name for f in found])}); choose one with gguf_file="
        )
        raise CheckpointError(path, problem)
    return found[0] if found else None


def gguf_to_hf_dir(file: str | Path, out_dir: str | Path) -> Path:
    """Write the model of a GGUF file as a Hugging Face model directory: config.json,
    model.safetensors (float32, HF names) and generation_config.json. The tokenizer files come from
    `nanoseek.tokenizer.gguf_vocab.save_gguf_tokenizer(file, out_dir)`."""
    from safetensors.torch import save_file

    source = GGUFSource(file)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(source.config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(generation_config(source.config), indent=2) + "\n")
    unknown = [n for n in source.meta() if hf_name(source._tensors[n].name) is None]
    if unknown:
        raise CheckpointError(source.where, f"tensors of no known Hugging Face name: {some(unknown)}")
    save_file(source.load(source.meta()), str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
