"""Tokenize a corpus into token shards on disk (the input of pretraining).

    from nanoseek.data import tokenize_corpus
    manifest = tokenize_corpus(["data/stories.jsonl"], "runs/tok", "runs/data", num_workers=2)

or from the command line through `tokenize_main` (`--input data/ --tokenizer runs/tok --out runs/data`).

Layout of `out_dir`:
- `train_00000.bin`, `train_00001.bin`, ..., `val_00000.bin`, ...: flat arrays of token ids (uint16 when
  the vocabulary fits in 16 bits, else uint32; read them with numpy.memmap). Every document is encoded
  as plain text (control-token strings are not special there) and prefixed by BOS, so BOS marks
  document starts. Documents never straddle shards; a shard closes before it would exceed shard_tokens.
- `manifest.json`: dtype, vocab_size, bos_id, pad_id, the sha256 of tokenizer.json, and per split the
  shard files with their tokens, documents and UTF-8 text bytes (tokens/bytes gives bits per byte).

Every round(1 / val_fraction)-th document, starting with the first, goes to the validation split.
Documents are encoded in parallel by `num_workers` processes, in batches, and written in input
order, so the output does not depend on the number of workers.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nanoseek.tokenizer.core import Tokenizer
from nanoseek.tokenizer.documents import expand_files, iter_documents

FORMAT = "nanoseek-token-shards/1"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def read_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no token shards at {data_dir} (missing manifest.json); run tokenize_corpus first"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


class _Encoder:
    """Encodes a batch of texts into one array of [BOS, tokens...] runs, plus per-document lengths, bytes."""

    def __init__(self, tokenizer_dir: str):
        self.tokenizer = Tokenizer.from_dir(tokenizer_dir)
        self.dtype = token_dtype(self.tokenizer.vocab_size)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bos = self.tokenizer.bos_id
        docs = self.tokenizer.encode_ordinary_batch(texts)
        tokens = np.fromiter(itertools.chain.from_iterable([bos, *d] for d in docs), dtype=self.dtype)
        lengths = np.array([len(d) + 1 for d in docs], dtype=np.int64)
        n_bytes = np.array([len(t.encode("utf-8")) for t in texts], dtype=np.int64)
        return tokens, lengths, n_bytes


_worker_encoder: _Encoder | None = None


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_encoder
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _worker_encoder = _Encoder(tokenizer_dir)


def _encode_in_worker(texts: list[str]):
    return _worker_encoder(texts)


def _encode_batches(batches, tokenizer_dir: str, num_workers: int):
    """Encoded batches in input order; with workers, a bounded window of batches is in flight at a time."""
    if num_workers <= 1:
        yield from map(_Encoder(tokenizer_dir), batches)
        return
    with mp.Pool(num_workers, _init_worker, (tokenizer_dir,)) as pool:
        while window := list(itertools.islice(batches, 4 * num_workers)):
            yield from pool.imap(_encode_in_worker, window)


class _ShardWriter:
    def __init__(self, out_dir: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.out_dir, self.split, self.dtype, self.shard_tokens = out_dir, split, dtype, shard_tokens
        self.shards: list[dict] = []
        self.buffer: list[np.ndarray] = []
        self.tokens = self.documents = self.text_bytes = 0  # of the shard being filled
        self.total_tokens = 0

    def add(self, doc: np.ndarray, text_bytes: int) -> None:
        if self.buffer and self.tokens + len(doc) > self.shard_tokens:
            self.flush()
        self.buffer.append(doc)
        self.tokens += len(doc)
        self.total_tokens += len(doc)
        self.documents += 1
        self.text_bytes += text_bytes

    def flush(self) -> None:
        if not self.buffer:
            return
        name = f"{self.split}_{len(self.shards):05d}.bin"
        np.concatenate(self.buffer).astype(self.dtype, copy=False).tofile(self.out_dir / (name + ".tmp"))
        os.replace(self.out_dir / (name + ".tmp"), self.out_dir / name)
        self.shards.append(
            {"file": name, "tokens": self.tokens, "documents": self.documents, "text_bytes": self.text_bytes}
        )
        self.buffer, self.tokens, self.documents, self.text_bytes = [], 0, 0, 0

    def summary(self) -> dict:
        self.flush()
        totals = {k: sum(s[k] for s in self.shards) for k in ("tokens", "documents", "text_bytes")}
        return {**totals, "shards": self.shards}


def tokenize_corpus(
    files: list[str | Path],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    text_field: str = "text",
    num_workers: int | None = None,
    shard_tokens: int = 50_000_000,
    val_fraction: float = 0.01,
    batch_docs: int = 512,
    show_progress: bool = True,
) -> dict:
    """Tokenize the documents of `files` into shards in `out_dir`; returns the manifest (also written)."""
    if not 0 <= val_fraction <= 0.5:
        raise ValueError(f"val_fraction must be in [0, 0.5], got {val_fraction}")
    files = expand_files(files)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = str(tokenizer_dir)
    tokenizer = Tokenizer.from_dir(tokenizer_dir)
    dtype = token_dtype(tokenizer.vocab_size)
    num_workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    val_every = round(1 / val_fraction) if val_fraction > 0 else 0
    writers = {split: _ShardWriter(out_dir, split, dtype, shard_tokens) for split in ("train", "val")}

    documents = iter_documents(files, text_field)
    batches = iter(lambda: list(itertools.islice(documents, batch_docs)), [])
    doc_index = 0
    with tqdm(desc="tokenizing", unit=" docs", disable=not show_progress) as progress:
        for tokens, lengths, n_bytes in _encode_batches(batches, tokenizer_dir, num_workers):
            for start, length, text_bytes in zip(np.cumsum(lengths) - lengths, lengths, n_bytes):
                split = "val" if val_every and doc_index % val_every == 0 else "train"
                writers[split].add(tokens[start : start + length], int(text_bytes))
                doc_index += 1
            progress.update(len(lengths))
            progress.set_postfix(tokens=f"{sum(w.total_tokens for w in writers.values()):,}", refresh=False)

    manifest = {
        "format": FORMAT,
        "dtype": dtype.name,
        "vocab_size": tokenizer.vocab_size,
        "bos_id": tokenizer.bos_id,
        "pad_id": tokenizer.pad_id,
        "tokenizer_sha256": hashlib.sha256(Path(tokenizer_dir, "tokenizer.json").read_bytes()).hexdigest(),
        "sources": [str(f) for f in files],
        "text_field": text_field,
        "val_fraction": val_fraction,
        "splits": {split: writer.summary() for split, writer in writers.items()},
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def tokenize_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="nanoseek data tokenize", description="Tokenize a corpus into shards."
    )
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="files, folders or Hub dataset ids (org/name[:config][@split]): .txt .jsonl .json .parquet "
        ".arrow .csv .tsv, and .gz/.zst of the text ones",
    )
    parser.add_argument("--tokenizer", required=True, help="directory with tokenizer.json")
    parser.add_argument("--out", required=True, help="output directory for shards + manifest.json")
    parser.add_argument("--text-field", default="text", help="the field / column holding the text")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--shard-tokens", type=int, default=50_000_000)
    parser.add_argument("--val-fraction", type=float, default=0.01)
    args = parser.parse_args(argv)
    m = tokenize_corpus(
        args.input,
        args.tokenizer,
        args.out,
        args.text_field,
        args.workers,
        args.shard_tokens,
        args.val_fraction,
    )
    for split, s in m["splits"].items():
        ratio = s["text_bytes"] / max(s["tokens"], 1)
        print(
            f"{split}: {s['documents']:,} docs, {s['tokens']:,} tokens in {len(s['shards'])} shard(s), "
            f"{ratio:.2f} bytes/token"
        )
    print(f"wrote {args.out}/manifest.json")
