"""`nanoseek export gguf`: a checkpoint as one GGUF file that llama.cpp (llama-cli, llama-server,
llama-cpp-python, Ollama, LM Studio) loads and runs.

    nanoseek export gguf MODEL_DIR --out model.gguf [--type f32|f16|q8_0|q4_0]

    from nanoseek.export.llamacpp import export_gguf
    export_gguf("runs/grpo", "grpo.q8_0.gguf", "q8_0")

MODEL_DIR is a model directory, a checkpoint or a run directory (its newest checkpoint). The file holds
the model (llama, qwen2, qwen3 as themselves; DeepSeek-V3/V2 as llama.cpp's `deepseek2`: see
nanoseek/model/formats/gguf_export.py), the tokenizer with a pre-tokenizer llama.cpp knows, checked to
give the tokenizer's own ids, and the chat template. The file is written under a temporary name and
renamed when complete, so a failed export leaves nothing at --out; an existing --out is refused.
docs/models.md ("Export to llama.cpp") shows llama.cpp running one and what bench/llamacpp_check.py
measured.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nanoseek.model import from_pretrained
from nanoseek.model.formats.gguf_export import TYPES, architecture, write_gguf
from nanoseek.model.run_dirs import resolve_model_dir
from nanoseek.tokenizer import Tokenizer
from nanoseek.tokenizer.gguf_vocab import gguf_tokenizer_metadata


def export_gguf(model_dir: str | Path, out: str | Path, qtype: str = "f16") -> Path:
    """Write the model in `model_dir` (model, checkpoint or run directory) and its tokenizer as a GGUF at
    `out`, matrices in `qtype`. FileExistsError if `out` exists; CheckpointError (one line naming the
    file and field) for a model or tokenizer llama.cpp cannot run as it is."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; choose another --out or remove it")
    model_dir = resolve_model_dir(model_dir)
    model = from_pretrained(model_dir).eval()
    architecture(model.config, model_dir / "config.json")  # refuse before reading the tokenizer
    tokenizer = Tokenizer.from_dir(model_dir)
    extra = gguf_tokenizer_metadata(tokenizer, model.config.vocab_size, model_dir / "tokenizer.json")
    partial = out.with_name(out.name + ".partial")
    try:
        write_gguf(model, partial, qtype, extra, name=model_dir.name, where=model_dir / "config.json")
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def export_gguf_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nanoseek export gguf",
        description="Write a checkpoint and its tokenizer as a GGUF file that llama.cpp runs.",
    )
    parser.add_argument("model_dir", help="model directory, checkpoint or run directory (newest checkpoint)")
    parser.add_argument("--out", required=True, help="the .gguf file to write (must not exist)")
    parser.add_argument(
        "--type",
        default="f16",
        choices=TYPES,
        help="type of the weight matrices (norms, biases and the MoE router stay f32); default f16",
    )
    args = parser.parse_args(argv)
    out = export_gguf(args.model_dir, args.out, args.type)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {args.type})")
    return 0
