"""Train a byte-level BPE tokenizer with DeepSeek-R1's special tokens (Hugging Face `tokenizers`).

    nanoseek tokenizer train --input data/*.jsonl --vocab-size 4096 --out runs/tok

or from Python:

    from nanoseek.tokenizer import train_tokenizer
    tok = train_tokenizer(["data/stories.txt"], vocab_size=512, out_dir="runs/tok")

Text is split with GPT-4's regex, mapped to bytes (ByteLevel, so any string is encodable and no
token is unknown) and merged by BPE. Documents stream from .txt / .jsonl / .parquet files
(see `nanoseek.data.documents`); `max_chars` trains on a prefix of a huge corpus.
Token ids: 0..4 are <｜begin▁of▁sentence｜> <｜end▁of▁sentence｜> <｜▁pad▁｜> <｜User｜> <｜Assistant｜>,
then the 256 bytes and the merges, and the last two ids are <think> and </think>.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from nanoseek.data.documents import expand_files, iter_documents
from nanoseek.tokenizer.chat_format import BOS, SPECIAL_TOKENS, THINK_TOKENS
from nanoseek.tokenizer.core import DEFAULT_MODEL_MAX_LENGTH, Tokenizer

# GPT-4's (cl100k) pre-tokenization: contractions, words, 1-3 digit numbers, punctuation runs, whitespace.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}|"""
    r""" ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS) + len(THINK_TOKENS)


def _take_chars(texts: Iterable[str], max_chars: int | None) -> Iterator[str]:
    total = 0
    for text in texts:
        if max_chars is not None and total >= max_chars:
            return
        if max_chars is not None:
            text = text[: max_chars - total]
        total += len(text)
        yield text


def train_tokenizer(
    files: list[str | Path],
    vocab_size: int,
    out_dir: str | Path | None,
    text_field: str = "text",
    max_chars: int | None = None,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
    show_progress: bool = True,
) -> Tokenizer:
    """Train a BPE tokenizer of `vocab_size` tokens (all included) on the documents in `files`
    and save it to `out_dir` (tokenizer.json + tokenizer_config.json) unless out_dir is None."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 bytes + 7 special tokens)")
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(THINK_TOKENS),
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    texts = _take_chars(iter_documents(expand_files(files), text_field), max_chars)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    # Hugging Face users (vLLM's completions API, lm-eval) get BOS in front like our pretraining documents;
    # nanoseek's own encode() never adds it.
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = Tokenizer(tok, model_max_length=model_max_length)
    if out_dir is not None:
        tokenizer.save(out_dir)
    return tokenizer


def compression_ratio(tokenizer: Tokenizer, texts: Iterable[str], max_chars: int = 4_000_000) -> float:
    """UTF-8 bytes per token over (a prefix of) `texts`: higher means a better-compressing tokenizer."""
    n_bytes = n_tokens = 0
    chunks = iter(_take_chars(texts, max_chars))
    while batch := list(itertools.islice(chunks, 256)):
        n_bytes += sum(len(t.encode("utf-8")) for t in batch)
        n_tokens += sum(len(ids) for ids in tokenizer.encode_ordinary_batch(batch))
    return n_bytes / max(n_tokens, 1)


def tokenizer_train_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="nanoseek tokenizer train",
        description="Train a byte-level BPE tokenizer with R1's special tokens.",
    )
    parser.add_argument(
        "--input", nargs="+", required=True, help="files or directories (.txt .jsonl .parquet)"
    )
    parser.add_argument(
        "--vocab-size", type=int, required=True, help="total vocabulary size, e.g. 512 or 32768"
    )
    parser.add_argument(
        "--out", required=True, help="output directory for tokenizer.json + tokenizer_config.json"
    )
    parser.add_argument("--text-field", default="text", help="JSONL key / parquet column holding the text")
    parser.add_argument("--max-chars", type=int, default=None, help="train on at most this many characters")
    args = parser.parse_args(argv)

    files = expand_files(args.input)
    print(f"training a {args.vocab_size}-token BPE tokenizer on {len(files)} file(s) ...", flush=True)
    t0 = time.time()
    tok = train_tokenizer(
        files, args.vocab_size, args.out, text_field=args.text_field, max_chars=args.max_chars
    )
    seconds = time.time() - t0
    ratio = compression_ratio(tok, iter_documents(files, args.text_field))
    print(f"saved {args.out}/tokenizer.json and tokenizer_config.json in {seconds:.1f}s")
    print(
        f"vocab size: {tok.vocab_size}  compression: {ratio:.2f} bytes/token (on up to 4M chars of the input)"
    )
