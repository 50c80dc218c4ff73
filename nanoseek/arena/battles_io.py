"""Battle records in the public arena-human-preference format: read and write JSON, JSONL, parquet.

A record is a dict with the fields of LMSYS's public arena data:

    model_a, model_b      str, two different models
    winner                "model_a" | "model_b" | "tie" | "tie (bothbad)"
    conversation_a/_b     [{"role": "user" | "assistant" | ..., "content": str}, ...]   (default [])
    turn                  int >= 0, number of user turns     (default: counted from conversation_a)
    anony                 bool, identities hidden while voting   (default True)
    language              str                                     (default "")
    tstamp                float unix time or None                 (default None)

    records = read_battles("battles.jsonl")                 # or .json (a list) or .parquet
    write_battles(store.battles(), "battles.parquet")       # Mappings or objects with .to_record()

Reading validates every record and drops fields not listed above. A bad record raises
`BattleFormatError` naming the file, the place (JSON / JSONL: 1-based line where the record starts;
parquet: 0-based row) and the field, e.g. `b.jsonl: line 7: field 'winner': expected one of ...`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
FIELDS = ("model_a", "model_b", "winner", "conversation_a", "conversation_b", "turn", "anony", "language")
FIELDS += ("tstamp",)
FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


class BattleFormatError(ValueError):
    """A battle record or file that does not follow the format."""


# ----------------------------------------------------------------------------- validation


def _bad(where: str, field: str, problem: str) -> BattleFormatError:
    return BattleFormatError(f"{where}: field {field!r}: {problem}")


def _conversation(value: Any, where: str, field: str) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise _bad(where, field, f"expected a list of {{role, content}} messages, got {type(value).__name__}")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise _bad(
                where, f"{field}[{i}]", f"expected a {{role, content}} object, got {type(message).__name__}"
            )
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise _bad(where, f"{field}[{i}].{key}", f"expected a string, got {message.get(key)!r:.60}")
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def validate_record(record: Any, where: str = "record") -> dict[str, Any]:
    """Check one record and return it normalised (only FIELDS, defaults filled in).
    `where` prefixes error messages, e.g. "battles.jsonl: line 7"."""
    if not isinstance(record, Mapping):
        raise BattleFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    out: dict[str, Any] = {}
    for field in ("model_a", "model_b"):
        value = record.get(field)
        if not isinstance(value, str) or not value:
            raise _bad(where, field, f"expected a non-empty model name, got {value!r:.60}")
        out[field] = value
    if out["model_a"] == out["model_b"]:
        raise _bad(where, "model_b", f"same model as model_a ({out['model_a']!r})")
    if record.get("winner") not in WINNERS:
        raise _bad(where, "winner", f"expected one of {list(WINNERS)}, got {record.get('winner')!r:.60}")
    out["winner"] = record["winner"]
    out["conversation_a"] = _conversation(record.get("conversation_a"), where, "conversation_a")
    out["conversation_b"] = _conversation(record.get("conversation_b"), where, "conversation_b")
    turn = record.get("turn")
    if turn is None:
        turn = sum(m["role"] == "user" for m in out["conversation_a"])
    if isinstance(turn, bool) or not isinstance(turn, int) or turn < 0:
        raise _bad(where, "turn", f"expected an integer >= 0, got {turn!r:.60}")
    out["turn"] = turn
    anony = record.get("anony", True)
    if not isinstance(anony, bool):
        raise _bad(where, "anony", f"expected true or false, got {anony!r:.60}")
    out["anony"] = anony
    language = record.get("language") or ""
    if not isinstance(language, str):
        raise _bad(where, "language", f"expected a string, got {language!r:.60}")
    out["language"] = language
    tstamp = record.get("tstamp")
    if tstamp is not None and (isinstance(tstamp, bool) or not isinstance(tstamp, (int, float))):
        raise _bad(where, "tstamp", f"expected a unix time (number) or null, got {tstamp!r:.60}")
    if tstamp is not None and not math.isfinite(tstamp):
        raise _bad(where, "tstamp", f"expected a finite number, got {tstamp!r}")
    out["tstamp"] = None if tstamp is None else float(tstamp)
    return out


def as_record(battle: Any) -> Any:
    """A Mapping as is, or `battle.to_record()` (e.g. `store.Battle`)."""
    return battle if isinstance(battle, Mapping) else battle.to_record()


# ----------------------------------------------------------------------------- reading


def _format(path: Path, fmt: str | None) -> str:
    fmt = fmt or FORMATS.get(path.suffix.lower())
    if fmt not in ("json", "jsonl", "parquet"):
        raise BattleFormatError(
            f"{path}: unknown format; use a .json, .jsonl or .parquet file (or format=...)"
        )
    return fmt


def _json_list(text: str, path: Path) -> Iterator[tuple[Any, int]]:
    """Yield (element, 1-based line where it starts) of a top-level JSON list."""
    decoder, ws, i, line, counted = json.JSONDecoder(), " \t\r\n", 0, 1, 0

    def skip(j: int) -> int:
        while j < len(text) and text[j] in ws:
            j += 1
        return j

    def error(pos: int, msg: str) -> BattleFormatError:
        return BattleFormatError(f"{path}: line {text.count(chr(10), 0, pos) + 1}: {msg}")

    i = skip(0)
    if i >= len(text) or text[i] != "[":
        raise error(i, "expected a JSON list of battle records")
    i = skip(i + 1)
    if i < len(text) and text[i] == "]":
        end = i + 1
    else:
        while True:
            try:
                element, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError as err:
                raise error(err.pos, f"invalid JSON: {err.msg}") from err
            line, counted = line + text.count("\n", counted, i), i
            yield element, line
            i = skip(end)
            if i < len(text) and text[i] == ",":
                i = skip(i + 1)
                continue
            if i < len(text) and text[i] == "]":
                end = i + 1
                break
            raise error(i, "expected ',' or ']' after a record")
    if skip(end) != len(text):
        raise error(skip(end), "unexpected data after the JSON list")


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    for field in ("model_a", "model_b", "winner"):
        if field not in names:
            raise BattleFormatError(f"{path}: field {field!r}: column missing")
    table = pq.read_table(path, columns=[f for f in FIELDS if f in names])
    return [validate_record(row, f"{path}: row {i}") for i, row in enumerate(table.to_pylist())]


def read_battles(path: str | Path, format: str | None = None) -> list[dict[str, Any]]:
    """Read and validate battle records from a .json (list), .jsonl or .parquet file."""
    path = Path(path)
    fmt = _format(path, format)
    if fmt == "parquet":
        return _read_parquet(path)
    text = path.read_text(encoding="utf-8")
    if fmt == "json":
        return [validate_record(rec, f"{path}: line {line}") for rec, line in _json_list(text, path)]
    records = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise BattleFormatError(f"{path}: line {number}: invalid JSON: {err.msg}") from err
        records.append(validate_record(record, f"{path}: line {number}"))
    return records


# ----------------------------------------------------------------------------- writing


def _parquet_schema() -> Any:
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema(
        [
            ("model_a", pa.string()),
            ("model_b", pa.string()),
            ("winner", pa.string()),
            ("conversation_a", pa.list_(message)),
            ("conversation_b", pa.list_(message)),
            ("turn", pa.int64()),
            ("anony", pa.bool_()),
            ("language", pa.string()),
            ("tstamp", pa.float64()),
        ]
    )


def write_battles(battles: Iterable[Any], path: str | Path, format: str | None = None) -> Path:
    """Validate and write battle records (Mappings or objects with `.to_record()`) to .json/.jsonl/.parquet.

    Errors name the 0-based record index. JSON is written one record per line inside the list."""
    path = Path(path)
    fmt = _format(path, format)
    records = [validate_record(as_record(b), f"record {i}") for i, b in enumerate(battles)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records, schema=_parquet_schema()), path)
    elif fmt == "json":
        lines = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)
        path.write_text(f"[\n{lines}\n]\n" if records else "[]\n", encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path
