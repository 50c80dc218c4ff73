"""`nanoseek eval --compare A B`: whether two evals over the same problems differ beyond noise.

    comparison = compare_runs("runs/eval/sft", "runs/eval/grpo")   # per task: B - A and its interval
    print(compare_table(comparison))

A and B are results of earlier `nanoseek eval` runs: run directories (their problems.csv; for runs
written before it existed, their samples.jsonl, or seed-*/samples.jsonl of a multi-seed run) or a
problems.csv / samples.jsonl file itself. Each problem's pass rate is its correct samples over its
samples (all seeds pooled), so two runs with different k or seeds compare fine.

The comparison is paired over problems (`nanoseek.eval.stats.paired_difference`): per problem the
difference of the two pass rates, its mean over problems, and the bootstrap interval of that mean
with the same problems drawn for both runs. "Beyond noise" means the 95% interval excludes 0. Tasks
both results hold are compared; a task whose problem sets differ is refused (a paired comparison
needs the same problems), naming problems only one side has.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from nanoseek.eval.stats import RESAMPLES, paired_difference
from nanoseek.markdown import table

Counts = dict[str, dict[str, list[int]]]  # task -> problem id -> [correct, samples], in problem order


def _read_problems_csv(path: Path) -> Counts:
    out: Counts = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"task", "problem_id", "samples", "correct"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: not a problems.csv of nanoseek eval (no column {sorted(missing)})")
        for line, row in enumerate(reader, 2):
            try:
                counts = [int(row["correct"]), int(row["samples"])]
            except (TypeError, ValueError):
                raise ValueError(
                    f"{path}:{line}: correct and samples must be integers, got "
                    f"{row['correct']!r} and {row['samples']!r}"
                ) from None
            out.setdefault(row["task"], {})[row["problem_id"]] = counts
    return out


def _read_samples(paths: list[Path]) -> Counts:
    """Per-problem counts from samples.jsonl files (a torn last line of a killed run is left out)."""
    out: Counts = {}
    for path in paths:
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")[:-1]  # whole lines only
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                task, pid, correct = r["task"], r["problem_id"], bool(r["correct"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not a sample record of nanoseek eval ({e})") from None
            counts = out.setdefault(task, {}).setdefault(pid, [0, 0])
            counts[0] += correct
            counts[1] += 1
    return out


def load_result(path: str | Path) -> Counts:
    """task -> problem id -> [correct, samples] of an eval result (see the module docstring)."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".csv":
            return _read_problems_csv(path)
        if path.suffix == ".jsonl":
            return _read_samples([path])
        raise ValueError(f"{path}: expected a run directory, a problems.csv or a samples.jsonl")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such eval result (a run directory or its problems.csv)")
    if (path / "problems.csv").is_file():
        return _read_problems_csv(path / "problems.csv")
    samples = [path / "samples.jsonl"] if (path / "samples.jsonl").is_file() else []
    samples = samples or sorted(path.glob("seed-*/samples.jsonl"))
    if not samples:
        raise FileNotFoundError(f"{path}: no eval results here (no problems.csv or samples.jsonl)")
    return _read_samples(samples)


def _examples(ids: set[str]) -> str:
    shown = sorted(ids)[:3]
    return ", ".join(shown) + (", ..." if len(ids) > 3 else "")


def compare_runs(a: str | Path, b: str | Path, resamples: int = RESAMPLES) -> dict[str, Any]:
    """{"tasks": {task: paired_difference of the pass rates, B - A}, "only_a": [...], "only_b": [...]}."""
    ra, rb = load_result(a), load_result(b)
    common = [t for t in ra if t in rb]
    if not common:
        raise ValueError(f"{a} and {b} share no task ({sorted(ra)} against {sorted(rb)}): nothing to compare")
    tasks = {}
    for task in common:
        ids_a, ids_b = set(ra[task]), set(rb[task])
        if ids_a != ids_b:
            only_a, only_b = ids_a - ids_b, ids_b - ids_a
            raise ValueError(
                f"task {task!r}: the problem sets differ ({len(ids_a)} problems in {a}, {len(ids_b)} in {b}; "
                f"{len(only_a)} only in the first{': ' + _examples(only_a) if only_a else ''}, "
                f"{len(only_b)} only in the second{': ' + _examples(only_b) if only_b else ''}); "
                "a paired comparison needs the same problems"
            )
        order = list(ra[task])
        rates_a = [ra[task][p][0] / ra[task][p][1] for p in order]
        rates_b = [rb[task][p][0] / rb[task][p][1] for p in order]
        tasks[task] = paired_difference(rates_a, rates_b, resamples)
    return {
        "a": str(a),
        "b": str(b),
        "tasks": tasks,
        "only_a": [t for t in ra if t not in rb],
        "only_b": [t for t in rb if t not in ra],
    }


def compare_table(comparison: dict[str, Any]) -> str:
    """The comparison as a markdown table (percentage points), with what was not compared."""
    rows = []
    for task, d in comparison["tasks"].items():
        lo, hi = d["ci95"]
        rows.append(
            [task, str(d["problems"]), f"{100 * d['a']:.1f}", f"{100 * d['b']:.1f}",
             f"{100 * d['difference']:+.1f}", f"[{100 * lo:+.1f}, {100 * hi:+.1f}]",
             "**yes**" if d["beyond_noise"] else "no"]
        )  # fmt: skip
    head = ["task", "problems", "A pass@1", "B pass@1", "B - A", "95% CI", "beyond noise"]
    lines = [
        f"A: {comparison['a']}\nB: {comparison['b']}\n",
        table(head, rows),
        "Paired over problems: the mean of the per-problem differences of pass rates, with its 95% "
        "interval from a bootstrap over problems (the same problems drawn for both; nanoseek.eval.stats); "
        "beyond noise when the interval excludes 0. Points of pass@1.",
    ]
    for side, key in (("A", "only_a"), ("B", "only_b")):
        if comparison[key]:
            lines.append(f"Only in {side} (not compared): {', '.join(comparison[key])}.")
    return "\n".join(lines) + "\n"
