"""The run directory's human-facing outputs: metrics.jsonl, loss / learning-rate plots and report.md.

    metrics = MetricsLog(run_dir / "metrics.jsonl")
    metrics.log({"type": "train", "step": 1, "loss": 5.2, "lr": 3e-4, ...})
    plot_metrics(read_metrics(run_dir / "metrics.jsonl"), run_dir)    # loss.png, lr.png
    write_report(run_dir, title=..., sections={...})                   # report.md

metrics.jsonl holds one JSON object per line: `type` "train" (every step), "eval" (validation) or
"sample" (generations), each with its `step`. On resume, lines after the resumed step are dropped,
so the file reads as one uninterrupted run. Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nanoseek.markdown import table
from nanoseek.train.cost import cost_markdown


class MetricsLog:
    """Appends JSON lines (only where `enabled`: the main process)."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._file = open(self.path, "a", buffering=1) if enabled else None  # noqa: SIM115

    def log(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def truncate_metrics(path: str | Path, after_step: int) -> None:
    """Drop records with step > after_step (the part of an interrupted run that a resume redoes)."""
    path = Path(path)
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and _step(line) <= after_step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62  # a torn last line from a crash: drop it


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    """Lay out, write and close a figure; returns its path."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def plot_metrics(records: list[dict], out_dir: str | Path) -> list[Path]:
    """loss.png (train loss, and validation loss if any) and lr.png; returns the files written."""
    plt = pyplot()

    out_dir = Path(out_dir)
    train = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval" and r.get("val_loss") is not None]
    if not train:
        return []
    written = []

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
    if evals:
        ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(save_figure(fig, out_dir / "loss.png"))

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot([r["step"] for r in train], [r["lr"] for r in train])
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    written.append(save_figure(fig, out_dir / "lr.png"))
    return written


def write_report(
    run_dir: str | Path,
    title: str,
    command: str,
    overview: list[tuple[str, str]],
    results: list[tuple[str, str]],
    samples: list[dict],
    cost: dict,
    notes: list[str] = (),
) -> Path:
    """report.md: what ran, what it reached, what it produced and what it cost."""
    run_dir = Path(run_dir)
    parts = [f"# {title}\n", f"```\n{command}\n```\n", "## Run\n", table(["", ""], overview)]
    if notes:
        parts += ["", *[f"- {n}" for n in notes], ""]
    parts += ["## Results\n", table(["", ""], results)]
    if (run_dir / "loss.png").is_file():
        parts += ["\n![loss](loss.png)\n", "![learning rate](lr.png)\n"]
    if samples:
        parts.append("## Samples (greedy, final model)\n")
        for row in samples:
            parts.append(f"**{row['prompt']}**\n")
            if "content" in row:
                parts.append(f"- reasoning_content: `{row['reasoning_content']!r}`")
                parts.append(f"- content: `{row['content']!r}`\n")
            else:
                parts.append(f"```\n{row['completion']}\n```\n")
    parts += ["## Cost\n", cost_markdown(cost)]
    path = run_dir / "report.md"
    path.write_text("\n".join(parts))
    return path
