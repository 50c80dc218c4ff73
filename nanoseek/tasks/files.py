"""File-backed benchmarks: JSONL reading with errors that say where, and where the data comes from.

    class MyBench(FileTask):                  # see math_bench.py, mmlu.py, humaneval.py
        name, filenames, hub = "mybench", ("mybench.jsonl",), ("org/mybench", None)
        def parse_row(self, row, where): return Problem(...)

    MyBench(path="data/mybench.jsonl").problems("test")

Where the rows come from, first match wins:
1. `path` (from `get_task("name:/path/to/file.jsonl")`): a local .jsonl or .jsonl.gz file holding the
   test split;
2. the first of `filenames` found in `$NANOSEEK_BENCHMARKS_DIR` (test split);
3. the Hugging Face Hub (`hub` = dataset id and config) through the `datasets` package, imported only
   then; without it, or offline, a clear error says so.
A bad line raises `DataError` naming the file, the line and the field.
"""

import gzip
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nanoseek.tasks.base import Problem, Task

BENCHMARKS_DIR_ENV = "NANOSEEK_BENCHMARKS_DIR"


class DataError(ValueError):
    """A benchmark file has a bad line; the message names the file, the line and the field."""


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for each non-blank line of a .jsonl or .jsonl.gz file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON: {e}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def get_field(row: dict[str, Any], names: str | Sequence[str], where: str, types: tuple = (str,)) -> Any:
    """The first of `names` present in `row`, checked against `types`; `where` is "file:line"."""
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name in row:
            value = row[name]
            if not isinstance(value, types) or isinstance(value, bool) or value == "":
                wanted = " or ".join(t.__name__ for t in types)
                raise DataError(f"{where}: field {name!r} must be a non-empty {wanted}, got {value!r:.80}")
            return value
    raise DataError(f"{where}: missing field {' / '.join(repr(n) for n in names)}")


def load_hub_rows(dataset: str, config: str | None, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, row) from a Hugging Face Hub dataset; needs the `datasets` package and a network."""
    try:
        import datasets
    except ImportError:
        raise RuntimeError(
            f"loading {dataset!r} from the Hugging Face Hub needs the `datasets` package "
            "(pip install datasets); or give a local file as 'name:/path/to/file.jsonl'"
        ) from None
    for i, row in enumerate(datasets.load_dataset(dataset, config, split=split), 1):
        yield i, dict(row)


class FileTask(Task):
    """A benchmark whose rows come from a local JSONL file or the Hub (see the module docstring).

    Subclasses set `name`, `filenames` (default file names), `hub` ((dataset id, config) or None) and
    `hub_splits` (our split name -> the Hub's), and implement `parse_row`."""

    filenames: tuple[str, ...] = ()
    hub: tuple[str, str | None] | None = None
    hub_splits: dict[str, str] = {"test": "test"}

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None

    def parse_row(self, row: dict[str, Any], where: str) -> Problem:
        """One Problem from one row; `where` ("file:line") goes into every DataError."""
        raise NotImplementedError

    def local_file(self) -> Path | None:
        if self.path is not None:
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.name}: no such file: {self.path}")
            return self.path
        folder = os.environ.get(BENCHMARKS_DIR_ENV)
        for filename in self.filenames if folder else ():
            if (Path(folder) / filename).is_file():
                return Path(folder) / filename
        return None

    def rows(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """("where", row) for every row of `split`."""
        local = self.local_file()
        if local is not None:
            if split != "test":
                raise ValueError(f"{self.name}: {local} holds the test split; there is no {split!r} split")
            for lineno, row in read_jsonl(local):
                yield f"{local}:{lineno}", row
            return
        if self.hub is None or split not in self.hub_splits:
            raise ValueError(
                f"{self.name}: no data for split {split!r}; give a file as '{self.name}:/path/to/file.jsonl' "
                f"or put {self.filenames[0] if self.filenames else 'it'} in ${BENCHMARKS_DIR_ENV}"
            )
        dataset, config = self.hub
        for index, row in load_hub_rows(dataset, config, self.hub_splits[split]):
            yield f"hf://{dataset}[{self.hub_splits[split]}]:{index}", row

    def problems(self, split: str = "test", n: int | None = None) -> list[Problem]:
        out = []
        for where, row in self.rows(split):
            if n is not None and len(out) >= n:
                break
            out.append(self.parse_row(row, where))
        return out
