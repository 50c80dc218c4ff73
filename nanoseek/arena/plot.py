"""Leaderboard plot: ratings with their bootstrap confidence intervals as a PNG (matplotlib, Agg).

    from nanoseek.arena.plot import plot_leaderboard
    plot_leaderboard(board, "runs/arena/leaderboard.png")

Uses matplotlib's object API with the Agg canvas directly (no pyplot), so it never touches the
process-wide backend and works in servers and headless runs. Error bars are clipped at 0 (matplotlib
refuses negative ones; a board's interval contains its rating, but a board built by hand, or read
back from JSON, may be off by a rounding error), and a model without an interval gets none.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nanoseek.arena.ratings import Leaderboard


def plot_leaderboard(board: Leaderboard, path: str | Path, title: str | None = None, dpi: int = 120) -> Path:
    """Write a horizontal error-bar chart of `board` (best model on top) to `path` (PNG)."""
    rows = sorted(board.rows, key=lambda r: r.rating)  # ascending: barh draws bottom-up, best ends on top
    ratings = [r.rating for r in rows]
    below = [0.0 if r.ci_low is None else max(0.0, r.rating - r.ci_low) for r in rows]
    above = [0.0 if r.ci_high is None else max(0.0, r.ci_high - r.rating) for r in rows]
    fig = Figure(figsize=(7.0, 1.2 + 0.35 * len(rows)), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.errorbar(ratings, range(len(rows)), xerr=[below, above], fmt="o", color="tab:blue", capsize=3)
    ax.set_yticks(range(len(rows)), [f"{r.rank}. {r.model}" for r in rows])
    kind = "style-controlled rating" if board.style_control else "rating"
    ax.set_xlabel(f"Bradley-Terry {kind} ({100 * board.confidence:g}% bootstrap CI; {board.anchor})")
    ax.set_title(title or f"Arena leaderboard ({board.num_battles} battles)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
