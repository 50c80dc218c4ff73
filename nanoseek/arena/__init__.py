"""Chatbot arena: battles and votes (SQLite), Bradley-Terry ratings with bootstrap CIs and style
control, import/export of the public battle format, and a leaderboard plot.

    from nanoseek.arena import ArenaStore, compute_leaderboard, read_battles
    store = ArenaStore("runs/arena/arena.db")
    board = compute_leaderboard(store.battles() + read_battles("public.jsonl"), num_bootstrap=100)
    print(board.to_text())

Modules: `store` (battles, votes), `ratings` (fits, leaderboard), `battles_io` (files), `plot`
(PNG; imported on first use of `plot_leaderboard` because matplotlib is slow to import).
The arena itself (imported from their modules, they load the engine and the web stack):
`contestants` (the contestants file, `Contestant`), `live` (web battles), `limits` (per-client rate
limits, client identity), `app` (FastAPI pages and API), `judges` (verifier, judge model), `headless`
(offline ranking), `cli` (`nanoseek arena`).
See docs/arena.md.
"""

from typing import Any

from nanoseek.arena.battles_io import FIELDS, WINNERS, BattleFormatError, read_battles, write_battles
from nanoseek.arena.ratings import (
    BootstrapResult,
    BradleyTerryFit,
    Leaderboard,
    LeaderboardRow,
    StyleRow,
    bootstrap_bradley_terry,
    compute_leaderboard,
    compute_ranks,
    conversation_style,
    fit_bradley_terry,
    online_elo,
    style_counts,
)
from nanoseek.arena.store import ArenaStore, Battle, VoteRejected

__all__ = [
    "FIELDS",
    "WINNERS",
    "ArenaStore",
    "Battle",
    "BattleFormatError",
    "BootstrapResult",
    "BradleyTerryFit",
    "Leaderboard",
    "LeaderboardRow",
    "StyleRow",
    "VoteRejected",
    "bootstrap_bradley_terry",
    "compute_leaderboard",
    "compute_ranks",
    "conversation_style",
    "fit_bradley_terry",
    "online_elo",
    "plot_leaderboard",
    "read_battles",
    "style_counts",
    "write_battles",
]


def __getattr__(name: str) -> Any:
    if name == "plot_leaderboard":
        from nanoseek.arena.plot import plot_leaderboard

        return plot_leaderboard
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
