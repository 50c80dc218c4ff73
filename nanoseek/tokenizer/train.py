"""Train a byte-level BPE tokenizer with DeepSeek-R1's special tokens (Hugging Face `tokenizers`).

    nanoseek tokenizer train --input data/*.jsonl --vocab-size 4096 --out runs/tok

or from Python:

    from nanoseek.tokenizer import train_tokenizer
    tok = train_tokenizer(["data/stories.txt"], vocab_size=512, out_dir="runs/tok")
    tok = train_digit_tokenizer("corpus.jsonl", 512, "runs/tok")   # numbers spelled digit by digit

Text is split with GPT-4's regex, mapped to bytes (ByteLevel, so any string is encodable and no
token is unknown) and merged by BPE. Documents stream from .txt / .jsonl / .parquet files
(see `nanoseek.tokenizer.documents`); `max_chars` trains on a prefix of a huge corpus. A corpus with no
text is an error; one too small to learn `vocab_size` tokens gives a smaller vocabulary with a
warning, or, with `exact_size=True` (the command), an error saying how many tokens it could learn.
The command refuses to overwrite a tokenizer already in --out unless given --force.
Token ids: 0..4 are <｜begin▁of▁sentence｜> <｜end▁of▁sentence｜> <｜▁pad▁｜> <｜User｜> <｜Assistant｜>,
then the 256 bytes and the merges, and the last two ids are <think> and </think>.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from nanoseek.tokenizer.chat_format import BOS, SPECIAL_TOKENS, THINK_TOKENS
from nanoseek.tokenizer.core import DEFAULT_MODEL_MAX_LENGTH, Tokenizer
from nanoseek.tokenizer.documents import DataError, expand_files, iter_documents

# GPT-4's (cl100k) pre-tokenization: contractions, words, 1-3 digit numbers, punctuation runs, whitespace.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}|"""
    r""" ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS) + len(THINK_TOKENS)

log = logging.getLogger(__name__)


def _take_chars(texts: Iterable[str], max_chars: int | None) -> Iterator[str]:
    total = 0
    for text in texts:
        if max_chars is not None and total >= max_chars:
            return
        if max_chars is not None:
            text = text[: max_chars - total]
        total += len(text)
        yield text


def check_vocab_size(vocab_size: int, name: str = "vocab_size") -> None:
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"{name} {vocab_size}: must be at least {MIN_VOCAB_SIZE} (the 256 byte tokens + "
            f"{MIN_VOCAB_SIZE - 256} special tokens)"
        )


def train_tokenizer(
    files: list[str | Path],
    vocab_size: int,
    out_dir: str | Path | None,
    text_field: str = "text",
    max_chars: int | None = None,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
    show_progress: bool = True,
    exact_size: bool = False,
) -> Tokenizer:
    """Train a BPE tokenizer of `vocab_size` tokens (all included) on the documents in `files`
    and save it to `out_dir` (tokenizer.json + tokenizer_config.json) unless out_dir is None.
    Raises DataError for a corpus with no text; a corpus with too few distinct pairs to learn
    `vocab_size` tokens gives fewer, with a warning (ValueError, saving nothing, with exact_size)."""
    check_vocab_size(vocab_size)
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
    files = expand_files(files)
    texts = _take_chars(iter_documents(files, text_field), max_chars)
    where = ", ".join(map(str, files[:3])) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    first = next(texts, None)
    if first is None:
        raise DataError(where, None, None, "no text to train on (empty files or empty documents)")
    tok.train_from_iterator(itertools.chain([first], texts), trainer=trainer)
    learned = tok.get_vocab_size() + len(THINK_TOKENS)
    if learned < vocab_size:
        problem = (
            f"{where}: too little text for {vocab_size} tokens: BPE learned only {learned - MIN_VOCAB_SIZE} "
            f"merges, a vocabulary of {learned}; train on more text or ask for at most {learned} tokens"
        )
        if exact_size:
            raise ValueError(problem)
        log.warning("%s", problem)
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


def train_digit_tokenizer(corpus: str | Path, vocab_size: int, out_dir: str | Path) -> Tokenizer:
    """A BPE trained on a JSONL corpus (`{"text": ...}` per line) with every number cut to its first
    digit, so it learns no merges of digits: numbers are spelled digit by digit, as in DeepSeek's and
    LLaMA's tokenizers. Saved to `out_dir`."""
    out_dir = Path(out_dir)
    scrubbed = out_dir / "digits_scrubbed.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(corpus) as src, open(scrubbed, "w") as dst:
        for line in src:
            text = re.sub(r"\d+", lambda m: m.group(0)[0], json.loads(line)["text"])
            dst.write(json.dumps({"text": text}) + "\n")
    tokenizer = train_tokenizer([scrubbed], vocab_size, out_dir, show_progress=False)
    scrubbed.unlink()
    return tokenizer


def compression_ratio(tokenizer: Tokenizer, texts: Iterable[str], max_chars: int = 4_000_000) -> float:
    """UTF-8 bytes per token over (a prefix of) `texts`: higher means a better-compressing tokenizer."""
    n_bytes = n_tokens = 0
    chunks = iter(_take_chars(texts, max_chars))
    while batch := list(itertools.islice(chunks, 256)):
        n_bytes += sum(len(t.encode("utf-8")) for t in batch)
        n_tokens += sum(len(ids) for ids in tokenizer.encode_ordinary_batch(batch))
    return n_bytes / max(n_tokens, 1)


def tokenizer_train_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nanoseek tokenizer train",
        description="Train a byte-level BPE tokenizer with R1's special tokens.",
    )
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="files, folders or Hub dataset ids (org/name[:config][@split]): .txt .jsonl .json .parquet "
        ".arrow .csv .tsv, and .gz/.zst of the text ones",
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        required=True,
        help=f"total vocabulary size, e.g. 512 or 32768 (at least {MIN_VOCAB_SIZE}); a corpus too small "
        "to learn that many tokens is an error",
    )
    parser.add_argument(
        "--out", required=True, help="output directory for tokenizer.json + tokenizer_config.json"
    )
    parser.add_argument("--force", action="store_true", help="overwrite a tokenizer already in --out")
    parser.add_argument("--text-field", default="text", help="the field / column holding the text")
    parser.add_argument("--max-chars", type=int, default=None, help="train on at most this many characters")
    args = parser.parse_args(argv)
    try:
        check_vocab_size(args.vocab_size, "--vocab-size")
        _check_out(Path(args.out), args.force)
        files = expand_files(args.input)
        print(f"training a {args.vocab_size}-token BPE tokenizer on {len(files)} file(s) ...", flush=True)
        t0 = time.time()
        tok = train_tokenizer(
            files,
            args.vocab_size,
            args.out,
            text_field=args.text_field,
            max_chars=args.max_chars,
            exact_size=True,
        )
        seconds = time.time() - t0
        ratio = compression_ratio(tok, iter_documents(files, args.text_field))
    except (ValueError, OSError) as e:  # DataError is a ValueError; a missing file an OSError
        print(f"nanoseek tokenizer train: error: {e}", file=sys.stderr)
        return 2
    print(f"saved {args.out}/tokenizer.json and tokenizer_config.json in {seconds:.1f}s")
    print(
        f"vocab size: {tok.vocab_size}  compression: {ratio:.2f} bytes/token (on up to 4M chars of the input)"
    )
    return 0


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out}: is a file; expected a directory (new or to hold the tokenizer)")
    existing = [name for name in ("tokenizer.json", "tokenizer_config.json") if (out / name).exists()]
    if existing and not force:
        raise FileExistsError(
            f"--out {out}: already holds {' and '.join(existing)}; pass --force to overwrite"
        )
