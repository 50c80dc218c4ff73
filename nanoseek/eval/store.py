"""The crash-safe sample log of an eval run: an append-only JSONL file, fsync'd after every write.

    store = SampleStore("runs/eval/samples.jsonl")   # reads what is there, repairs a torn last line
    store.done                                       # {(task, problem_id, sample), ...} already scored
    store.append([record, ...])                      # written, flushed and fsync'd before it returns
    records = store.records()                        # one per (task, problem_id, sample), sorted

Resuming after a kill (even SIGKILL mid-write): the file holds whole lines, each a finished sample,
and possibly a torn last line without its newline. Opening the store truncates the file back to its
last newline, so the torn record is dropped (it is regenerated, with the same seed, by the resumed
run) and later appends start on a fresh line. A bad line anywhere else is corruption, not a crash,
and raises. If a record somehow appears twice, the first one counts, so no sample is counted twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Key = tuple[str, str, int]  # (task label, problem id, sample index)


def record_key(record: dict[str, Any]) -> Key:
    return record["task"], record["problem_id"], int(record["sample"])


class SampleStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: dict[Key, dict[str, Any]] = {}
        self.torn_bytes = 0  # size of the torn last line dropped when the store was opened
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
        if end < len(data):
            self.torn_bytes = len(data) - end
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        for lineno, line in enumerate(data[:end].split(b"\n")[:-1], 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = record_key(record)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(
                    f"{self.path}:{lineno}: not a sample record ({e}); the file is corrupt"
                ) from None
            self._records.setdefault(key, record)

    @property
    def done(self) -> set[Key]:
        return set(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records (new keys only) as whole lines and fsync before returning."""
        fresh = [r for r in records if record_key(r) not in self._records]
        if not fresh:
            return
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fresh)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        for r in fresh:
            self._records[record_key(r)] = r

    def records(self, task: str | None = None) -> list[dict[str, Any]]:
        """All records (of one task), sorted by (task, problem position, sample index)."""
        rows = [r for r in self._records.values() if task is None or r["task"] == task]
        return sorted(
            rows, key=lambda r: (r["task"], r.get("problem_index", 0), r["problem_id"], r["sample"])
        )
