"""Markdown tables for the reports every stage writes (report.md of pretrain, sft, grpo, eval, distill
and the speedrun): one writer, below every layer, so they all look alike.

    table(["task", "pass@1"], [["gsm8k", "81.2"], ["math500", "40.0"]])
    table(["", ""], [("steps", "200"), ("tokens", "1.2M")])        # a key-value table: empty header
    percent(0.8125), percent(None)                                  # "81.2%", "n/a"

This module imports nothing.
"""

from __future__ import annotations

from collections.abc import Sequence


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table with a header row, every cell as given (empty cells stay empty)."""
    lines = [_row(head), "|" + "---|" * len(head), *map(_row, rows)]
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[str]) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def percent(x: float | None, unit: str = "%") -> str:
    """A share as a percentage with one decimal; "n/a" for None (a metric over nothing)."""
    return "n/a" if x is None else f"{100 * x:.1f}{unit}"
