"""Read text documents from corpus files, streaming: .txt, .jsonl and .parquet; write JSONL atomically.

    from nanoseek.tokenizer.documents import expand_files, iter_documents   # also: nanoseek.data
    for text in iter_documents(expand_files(["data/"]), text_field="text"):
        ...
    write_jsonl("runs/x/corpus.jsonl", [{"text": "..."}, ...])    # whole or not at all (temp + rename)

What a document is, per file type:
- .txt: the whole file, or, if the file contains lines that are exactly `<|endoftext|>` (the GPT-2 /
  TinyStories convention), the pieces between those lines.
- .jsonl: one JSON object per line, its `text_field` string; a chat record (`{"messages": [...]}`)
  gives the texts of its messages (reasoning_content, then content) joined by blank lines.
- .parquet: the `text_field` column, one document per row, read in record batches.
Empty documents are skipped. A malformed record raises `DataError` naming the file, line and field;
a .txt or .jsonl file that is not UTF-8 text (a binary file) raises it naming the file.
Used by tokenizer training and by `nanoseek.data` (token shards, chat files), so it lives here, in the
lowest layer that reads corpora; `nanoseek.data` re-exports DataError, expand_files and iter_documents.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

SUFFIXES = (".txt", ".jsonl", ".parquet")
TXT_SEPARATOR = "<|endoftext|>"


class DataError(ValueError):
    """A malformed data record; `path`, `line` (1-based, or None) and `field` say where."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = f"{path}, line {line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


def expand_files(inputs: list[str | Path]) -> list[Path]:
    """Files named in `inputs`; a directory stands for its .txt/.jsonl/.parquet files (recursive, sorted)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        elif item.is_file():
            if item.suffix not in SUFFIXES:
                raise DataError(
                    item, None, None, f"unsupported file type, expected one of {', '.join(SUFFIXES)}"
                )
            files.append(item)
        else:
            raise FileNotFoundError(f"no such file or directory: {item}")
    if not files:
        raise FileNotFoundError(f"no .txt/.jsonl/.parquet files in {[str(i) for i in inputs]}")
    return files


def iter_documents(files: list[str | Path], text_field: str = "text") -> Iterator[str]:
    """Yield the non-empty documents of `files`, in order."""
    readers = {".txt": _iter_txt, ".jsonl": _iter_jsonl, ".parquet": _iter_parquet}
    for path in map(Path, files):
        if path.suffix not in readers:
            raise DataError(path, None, None, f"unsupported file type, expected one of {', '.join(SUFFIXES)}")
        try:
            for text in readers[path.suffix](path, text_field):
                if text:
                    yield text
        except UnicodeDecodeError as e:
            raise DataError(path, None, None, f"not UTF-8 text ({e.reason}); is it a binary file?") from None


def _iter_txt(path: Path, text_field: str) -> Iterator[str]:
    lines: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.rstrip("\r\n") == TXT_SEPARATOR:
                yield "".join(lines)
                lines = []
            else:
                lines.append(line)
    yield "".join(lines)


def record_text(record: dict, text_field: str) -> str | None:
    """The text of a JSON record: its `text_field`, or its chat messages' texts; None if neither is there."""
    if text_field in record:
        return record[text_field]
    if isinstance(record.get("messages"), list):
        parts = []
        for m in record["messages"]:
            if isinstance(m, dict):
                parts += [
                    m[k] for k in ("reasoning_content", "content") if isinstance(m.get(k), str) and m[k]
                ]
        return "\n\n".join(parts)
    return None


def _iter_jsonl(path: Path, text_field: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, lineno, None, f"invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise DataError(path, lineno, None, f"expected a JSON object, got {type(record).__name__}")
            text = record_text(record, text_field)
            if text is None:
                raise DataError(path, lineno, text_field, f"missing (expected a string field {text_field!r})")
            if not isinstance(text, str):
                raise DataError(path, lineno, text_field, f"expected a string, got {type(text).__name__}")
            yield text


def _iter_parquet(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    if text_field not in parquet.schema_arrow.names:
        raise DataError(path, None, text_field, f"no such column (columns: {parquet.schema_arrow.names})")
    for batch in parquet.iter_batches(batch_size=1024, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            if text is not None:
                yield text


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
