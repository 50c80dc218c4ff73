"""Records from data files in the formats people have, and from the Hugging Face Hub: one reader, used by
the corpus reader (`nanoseek.tokenizer.documents`), the chat reader (`nanoseek.data.chat`) and the
benchmark and problem files of `nanoseek.tasks`.

    from nanoseek.records import DataError, expand_sources, iter_records
    for source in expand_sources(["data/", "chat.parquet", "open-r1/OpenR1-Math-220k:default@train"]):
        for where, row in iter_records(source):
            ...   # row: a dict; where: "data/a.jsonl:3", "chat.parquet, row 7", "hf://open-r1/...[train]:12"
            raise DataError(where, None, "answer", "expected a string")   # "data/a.jsonl, line 3: answer: ..."

Formats, by suffix (`SUFFIXES`):

| suffix | a record is | read |
|---|---|---|
| .jsonl (.gz, .zst) | one JSON object per line; blank lines are skipped | line by line |
| .json (.gz, .zst) | an object of a top-level list; or of the list an object holds under "data", "rows", "records", "examples", "instances" or the split's name (`split=`); or a line, when the file is JSON lines (as `datasets` writes a .json); any other object is one record | whole |
| .parquet | a row, the `columns` only | in record batches |
| .arrow | a row (Arrow IPC file or stream format: pyarrow, polars, `datasets`) | in record batches, memory-mapped |
| .csv / .tsv (.gz, .zst) | a row under the header line, values as the strings written | line by line |
| .txt (.gz, .zst), corpora only | `{"text": ...}`: the whole file, or the pieces between lines that are exactly `<|endoftext|>` (the GPT-2 / TinyStories convention) | line by line |
| a folder `datasets` saved (`save_to_disk`) | a row of the `split` (default "train") of a DatasetDict, or of the Dataset | through `datasets.load_from_disk`, in arrow batches |
| a Hub dataset id | a row | through `datasets.load_dataset(..., streaming=True)`: never downloaded whole |

`.gz` is gzip, `.zst` Zstandard (the `zstandard` package; both decompress as they read). A folder
stands for its supported files, recursively, in sorted order (hidden files and folders skipped; a
folder `datasets` saved is one source); a folder with none is an error naming it.

A Hub id is `org/name`, with an optional `:config` and `@split` (`open-r1/OpenR1-Math-220k:default`,
`openai/gsm8k:main@test`), optionally written `hf://org/name...`. Without the prefix, a name is taken
for a Hub id only when no such local file or folder exists, its first part is not a local folder and
it has no data-file suffix (`data/missing.jsonl` is a missing file, not a dataset). The split is the
id's `@split`, else `iter_records(split=...)`, else "train".

Errors: everything wrong with the input is a `DataError` (a ValueError) naming the file, the line or
row and the field: `chat.jsonl, line 3: messages[1].content: expected a string, got 4`. Non-UTF-8 text
or a binary file under a text suffix, invalid JSON, a record that is not an object, a file pyarrow
cannot read, a damaged .gz/.zst, a Hub id that does not load: never a traceback from json, pyarrow or
datasets. `iter_records(..., on_error=errors.append)` passes on the errors of single records (invalid
JSON on one line, a short CSV row) and reads on; a file that cannot be read at all still raises.

Why our own readers beside `datasets` (which reads Hub ids and saved folders here): on 100,000 rows of
two columns (an int, ~350 characters of text; 35 MB of JSONL), best of 2 on this 2-core CPU with
datasets 5.2 and pyarrow 26, `datasets.load_dataset` took 2.9 s for the JSONL and 2.5 s for the
parquet file (streaming; 2.9 / 2.8 s building its arrow cache), against 0.26 s for json.loads per line
and 0.11 s for pyarrow record batches. `iter_records` adds up to ~20% to those (the `Where` of each
row: 1.92 s against 1.59 s for the JSONL, 0.19 s against 0.18 s for the parquet file in a rerun on the
machine under load). On CSV `datasets` was faster (0.36 s against 0.54 s for the csv module), but it
infers types (an answer "007" becomes the integer 7) and its errors carry no line number; the csv
module keeps every value as written and says which line is bad. A saved folder read through
`datasets` in arrow batches took 0.05 s (row by row: 3.4 s).

This module is the lowest layer (it imports nothing of nanoseek); pyarrow, zstandard and datasets
are imported only when a source needs them.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

SUFFIXES = tuple(
    f"{base}{compression}"
    for base in (".jsonl", ".json", ".csv", ".tsv", ".txt")
    for compression in ("", ".gz", ".zst")
) + (".parquet", ".arrow")
CORPUS_ONLY = (".txt", ".txt.gz", ".txt.zst")  # plain text: documents for a corpus, no fields
TXT_SEPARATOR = "<|endoftext|>"
HUB_PREFIX = "hf://"
JSON_WRAPPERS = ("data", "rows", "records", "examples", "instances")  # keys a .json's list may sit under
BATCH_ROWS = 1024  # rows per record batch of the columnar readers
_HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?::(?P<config>[\w.-]+))?(?:@(?P<split>[\w.-]+))?")


class Where(str):
    """Where a record came from: a string ("a.jsonl:3", "b.parquet, row 7", "hf://org/x[train]:5") that
    also carries `path`, `record` (1-based) and `unit` ("line", "row" or "record"), so that
    `DataError(where, None, field, problem)` names all three."""

    def __new__(cls, path: str, record: int | None = None, unit: str = "line"):
        if record is None:
            text = path
        elif unit == "line" or path.startswith(HUB_PREFIX):
            text = f"{path}:{record}"
        else:
            text = f"{path}, {unit} {record}"
        return _where(cls, text, path, record, unit)

    @property
    def path(self) -> str:
        return self._at[0]

    @property
    def record(self) -> int | None:
        return self._at[1]

    @property
    def unit(self) -> str:
        return self._at[2]


def _where(cls, text: str, path: str, record: int | None, unit: str) -> Where:
    self = str.__new__(cls, text)
    self._at = (path, record, unit)  # one attribute, not three: this runs once per record
    return self


def _numbered(path: str | Path, unit: str) -> Callable[[int], Where]:
    """A fast Where(path, n, unit) for the records of one source."""
    path = str(path)
    prefix = f"{path}:" if unit == "line" or path.startswith(HUB_PREFIX) else f"{path}, {unit} "
    return lambda n: _where(Where, f"{prefix}{n}", path, n, unit)


class DataError(ValueError):
    """A data file or record that cannot be used: `path`, `record` (1-based line, row or record number, or
    None for the whole file), `field` (or None) and `problem` (what is wrong, what was expected). One line:
    `<path>, line 3: <field>: <problem>` ("row 3" for parquet/arrow/Hub rows, "record 3" for the objects
    of a JSON list). `path` may be a `Where` from `iter_records`: it brings the record and its unit.
    `line` is the same as `record` (its older name)."""

    def __init__(
        self,
        path: str | Path,
        record: int | None,
        field: str | None,
        problem: str,
        *,
        unit: str | None = None,
    ):
        if isinstance(path, Where):
            if record is None:
                record, unit = path.record, unit or path.unit
            path = path.path
        self.path, self.record, self.field, self.problem = str(path), record, field, problem
        self.unit = unit or "line"
        where = self.path if record is None else f"{self.path}, {self.unit} {record}"
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")

    @property
    def line(self) -> int | None:
        return self.record

    def __reduce__(self):  # picklable across processes, unit included
        args = (self.path, self.record, self.field, self.problem)
        return functools.partial(DataError, unit=self.unit), args


# ----------------------------------------------------------------------------------- sources


def suffix_of(path: str | Path) -> str | None:
    """The supported suffix `path` ends with (".jsonl.gz", ".parquet", ...), or None."""
    name = Path(path).name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def is_saved_dataset(folder: Path) -> bool:
    """A folder written by `datasets`' save_to_disk (a Dataset or a DatasetDict)."""
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    )


def is_hub_id(text: str) -> bool:
    """`text` names a Hub dataset rather than a local path (see the module docstring)."""
    if text.startswith(HUB_PREFIX):
        return True
    if not _HUB_ID.fullmatch(text) or Path(text).exists() or suffix_of(text.split(":")[0].split("@")[0]):
        return False
    return not Path(text.split("/")[0]).is_dir()


def parse_hub_id(text: str) -> tuple[str, str | None, str | None]:
    """(repo, config, split) of "org/name[:config][@split]" (an "hf://" or "hf://datasets/" prefix is allowed)."""
    body = text.removeprefix(HUB_PREFIX).removeprefix("datasets/")
    match = _HUB_ID.fullmatch(body)
    if not match:
        raise DataError(
            text, None, None, "not a Hub dataset id; expected org/name, with an optional :config and @split"
        )
    return match["repo"], match["config"], match["split"]


def expand_sources(inputs: str | Path | Iterable[str | Path]) -> list[str]:
    """The sources `inputs` name: files (of a supported suffix), folders (their supported files,
    recursively, sorted; a `save_to_disk` folder as one source) and Hub ids, in order."""
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    sources: list[str] = []
    for item in map(str, items):
        path = Path(item)
        if is_hub_id(item):
            parse_hub_id(item)  # a DataError now for a malformed one
            sources.append(item)
        elif path.is_dir():
            found = [path] if is_saved_dataset(path) else sorted(_files_in(path))
            if not found:
                raise DataError(path, None, None, f"no data files in this folder (looked for {_names()})")
            sources += map(str, found)
        elif path.is_file():
            if suffix_of(path) is None:
                raise DataError(path, None, None, f"unsupported file type, expected one of {_names()}")
            sources.append(item)
        else:
            raise FileNotFoundError(f"no such file or directory: {item}")
    if not sources:
        raise FileNotFoundError("no data files given")
    return sources


def _files_in(folder: Path) -> Iterator[Path]:
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir():
            yield from [path] if is_saved_dataset(path) else _files_in(path)
        elif entry.is_file() and suffix_of(path):
            yield path


def _names() -> str:
    return " ".join(SUFFIXES)


# ----------------------------------------------------------------------------------- records

OnError = Callable[[DataError], None] | None


def iter_records(
    source: str | Path,
    *,
    split: str | None = None,
    columns: Iterable[str] | None = None,
    on_error: OnError = None,
) -> Iterator[tuple[Where, dict[str, Any]]]:
    """("where", row) for every record of `source` (a file, a folder, or a Hub id), streaming.

    `columns`: read only these fields (the columnar formats read nothing else; a columnar source with
    none of them is a DataError naming the first); rows of the other formats keep just those of them
    they have. `split`: of a Hub id without `@split`, of a saved DatasetDict, or the key of a .json's
    list. `on_error`: called with the DataError of a single bad record, which is then skipped (default:
    raised)."""
    text = str(source)
    columns = list(columns) if columns is not None else None
    path = Path(text)
    if is_hub_id(text):
        yield from _iter_hub(text, split, columns)
    elif path.is_dir():
        if is_saved_dataset(path):
            yield from _iter_saved(path, split, columns)
        else:
            for inner in expand_sources([path]):
                yield from iter_records(inner, split=split, columns=columns, on_error=on_error)
    elif not path.is_file():
        raise FileNotFoundError(f"no such file or directory: {text}")
    else:
        suffix = suffix_of(path)
        if suffix is None:
            raise DataError(path, None, None, f"unsupported file type, expected one of {_names()}")
        base, _, compression = suffix.partition(".")[2].partition(".")
        yield from _READERS[base](path, compression, split, columns, on_error)


def _fail(on_error: OnError, error: DataError) -> None:
    if on_error is None:
        raise error
    on_error(error)


def _project(row: dict, columns: list[str] | None) -> dict:
    return row if columns is None else {k: row[k] for k in columns if k in row}


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__


# ---- text (jsonl, json, csv, txt), optionally compressed


def _open_binary(path: Path, compression: str):
    if compression == "gz":
        import gzip

        return gzip.open(path, "rb")
    if compression == "zst":
        import zstandard

        raw = open(path, "rb")  # noqa: SIM115 (the decompressing reader closes it)
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    return open(path, "rb")


def _read_errors(compression: str) -> tuple[type[BaseException], ...]:
    """What a damaged .gz / .zst raises while it is read."""
    if compression == "zst":
        import zstandard

        return (OSError, EOFError, zstandard.ZstdError)
    return (OSError, EOFError, zlib.error)


def _damaged(path: Path, line: int, compression: str, error: BaseException) -> DataError:
    what = {"gz": "gzip", "zst": "Zstandard"}.get(compression, "the file")
    return DataError(path, line, None, f"cannot read {what} data ({_first_line(error)})")


def _not_utf8(path: Path, line: int, error: UnicodeDecodeError) -> DataError:
    problem = f"not UTF-8 text ({error.reason} at byte {error.start} of the line); is it a binary file?"
    return DataError(path, line, None, problem)


def _lines(path: Path, compression: str) -> Iterator[tuple[int, str]]:
    """(line number, text with its newline) of a text file, decoded strictly as UTF-8 (a BOM dropped)."""
    lineno = 0
    try:
        with _open_binary(path, compression) as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise _not_utf8(path, lineno, e) from None
                yield lineno, text.removeprefix("\ufeff") if lineno == 1 else text
    except _read_errors(compression) as e:
        raise _damaged(path, lineno + 1, compression, e) from None


def _parse_json_lines(path: Path, lines: Iterable[tuple[int, str]], columns, on_error) -> Iterator:
    where = _numbered(path, "line")
    for lineno, text in lines:
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            _fail(on_error, DataError(path, lineno, None, f"invalid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(row, dict):
            _fail(on_error, DataError(path, lineno, None, f"expected a JSON object, got {_json_type(row)}"))
            continue
        yield where(lineno), row if columns is None else _project(row, columns)


def _iter_jsonl(path: Path, compression: str, split, columns, on_error) -> Iterator:
    yield from _parse_json_lines(path, _lines(path, compression), columns, on_error)


def _iter_json(path: Path, compression: str, split, columns, on_error) -> Iterator:
    try:
        with _open_binary(path, compression) as f:
            raw = f.read()
    except _read_errors(compression) as e:
        raise _damaged(path, 1, compression, e) from None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, raw.count(b"\n", 0, e.start) + 1, e) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON lines under a .json name, as datasets' to_json writes them
            yield from _parse_json_lines(path, enumerate(text.splitlines(), 1), columns, on_error)
            return
        raise DataError(path, e.lineno, None, f"invalid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(data, dict):
        key = next((k for k in (split, *JSON_WRAPPERS) if k and isinstance(data.get(k), list)), None)
        data = data[key] if key else [data]
    if not isinstance(data, list):
        raise DataError(path, None, None, f"expected a list of objects, got {_json_type(data)}")
    for i, row in enumerate(data, 1):
        if not isinstance(row, dict):
            error = DataError(path, i, None, f"expected a JSON object, got {_json_type(row)}", unit="record")
            _fail(on_error, error)
            continue
        yield Where(str(path), i, "record"), _project(row, columns)


def _iter_csv(path: Path, compression: str, split, columns, on_error, delimiter: str = ",") -> Iterator:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long texts (reasoning traces) in one cell
    lines = _lines(path, compression)
    numbers: list[int] = []  # the line number of each line the csv reader took

    def texts():
        for lineno, text in lines:
            numbers.append(lineno)
            yield text

    reader, where = csv.reader(texts(), delimiter=delimiter), _numbered(path, "line")
    try:
        header = next(reader, None)
        if header is None:
            return
        start = len(numbers) + 1
        for values in reader:
            line, start = start, len(numbers) + 1
            if not values:
                continue
            if len(values) != len(header):
                problem = f"{len(values)} fields, but the header line has {len(header)}"
                _fail(on_error, DataError(path, line, None, problem))
                continue
            yield where(line), _project(dict(zip(header, values)), columns)
    except csv.Error as e:
        raise DataError(path, len(numbers), None, f"not {delimiter!r}-separated values ({e})") from None


def _iter_tsv(path: Path, compression: str, split, columns, on_error) -> Iterator:
    yield from _iter_csv(path, compression, split, columns, on_error, delimiter="\t")


def _iter_txt(path: Path, compression: str, split, columns, on_error) -> Iterator:
    parts: list[str] = []
    first = 1
    for lineno, text in _lines(path, compression):
        if text.rstrip("\r\n") == TXT_SEPARATOR:
            yield Where(str(path), first, "line"), {"text": "".join(parts)}
            parts, first = [], lineno + 1
        else:
            parts.append(text)
    yield Where(str(path), first, "line"), {"text": "".join(parts)}


# ---- columnar (parquet, arrow) and datasets' own (saved folders, the Hub)


def _wanted(path: str | Path, names: list[str], columns: list[str] | None) -> list[str] | None:
    if columns is None:
        return None
    wanted = [c for c in columns if c in names]
    if not wanted:
        raise DataError(path, None, columns[0], f"no such column (columns: {names})")
    return wanted


def _rows(name: str, batches: Iterator, what: str) -> Iterator:
    """("name, row N", row) of record batches; an arrow error midway names the row it reached."""
    import pyarrow as pa

    where, row = _numbered(name, "row"), 0
    try:
        for batch in batches:
            for values in batch.to_pylist():
                row += 1
                yield where(row), values
    except (pa.ArrowException, OSError) as e:
        raise DataError(name, row + 1, None, f"cannot read {what} ({_first_line(e)})", unit="row") from None


def _iter_parquet(path: Path, compression: str, split, columns, on_error) -> Iterator:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(path, None, None, f"not a parquet file pyarrow reads ({_first_line(e)})") from None
    wanted = _wanted(path, parquet.schema_arrow.names, columns)
    yield from _rows(
        str(path), parquet.iter_batches(batch_size=BATCH_ROWS, columns=wanted), "the parquet data"
    )


def _iter_arrow(path: Path, compression: str, split, columns, on_error) -> Iterator:
    import pyarrow as pa

    source = pa.memory_map(str(path))
    try:
        try:
            reader = pa.ipc.open_file(source)  # the IPC file format (pyarrow, polars, feather v2)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_stream(source)  # the stream format (datasets' cache and saved files)
            batches = iter(reader)
    except (pa.ArrowException, OSError) as e:
        source.close()
        raise DataError(path, None, None, f"not an Arrow IPC file pyarrow reads ({_first_line(e)})") from None
    with source:
        wanted = _wanted(path, reader.schema.names, columns)
        if wanted is not None:
            batches = (b.select(wanted) for b in batches)
        yield from _rows(str(path), batches, "the Arrow data")


def _import_datasets(name: str):
    try:
        import datasets
    except ImportError:
        raise DataError(
            name, None, None, "reading it needs the `datasets` package (pip install datasets)"
        ) from None
    return datasets


def _iter_saved(path: Path, split: str | None, columns) -> Iterator:
    datasets = _import_datasets(str(path))
    try:
        data = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises many kinds for a damaged folder
        raise DataError(path, None, None, f"not a folder datasets can load ({_first_line(e)})") from None
    name = str(path)
    if isinstance(data, datasets.DatasetDict):
        split = split or ("train" if "train" in data or len(data) != 1 else next(iter(data)))
        if split not in data:
            problem = f"no split {split!r} in this saved DatasetDict (splits: {list(data)}); name its folder"
            raise DataError(path, None, None, problem)
        data, name = data[split], f"{path}[{split}]"
    wanted = _wanted(name, data.column_names, columns)
    if wanted is not None:
        data = data.select_columns(wanted)
    yield from _rows(name, data.with_format("arrow").iter(batch_size=BATCH_ROWS), "the saved dataset")


def _iter_hub(text: str, split: str | None, columns) -> Iterator:
    repo, config, id_split = parse_hub_id(text)
    split = id_split or split or "train"
    name = f"{HUB_PREFIX}{repo}{':' + config if config else ''}[{split}]"
    datasets = _import_datasets(name)
    try:
        data = datasets.load_dataset(repo, config, split=split, streaming=True)
    except Exception as e:  # offline, no such dataset/config/split: datasets raises many kinds
        problem = f"cannot stream it from the Hugging Face Hub ({_first_line(e)}); no local file of that name either"
        raise DataError(name, None, None, problem) from None
    row = 0
    try:
        for row, values in enumerate(data, 1):
            yield Where(name, row, "row"), _project(dict(values), columns)
    except Exception as e:  # a connection lost or a bad shard midway
        raise DataError(name, row + 1, None, f"reading failed ({_first_line(e)})", unit="row") from None


_READERS = {
    "jsonl": _iter_jsonl,
    "json": _iter_json,
    "csv": _iter_csv,
    "tsv": _iter_tsv,
    "txt": _iter_txt,
    "parquet": _iter_parquet,
    "arrow": _iter_arrow,
}
