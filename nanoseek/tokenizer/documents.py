"""Text documents from corpus files, streaming, in every format `nanoseek.records` reads; write JSONL
atomically.

    from nanoseek.tokenizer.documents import expand_files, iter_documents   # also: nanoseek.data
    for text in iter_documents(expand_files(["data/", "corpus.jsonl.gz"]), text_field="text"):
        ...
    write_jsonl("runs/x/corpus.jsonl", [{"text": "..."}, ...])    # whole or not at all (temp + rename)

What a document is: a record's `text_field` string (a JSONL line, a JSON object, a parquet / arrow /
Hub row, a CSV row); a chat record's texts instead when it has no such field (`{"messages": [...]}` or
ShareGPT's `{"conversations": [...]}`: reasoning_content, then content, joined by blank lines); of a
.txt file, the whole file or the pieces between lines that are exactly `<|endoftext|>`. Empty (and
null) documents are skipped. A malformed record raises `DataError` naming the file, line or row and
field; so does a file that is not UTF-8 text (a binary file) or that its reader cannot read.

`expand_files` and `DataError` are `nanoseek.records`' (expand_sources, and the same class): used by
tokenizer training and by `nanoseek.data` (token shards), which re-exports them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from nanoseek.records import (
    CORPUS_ONLY,
    SUFFIXES,
    TXT_SEPARATOR,
    DataError,
    expand_sources,
    iter_records,
    suffix_of,
)

__all__ = [
    "SUFFIXES",
    "TXT_SEPARATOR",
    "DataError",
    "expand_files",
    "iter_documents",
    "record_text",
    "write_jsonl",
]
CHAT_FIELDS = ("messages", "conversations")  # read from a columnar file beside text_field


def expand_files(inputs: list[str | Path]) -> list[str]:
    """The sources named in `inputs` (`nanoseek.records.expand_sources`): files, folders (their data
    files, recursive, sorted) and Hub dataset ids."""
    return expand_sources(inputs)


def iter_documents(files: list[str | Path], text_field: str = "text") -> Iterator[str]:
    """Yield the non-empty documents of `files` (sources from expand_files), in order."""
    for source in files:
        field = "text" if suffix_of(source) in CORPUS_ONLY else text_field
        for where, record in iter_records(source, columns=[field, *CHAT_FIELDS]):
            text = record_text(record, field)
            if text is None and field not in record:
                raise DataError(where, None, field, f"missing (expected a string field {field!r})")
            if text is not None and not isinstance(text, str):
                raise DataError(where, None, field, f"expected a string, got {type(text).__name__}")
            if text:
                yield text


def record_text(record: dict, text_field: str) -> str | None:
    """The text of a record: its `text_field`, or its chat messages' texts (OpenAI `messages` with
    role/content/reasoning_content, ShareGPT `conversations` with from/value); None if neither is there."""
    if text_field in record:
        return record[text_field]
    for key in CHAT_FIELDS:
        if isinstance(record.get(key), list):
            parts = []
            for m in record[key]:
                if isinstance(m, dict):
                    names = ("reasoning_content", "content", "value")
                    parts += [m[k] for k in names if isinstance(m.get(k), str) and m[k]]
            return "\n\n".join(parts)
    return None


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """One JSON object per line (UTF-8 as is), written to a temp file, fsynced and renamed into place,
    so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path
