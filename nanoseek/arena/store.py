"""Arena storage: battles and votes in one SQLite file (WAL mode), safe for many threads and processes.

    store = ArenaStore("runs/arena/arena.db")
    battle_id = store.create_battle("model-x", "model-y", conversation_a, conversation_b)
    battle = store.record_vote(battle_id, "model_a")     # reveals battle.model_a / battle.model_b
    leaderboard = compute_leaderboard(store.battles())    # voted battles -> ratings
    store.import_records(read_battles("public.jsonl"))    # voted battles from a file, one transaction

A battle may be created before its answers exist (the web arena stores the prompt first) and get
them with `set_conversations` while it is still open; a voted battle never changes.

A battle id is an unguessable server-issued token (`secrets.token_urlsafe`), so a client cannot
vote on a battle it was never shown. `record_vote` raises `VoteRejected` (with `.reason` one of
"unknown", "replay", "invalid_winner") for a forged id, a second vote on the same battle or a bad
winner. Exactly one vote per battle is ever stored, even with many writers racing: the vote is
inserted in a `BEGIN IMMEDIATE` transaction and `votes.battle_id` is UNIQUE, so a losing writer
gets an integrity error, which becomes a "replay" rejection.

Every thread (and every forked process) gets its own connection, opened on first use, so one
`ArenaStore` can be shared by threads and processes; the database must be a file, not ":memory:".
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanoseek.arena.battles_io import WINNERS, as_record, validate_record

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS battles (
    id             TEXT PRIMARY KEY,
    model_a        TEXT NOT NULL,
    model_b        TEXT NOT NULL,
    conversation_a TEXT NOT NULL,          -- JSON list of {{role, content}}: prompt(s) and answers
    conversation_b TEXT NOT NULL,
    turn           INTEGER NOT NULL,
    anony          INTEGER NOT NULL,
    language       TEXT NOT NULL,
    created        REAL NOT NULL,          -- unix time
    state          TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'voted'))
);
CREATE TABLE IF NOT EXISTS votes (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    battle_id TEXT NOT NULL UNIQUE REFERENCES battles(id),
    winner    TEXT NOT NULL CHECK (winner IN ({", ".join(repr(w) for w in WINNERS)})),
    tstamp    REAL NOT NULL,               -- unix time of the vote
    voter     TEXT,
    ip        TEXT
);
"""


def shown(value: Any, limit: int = 100) -> str:
    """`repr(value)` for an error message, cut to about `limit` characters: a message never echoes
    unbounded input (a 3 MB winner once came back in a 3 MB error)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} characters)"


class VoteRejected(Exception):
    """A vote that was not stored. `reason`: "unknown" (no such battle), "replay" (battle already
    voted) or "invalid_winner"."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Battle:
    """One battle as stored; `winner`/`tstamp`/`voter` are None until it is voted."""

    id: str
    model_a: str
    model_b: str
    conversation_a: list[dict[str, str]]
    conversation_b: list[dict[str, str]]
    turn: int
    anony: bool
    language: str
    created: float
    state: str
    winner: str | None = None
    tstamp: float | None = None
    voter: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The public arena-human-preference record (see `battles_io`)."""
        return {
            "model_a": self.model_a,
            "model_b": self.model_b,
            "winner": self.winner,
            "conversation_a": self.conversation_a,
            "conversation_b": self.conversation_b,
            "turn": self.turn,
            "anony": self.anony,
            "language": self.language,
            "tstamp": self.tstamp if self.tstamp is not None else self.created,
        }


_SELECT = """
SELECT b.id, b.model_a, b.model_b, b.conversation_a, b.conversation_b, b.turn, b.anony, b.language,
       b.created, b.state, v.winner, v.tstamp, v.voter
FROM battles b LEFT JOIN votes v ON v.battle_id = b.id
"""


def _messages(conversation: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in conversation]


def _battle(row: Sequence[Any]) -> Battle:
    """A row of `_SELECT` as a Battle (conversations parsed from JSON)."""
    conversations = json.loads(row[3]), json.loads(row[4])
    return Battle(*row[:3], *conversations, row[5], bool(row[6]), *row[7:])


def _dumps(conversation: Sequence[Mapping[str, str]]) -> str:
    return json.dumps(conversation, ensure_ascii=False)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (the write lock now, so a check-then-insert is atomic) ... COMMIT, or ROLLBACK."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


_INSERT_BATTLE = (
    "INSERT INTO battles (id, model_a, model_b, conversation_a, conversation_b, turn, anony, language, "
    "created, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class ArenaStore:
    """Battles and votes in the SQLite file at `path` (created with its tables if missing)."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 30_000) -> None:
        if str(path) == ":memory:":
            raise ValueError("ArenaStore needs a file path: every thread opens its own connection")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._inherited: list[sqlite3.Connection] = []
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block the writer
        conn.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use, and again in a forked child)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            if conn is not None:  # inherited through fork: never use (or close) it here
                self._inherited.append(conn)
            # isolation_level=None: autocommit; transactions are explicit BEGIN IMMEDIATE ... COMMIT.
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL, much faster commits
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        """Close the calling thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    def create_battle(
        self,
        model_a: str,
        model_b: str,
        conversation_a: Sequence[Mapping[str, str]],
        conversation_b: Sequence[Mapping[str, str]],
        *,
        anony: bool = True,
        language: str = "",
        turn: int | None = None,
    ) -> str:
        """Store a battle (both conversations: prompt and answer) and return its new unguessable id."""
        if not model_a or not model_b or model_a == model_b:
            raise ValueError(f"a battle needs two different models, got {model_a!r} and {model_b!r}")
        conv_a, conv_b = _messages(conversation_a), _messages(conversation_b)
        if turn is None:
            turn = sum(m["role"] == "user" for m in conv_a)
        battle_id = secrets.token_urlsafe(18)  # 144 random bits
        row = (model_a, model_b, _dumps(conv_a), _dumps(conv_b), int(turn), int(bool(anony)), language)
        self._conn().execute(_INSERT_BATTLE, (battle_id, *row, time.time(), "open"))
        return battle_id

    def record_vote(
        self, battle_id: str, winner: str, *, voter: str | None = None, ip: str | None = None
    ) -> Battle:
        """Store the one vote of a battle and return the battle with identities and winner revealed.

        Raises VoteRejected for an invalid winner, an unknown (forged) id, or an already-voted battle."""
        if winner not in WINNERS:
            raise VoteRejected(
                "invalid_winner", f"winner must be one of {list(WINNERS)}, got {shown(winner)}"
            )
        if not isinstance(battle_id, str) or not battle_id or len(battle_id) > 256:
            raise VoteRejected("unknown", "unknown battle id")
        conn = self._conn()
        with _transaction(conn):
            state = conn.execute("SELECT state FROM battles WHERE id = ?", (battle_id,)).fetchone()
            if state is None:
                raise VoteRejected("unknown", "unknown battle id")
            if state[0] != "open":
                raise VoteRejected("replay", "this battle has already been voted")
            try:
                conn.execute(
                    "INSERT INTO votes (battle_id, winner, tstamp, voter, ip) VALUES (?, ?, ?, ?, ?)",
                    (battle_id, winner, time.time(), voter, ip),
                )
            except sqlite3.IntegrityError as err:  # UNIQUE(battle_id): the backstop against replays
                raise VoteRejected("replay", "this battle has already been voted") from err
            conn.execute("UPDATE battles SET state = 'voted' WHERE id = ?", (battle_id,))
        return self.get_battle(battle_id)

    def set_conversations(
        self,
        battle_id: str,
        conversation_a: Sequence[Mapping[str, str]],
        conversation_b: Sequence[Mapping[str, str]],
    ) -> bool:
        """Replace both conversations of an open battle (a battle is created when its prompt arrives
        and gets its answers once they have streamed). Returns False if the battle is unknown or
        already voted: a voted battle never changes."""
        conv_a, conv_b = _messages(conversation_a), _messages(conversation_b)
        cursor = self._conn().execute(
            "UPDATE battles SET conversation_a = ?, conversation_b = ?, turn = ? WHERE id = ? AND state = 'open'",
            (_dumps(conv_a), _dumps(conv_b), sum(m["role"] == "user" for m in conv_a), battle_id),
        )
        return cursor.rowcount == 1

    def import_records(self, records: Iterable[Any]) -> int:
        """Store already-voted battles (public records, see `battles_io`; Mappings or `.to_record()`
        objects) with their winners and timestamps, all in one transaction; each gets a new id.
        Returns the number stored. A bad record raises `BattleFormatError` and stores nothing."""
        rows = [validate_record(as_record(r), f"record {i}") for i, r in enumerate(records)]
        conn = self._conn()
        with _transaction(conn):
            for r in rows:
                battle_id = secrets.token_urlsafe(18)
                tstamp = r["tstamp"] if r["tstamp"] is not None else time.time()
                conversations = _dumps(r["conversation_a"]), _dumps(r["conversation_b"])
                battle = (
                    r["model_a"],
                    r["model_b"],
                    *conversations,
                    r["turn"],
                    int(r["anony"]),
                    r["language"],
                )
                conn.execute(_INSERT_BATTLE, (battle_id, *battle, tstamp, "voted"))
                conn.execute(
                    "INSERT INTO votes (battle_id, winner, tstamp, voter) VALUES (?, ?, ?, 'import')",
                    (battle_id, r["winner"], tstamp),
                )
        return len(rows)

    def get_battle(self, battle_id: str) -> Battle | None:
        """The stored battle (None if unknown). Callers decide what to reveal before the vote."""
        conn = self._conn()
        row = conn.execute(_SELECT + "WHERE b.id = ?", (battle_id,)).fetchone()
        return None if row is None else _battle(row)

    def battles(self, voted_only: bool = True) -> list[Battle]:
        """Battles in vote order (then creation order), ready for `ratings` and `battles_io`."""
        where = "WHERE v.id IS NOT NULL " if voted_only else ""
        conn = self._conn()
        rows = conn.execute(_SELECT + where + "ORDER BY v.id IS NULL, v.id, b.created, b.rowid").fetchall()
        return [_battle(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """{"battles": all battles, "votes": stored votes}."""
        conn = self._conn()
        battles = conn.execute("SELECT COUNT(*) FROM battles").fetchone()[0]
        votes = conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
        return {"battles": battles, "votes": votes}
