"""File-backed tasks: problems read from files, one file per split or one file with a held-out fraction.

    class MyBench(FileTask):                  # see math_bench.py, mmlu.py, humaneval.py, problems.py
        name, filenames, hub = "mybench", ("mybench.jsonl",), ("org/mybench", None)
        def parse_row(self, row, where): return Problem(...)

    MyBench(path="test.jsonl").problems("test")                       # "mybench:test.jsonl"
    MyBench(train="a.parquet", test="b.csv").problems("train")        # "mybench?train=a.parquet&test=b.csv"
    MyBench(path="all.jsonl", holdout=0.1, seed=0).problems("test")   # "mybench:all.jsonl?holdout=0.1&seed=0"

A file is anything `nanoseek.records.iter_records` reads: JSONL (.gz, .zst), JSON, CSV/TSV, parquet,
arrow, a folder of them, a `datasets` save_to_disk folder, or a Hub id ("openai/gsm8k:main@train").
Where a split's rows come from:
1. Files the user names. `path` (the spec's "name:/path/file.jsonl") and `test=` are the test split,
   `train=` the train split. A task given any file reads only the files it was given: a split without
   one is an error that says how to give it (never a silent fall-back to other data).
2. `holdout=f` (0 < f < 1) with `seed=s` splits ONE source in two: the file given (train= or the test
   file), or, when none is, the task's default train data (3.). The distinct problem texts (the prompt,
   whitespace collapsed: `prompt_key`) are ranked by sha256(f"{seed}:{key}"); the first
   round(f x distinct) of them (at least one, and at least one left) are the test split, every other
   problem is the train split, both in file order. So the split is deterministic, independent of row
   order, keeps duplicate rows on one side (the two splits never share a problem text), and a larger f
   with the same seed holds out a superset.
3. With no file: the first of a split's default file names (`filenames` for test, `train_filenames` for
   train) found in the data folders: test files in `$NANOSEEK_BENCHMARKS_DIR`; train files in
   `$NANOSEEK_TRAIN_DIR`, else `$NANOSEEK_BENCHMARKS_DIR/../train` (the layout of ../shared/data/:
   benchmarks/ and train/ side by side), else `$NANOSEEK_BENCHMARKS_DIR` itself;
4. else the Hugging Face Hub (`hub` = dataset id and config, `hub_splits` = our split -> the Hub's),
   streamed through `datasets`.
A bad row raises `nanoseek.records.DataError` naming the file, the record (line or row) and the field.
"""

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nanoseek.records import DataError, Where, is_hub_id, iter_records  # DataError, Where: re-exported
from nanoseek.tasks.base import Problem, Task, prompt_key

BENCHMARKS_DIR_ENV = "NANOSEEK_BENCHMARKS_DIR"
TRAIN_DIR_ENV = "NANOSEEK_TRAIN_DIR"
SPLITS = ("train", "test")


def get_field(row: dict[str, Any], names: str | Sequence[str], where: Where, types: tuple = (str,)) -> Any:
    """The first of `names` present in `row`, checked against `types` (non-empty, not a bool)."""
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name in row:
            value = row[name]
            if not isinstance(value, types) or isinstance(value, bool) or value == "":
                wanted = " or ".join(t.__name__ for t in types)
                raise DataError(where, None, name, f"must be a non-empty {wanted}, got {value!r:.80}")
            return value
    columns = ", ".join(map(repr, row)) or "none"
    raise DataError(where, None, " / ".join(names), f"missing (the record's fields: {columns})")


def data_dirs(split: str) -> list[Path]:
    """The folders searched for a split's default files (module docstring, 3.)."""
    bench = os.environ.get(BENCHMARKS_DIR_ENV)
    if split == "test":
        return [Path(bench)] if bench else []
    dirs = [os.environ.get(TRAIN_DIR_ENV), bench and str(Path(bench).parent / "train"), bench]
    return [Path(d) for d in dirs if d]


def held_out(problems: Sequence[Problem], fraction: float, seed: int) -> set[str]:
    """The prompt keys of the held-out (test) share of `problems` (module docstring, 2.)."""
    keys = list(dict.fromkeys(prompt_key(p) for p in problems))
    if len(keys) < 2:
        raise ValueError(f"holdout={fraction}: needs at least 2 distinct problems, found {len(keys)}")
    k = min(max(round(fraction * len(keys)), 1), len(keys) - 1)
    rank = sorted(keys, key=lambda key: hashlib.sha256(f"{seed}:{key}".encode()).digest())
    return set(rank[:k])


class FileTask(Task):
    """A task whose rows come from files or the Hub (see the module docstring).

    Subclasses set `name`, `filenames` (default test file names), `train_filenames`, `hub` ((dataset
    id, config) or None) and `hub_splits` (our split name -> the Hub's), and implement `parse_row`.
    A source is what `nanoseek.records.iter_records` reads: a file, a folder, or a Hub id."""

    filenames: tuple[str, ...] = ()
    train_filenames: tuple[str, ...] = ()
    hub: tuple[str, str | None] | None = None
    hub_splits: dict[str, str] = {"test": "test"}

    def __init__(
        self,
        path: str | Path | None = None,
        train: str | Path | None = None,
        test: str | Path | None = None,
        holdout: float = 0.0,
        seed: int = 0,
    ):
        if path is not None and test is not None:
            raise ValueError(f"{self.name}: two test files ({path} and test={test}); give one")
        test = path if path is not None else test
        self.files = {split: str(f) for split, f in (("train", train), ("test", test)) if f is not None}
        self.path = Path(self.files["test"]) if "test" in self.files else None
        if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 <= holdout < 1:
            raise ValueError(f"{self.name}: holdout={holdout!r} must be a fraction in (0, 1)")
        if holdout and len(self.files) == 2:
            raise ValueError(
                f"{self.name}: holdout splits one file, and both train= and test= are given; "
                "give one file with holdout=, or two files without it"
            )
        self.holdout, self.seed = float(holdout), seed
        self._holdout_problems: list[Problem] | None = None

    def parse_row(self, row: dict[str, Any], where: Where) -> Problem:
        """One Problem from one row; `where` names the file and record in every DataError
        (`DataError(where, None, field, problem)`)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------- where rows come from

    def default_file(self, split: str) -> Path | None:
        """The first default file of `split` found in the data folders."""
        names = self.train_filenames if split == "train" else self.filenames
        for folder in data_dirs(split):
            for filename in names:
                if (folder / filename).is_file():
                    return folder / filename
        return None

    def source(self, split: str) -> str | None:
        """The source `split` is read from whole (a file, folder or Hub id), or None where there is none."""
        if split not in SPLITS:
            raise ValueError(f"{self.name}: unknown split {split!r} (train or test)")
        if self.files:
            return self.files.get(split)
        local = self.default_file(split)
        if local is not None:
            return str(local)
        if self.hub is None or split not in self.hub_splits:
            return None
        dataset, config = self.hub
        return f"hf://{dataset}{':' + config if config else ''}@{self.hub_splits[split]}"

    def holdout_source(self) -> str | None:
        """The one source that `holdout` splits: the file given, else the default train data."""
        return next(iter(self.files.values())) if self.files else self.source("train")

    def split_source(self, split: str) -> str:
        """Where `split` comes from, in words; equal strings mean the same problems (the train/eval check)."""
        if self.holdout:
            part = "held-out" if split == "test" else "remaining"
            where = self.describe(self.holdout_source())
            return f"{where} ({part} part of holdout={self.holdout:g}, seed={self.seed})"
        return self.describe(self.source(split))

    def describe(self, source: str | None) -> str:
        if source is None:
            return f"{self.name}: no data"
        return source if is_hub_id(source) else str(Path(source).resolve())

    def missing(self, split: str) -> ValueError:
        """The error for a split with no data, saying how to give it."""
        n = self.name
        if self.files:
            given = ", ".join(f"{s}={f}" for s, f in self.files.items())
            return ValueError(
                f"{n}: no {split} split: only {given} was given. Give both files, as "
                f"'{n}?train=TRAIN.jsonl&test=TEST.jsonl', or hold out a fraction of one file, as "
                f"'{n}:FILE.jsonl?holdout=0.1&seed=0'"
            )
        names = self.train_filenames if split == "train" else self.filenames
        if not names and not (self.hub and split in self.hub_splits):
            return ValueError(
                f"{n} has no {split} split of its own; give one as '{n}?{split}=FILE.jsonl', or hold out "
                f"a fraction of one file: '{n}:FILE.jsonl?holdout=0.1&seed=0'"
            )
        env = (
            BENCHMARKS_DIR_ENV if split == "test" else f"{TRAIN_DIR_ENV} (or ${BENCHMARKS_DIR_ENV}/../train)"
        )
        put = f", or put {names[0]} in ${env}" if names else ""
        return ValueError(f"{n}: no data for the {split} split; give a file as '{n}?{split}=FILE.jsonl'{put}")

    def read(self, source: str) -> Iterator[tuple[Where, dict[str, Any]]]:
        """(where, row) for every row of a source (`nanoseek.records.iter_records`)."""
        if not is_hub_id(source) and not Path(source).exists():
            raise FileNotFoundError(f"{self.name}: no such file: {source}")
        yield from iter_records(source)

    def rows(self, split: str) -> Iterator[tuple[Where, dict[str, Any]]]:
        """(where, row) for every row of `split` read whole from its source (not for holdout)."""
        source = self.source(split)
        if source is None:
            raise self.missing(split)
        yield from self.read(source)

    # ------------------------------------------------------------------------- problems

    def problems(self, split: str = "test", n: int | None = None) -> list[Problem]:
        if self.holdout:
            return self.holdout_problems(split)[:n]
        out = []
        for where, row in self.rows(split):
            if n is not None and len(out) >= n:
                break
            out.append(self.parse_row(row, where))
        return out

    def holdout_problems(self, split: str) -> list[Problem]:
        if split not in SPLITS:
            raise ValueError(f"{self.name}: unknown split {split!r} (train or test)")
        if self._holdout_problems is None:
            source = self.holdout_source()
            if source is None:
                raise self.missing("train")
            self._holdout_problems = [self.parse_row(row, where) for where, row in self.read(source)]
        test = held_out(self._holdout_problems, self.holdout, self.seed)
        return [p for p in self._holdout_problems if (prompt_key(p) in test) == (split == "test")]
