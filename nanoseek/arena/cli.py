"""`nanoseek arena`: serve the web arena, run headless battles, print the leaderboard, move battles around.

    nanoseek arena serve --contestants arena.toml [--db arena.db] [--host 127.0.0.1 --port 8001]
        [--battles-per-minute 20 --votes-per-minute 30 --max-active-battles 8 --trusted-proxy IP]
        [--allowed-host NAME --header-timeout 10 --body-timeout 60 --max-connections 512]
    nanoseek arena headless --contestants arena.toml --task arithmetic --battles 200 [--judge NAME] [--db arena.db]
    nanoseek arena leaderboard battles.jsonl|arena.db [--style-control] [--bootstrap 100] [--plot board.png]
    nanoseek arena export arena.db battles.jsonl          # .json, .jsonl or .parquet
    nanoseek arena import battles.jsonl arena.db

The contestants file is described in `contestants.py` (and docs/arena.md). `--task` takes an eval
task spec such as "arithmetic?digits=2"; without `--judge` the task's verifier votes, with it the
named entry of the contestants file (which then does not battle) compares the answers. `serve` runs
uvicorn over `nanoseek serve`'s connection guard (read deadlines, a connection cap) and answers only
requests addressed to --host, --allowed-host names and 127.0.0.1 / localhost / ::1 (DNS rebinding).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nanoseek.arena.battles_io import BattleFormatError, read_battles, write_battles
from nanoseek.arena.contestants import ContestantError, close_contestants, load_contestants, open_contestants
from nanoseek.arena.headless import ContestantFailed
from nanoseek.arena.limits import ArenaLimits
from nanoseek.arena.live import MAX_ACTIVE
from nanoseek.arena.ratings import compute_leaderboard
from nanoseek.arena.store import ArenaStore
from nanoseek.serve.cli import add_allowed_host_flag, allowed_hosts
from nanoseek.serve.connections import add_connection_flags

SQLITE_MAGIC = b"SQLite format 3\x00"


def is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def existing_store(path: str | Path) -> ArenaStore:
    """An ArenaStore on a database that must already exist (reading commands never create one)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such database")
    if not is_sqlite(path):
        raise ValueError(f"{path}: not an SQLite database")
    return ArenaStore(path)


def load_battles(path: str | Path) -> list[Any]:
    """Voted battles from an arena database or a battle file (.json, .jsonl, .parquet)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return existing_store(path).battles() if is_sqlite(path) else read_battles(path)


# ----------------------------------------------------------------------------- commands


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from nanoseek.arena.app import create_app
    from nanoseek.arena.live import LiveArena
    from nanoseek.serve.connections import uvicorn_config

    limits = serve_limits(args)  # before anything loads: a bad flag costs nothing
    if args.max_active_battles < 1:
        raise ValueError(f"--max-active-battles must be >= 1, got {args.max_active_battles}")
    specs = [s for s in load_contestants(args.contestants) if s.role == "contestant"]
    if len(specs) < 2:
        raise ContestantError(
            f"{args.contestants}: the arena needs at least two entries with role 'contestant'"
        )
    store = ArenaStore(args.db)
    contestants = open_contestants(specs)
    try:
        for contestant in contestants.values():
            contestant.start()
        live = LiveArena(contestants, store, seed=args.seed, max_active=args.max_active_battles)
        app = create_app(live, num_bootstrap=args.bootstrap, limits=limits)
        print(f"nanoseek arena: {len(contestants)} contestants, votes in {args.db}", file=sys.stderr)
        uvicorn.Server(uvicorn_config(app, limits=limits, **uvicorn_options(args))).run()
    finally:
        close_contestants(contestants)
    return 0


def serve_limits(args: argparse.Namespace) -> ArenaLimits:
    """The `serve` flags as ArenaLimits; a ValueError names the flag that is out of range."""
    try:
        return ArenaLimits(
            battles_per_minute=args.battles_per_minute,
            votes_per_minute=args.votes_per_minute,
            trusted_proxies=tuple(args.trusted_proxy),
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            max_connections=args.max_connections,
            allowed_hosts=tuple(allowed_hosts(args.host, args.allowed_host)),
        )
    except ValueError as err:  # "battles_per_minute must be ..." -> "--battles-per-minute must be ..."
        field, _, rest = str(err).partition(" ")
        flag = {"trusted_proxies": "--trusted-proxy", "allowed_hosts": "--allowed-host"}.get(field)
        raise ValueError(f"{flag or '--' + field.replace('_', '-')} {rest}") from None


def uvicorn_options(args: argparse.Namespace) -> dict[str, Any]:
    """uvicorn's settings for `serve`. proxy_headers=False: the app alone decides whose
    X-Forwarded-For to believe (`--trusted-proxy`); uvicorn's default believes 127.0.0.1's."""
    return {"host": args.host, "port": args.port, "log_level": "info", "proxy_headers": False}


def headless(args: argparse.Namespace) -> int:
    from nanoseek.arena.contestants import open_contestant
    from nanoseek.arena.headless import run_headless
    from nanoseek.arena.judges import Judge, ModelJudge, VerifierJudge
    from nanoseek.tasks import parse_task_spec

    specs = load_contestants(args.contestants)
    judge_spec = None
    if args.judge is not None:
        judge_spec = next((s for s in specs if s.name == args.judge), None)
        if judge_spec is None:
            names = ", ".join(s.name for s in specs)
            raise ContestantError(
                f"{args.contestants}: --judge {args.judge!r} is not an entry (entries: {names})"
            )
    fighters = [s for s in specs if s.role == "contestant" and s is not judge_spec]
    if len(fighters) < 2:
        raise ContestantError(f"{args.contestants}: headless battles need two contestants besides the judge")
    task = parse_task_spec(args.task).build()
    store = ArenaStore(args.db) if args.db else None
    contestants = open_contestants(fighters)
    judge_contestant = None
    try:
        judge_contestant = open_contestant(judge_spec) if judge_spec is not None else None
        judge: Judge = ModelJudge(judge_contestant) if judge_contestant is not None else VerifierJudge(task)
        result = run_headless(
            contestants,
            task,
            args.battles,
            judge,
            store=store,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=not args.quiet,
        )
    finally:
        close_contestants(contestants)
        if judge_contestant is not None:
            judge_contestant.close()
    print(f"{len(result.battles)} battles voted by {judge.name}", end="")
    print(f" ({result.unjudged} without a verdict, not counted)" if result.unjudged else "")
    if args.out:
        write_battles(result.battles, args.out)
        print(f"wrote {args.out}")
    if store is not None:
        print(f"stored in {args.db} ({store.counts()['votes']} votes in all)")
    if result.battles:
        board = compute_leaderboard(
            result.battles, style_control=args.style_control, num_bootstrap=args.bootstrap
        )
        print(board.to_text(), end="")
    return 0


def leaderboard(args: argparse.Namespace) -> int:
    battles = load_battles(args.battles)
    if not battles:
        print(f"{args.battles}: no voted battles yet")
        return 0
    board = compute_leaderboard(
        battles, style_control=args.style_control, num_bootstrap=args.bootstrap, seed=args.seed
    )
    print(board.to_markdown() if args.markdown else board.to_text(), end="")
    if args.plot:
        from nanoseek.arena.plot import plot_leaderboard

        print(f"wrote {plot_leaderboard(board, args.plot)}")
    return 0


def export(args: argparse.Namespace) -> int:
    battles = existing_store(args.db).battles()
    write_battles(battles, args.out)
    print(f"exported {len(battles)} voted battles to {args.out}")
    return 0


def import_(args: argparse.Namespace) -> int:
    records = read_battles(args.battles)
    count = ArenaStore(args.db).import_records(records)
    print(f"imported {count} battles into {args.db}")
    return 0


# ----------------------------------------------------------------------------- parsing


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nanoseek arena", description="Rank models by pairwise battles.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def rating_options(q: argparse.ArgumentParser) -> None:
        q.add_argument("--style-control", action="store_true", help="control ratings for length and markdown")
        q.add_argument("--bootstrap", type=int, default=100, metavar="N", help="bootstrap rounds for the CIs")

    q = sub.add_parser("serve", help="the web arena: battle page, voting, leaderboard")
    q.add_argument("--contestants", required=True, help="contestants file (.toml or .json)")
    q.add_argument("--db", default="arena.db", help="SQLite file for battles and votes (default arena.db)")
    q.add_argument("--host", default="127.0.0.1")
    q.add_argument("--port", type=int, default=8001)
    q.add_argument("--seed", type=int, default=None, help="seed for picking pairs (default: random)")
    q.add_argument("--bootstrap", type=int, default=100, metavar="N", help="bootstrap rounds for the CIs")
    rate = "per client per minute, bursts of N (default %(default)g; 0: no limit)"
    for flag, what in (("--battles-per-minute", "new battles"), ("--votes-per-minute", "vote attempts")):
        default = getattr(ArenaLimits(), flag[2:].replace("-", "_"))
        q.add_argument(flag, type=float, default=default, metavar="N", help=f"{what} {rate}")
    active = "battles generating at once, all clients together; more get 503 (default %(default)s)"
    q.add_argument("--max-active-battles", type=int, default=MAX_ACTIVE, metavar="N", help=active)
    q.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="IP",
        help="a reverse proxy (IP or network) whose X-Forwarded-For names the client; repeatable "
        "(default: none, the client is the remote address)",
    )
    add_allowed_host_flag(q)
    add_connection_flags(q)
    q.set_defaults(run=serve)

    q = sub.add_parser("headless", help="battles voted by a task's verifier or a judge model")
    q.add_argument("--contestants", required=True, help="contestants file (.toml or .json)")
    q.add_argument("--task", required=True, help='task spec, e.g. "arithmetic" or "arithmetic?digits=2"')
    q.add_argument("--battles", type=int, default=200, help="number of battles (default 200)")
    q.add_argument("--judge", default=None, metavar="NAME", help="entry of the contestants file that judges")
    q.add_argument("--db", default=None, help="also store the battles in this SQLite file")
    q.add_argument("--out", default=None, help="write the battles to this .json/.jsonl/.parquet file")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--batch-size", type=int, default=32, help="battles per round (answered together)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    rating_options(q)
    q.set_defaults(run=headless)

    q = sub.add_parser("leaderboard", help="ratings of the battles in a file or database")
    q.add_argument("battles", metavar="FILE_OR_DB", help="arena database or .json/.jsonl/.parquet battles")
    rating_options(q)
    q.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    q.add_argument("--markdown", action="store_true", help="a markdown table instead of plain text")
    q.add_argument("--plot", default=None, metavar="PNG", help="also write the leaderboard plot here")
    q.set_defaults(run=leaderboard)

    q = sub.add_parser("export", help="write a database's voted battles to a file")
    q.add_argument("db", metavar="DB")
    q.add_argument("out", metavar="OUT", help=".json, .jsonl or .parquet")
    q.set_defaults(run=export)

    q = sub.add_parser("import", help="add voted battles from a file to a database")
    q.add_argument("battles", metavar="IN", help=".json, .jsonl or .parquet")
    q.add_argument("db", metavar="DB")
    q.set_defaults(run=import_)
    return p


def arena_main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return args.run(args)
    except (
        ContestantError,
        ContestantFailed,
        BattleFormatError,
        FileNotFoundError,
        ValueError,
        KeyError,
    ) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"nanoseek arena: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(arena_main())
