"""Arena storage and battle files: votes stored exactly once under 8 racing writer processes (with
replays and forged ids), vote validation, and JSON / JSONL / parquet round trips with located errors.

The race runs NANOSEEK_ARENA_RACE_SECONDS seconds (default 3); for the long run use
    NANOSEEK_ARENA_RACE_SECONDS=30 python -m pytest tests/test_arena_store.py -k race
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import secrets
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from nanoseek.arena import (
    WINNERS,
    ArenaStore,
    BattleFormatError,
    VoteRejected,
    compute_leaderboard,
    read_battles,
    write_battles,
)

RACE_SECONDS = float(os.environ.get("NANOSEEK_ARENA_RACE_SECONDS", "3"))
WRITERS = 8
PROCESSES = 2


def conversation(prompt: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def test_vote_flow_and_rejections(tmp_path: Path) -> None:
    store = ArenaStore(tmp_path / "arena.db")
    with sqlite3.connect(tmp_path / "arena.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ids = [
        store.create_battle(
            "x", "y", conversation("2+2?", "4"), conversation("2+2?", "**four**"), language="en"
        )
        for _ in range(3)
    ]
    assert len(set(ids)) == 3 and all(len(i) >= 24 for i in ids)  # unguessable tokens
    pending = store.get_battle(ids[0])
    assert pending is not None and pending.state == "open" and pending.winner is None
    assert store.battles() == [] and len(store.battles(voted_only=False)) == 3

    with pytest.raises(VoteRejected) as bad:
        store.record_vote(ids[0], "model_c")
    assert bad.value.reason == "invalid_winner"
    battle = store.record_vote(ids[0], "model_b", voter="alice", ip="10.0.0.1")  # still votable
    assert (battle.model_a, battle.model_b, battle.winner, battle.state) == ("x", "y", "model_b", "voted")
    assert battle.voter == "alice" and battle.conversation_b[1]["content"] == "**four**"

    with pytest.raises(VoteRejected) as replay:
        store.record_vote(ids[0], "model_a")
    assert replay.value.reason == "replay"
    for forged in (secrets.token_urlsafe(18), ids[1][:-1], "", "x" * 1000):
        with pytest.raises(VoteRejected) as err:
            store.record_vote(forged, "tie")
        assert err.value.reason == "unknown"
    store.record_vote(ids[2], "tie")
    assert store.get_battle(ids[0]).winner == "model_b"  # the replay changed nothing
    assert store.counts() == {"battles": 3, "votes": 2}
    voted = store.battles()
    assert [b.id for b in voted] == [ids[0], ids[2]]  # vote order
    record = voted[0].to_record()
    assert record["winner"] == "model_b" and record["turn"] == 1 and record["anony"] is True
    assert record["language"] == "en" and record["tstamp"] == voted[0].tstamp
    board = compute_leaderboard(voted, num_bootstrap=5)
    assert {r.model for r in board.rows} == {"x", "y"}
    with pytest.raises(ValueError):
        store.create_battle("x", "x", [], [])
    with pytest.raises(ValueError):
        ArenaStore(":memory:")


def _race_writer(store: ArenaStore, ids: list[str], seconds: float, seed: int, start, out) -> None:
    """Walk the shared battle list in the same order as every other writer (so all 8 race for each
    battle), mixing in forged ids and deliberate replays of this writer's own accepted votes."""
    rng = random.Random(seed)
    accepted: list[tuple[str, str]] = []
    outcomes: Counter[tuple[str, str]] = Counter()
    start.wait()
    deadline, next_battle = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        roll = rng.random()
        if roll < 0.1:
            kind, battle_id = "forged", secrets.token_urlsafe(18)
        elif roll < 0.2 and accepted:
            kind, battle_id = "replay", rng.choice(accepted)[0]
        else:
            kind, battle_id = "race", ids[next_battle % len(ids)]
            next_battle += 1
        winner = rng.choice(WINNERS)
        try:
            store.record_vote(battle_id, winner, voter=f"writer{seed}")
            accepted.append((battle_id, winner))
            outcomes[kind, "accepted"] += 1
        except VoteRejected as err:
            outcomes[kind, err.reason] += 1
    out.put((accepted, dict(outcomes)))


def _race_process(path: str, ids: list[str], seconds: float, seeds: list[int], start, out) -> None:
    """One process running several writer threads that share one ArenaStore (a connection each)."""
    store = ArenaStore(path)
    threads = [
        threading.Thread(target=_race_writer, args=(store, ids, seconds, seed, start, out)) for seed in seeds
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_race_eight_writers_store_each_vote_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    store = ArenaStore(path)
    ids = [
        store.create_battle(f"m{i % 5}", f"m{(i + 1) % 5}", conversation("q", "a"), conversation("q", "b"))
        for i in range(int(4000 * RACE_SECONDS))
    ]
    # 8 writers: 2 processes x 4 threads, so votes race both across processes and across threads.
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(WRITERS), ctx.Queue()
    per = WRITERS // PROCESSES
    procs = [
        ctx.Process(
            target=_race_process,
            args=(str(path), ids, RACE_SECONDS, list(range(k * per, k * per + per)), start, out),
        )
        for k in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=RACE_SECONDS + 120) for _ in range(WRITERS)]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0

    accepted = [vote for votes, _ in results for vote in votes]
    outcomes: Counter[tuple[str, str]] = Counter()
    for _, counts in results:
        outcomes.update(counts)
    # Every accepted vote is a different battle, and exactly the accepted votes are stored.
    assert len(accepted) == len({battle_id for battle_id, _ in accepted})
    with sqlite3.connect(path) as raw:
        stored = dict(raw.execute("SELECT battle_id, winner FROM votes").fetchall())
        voted_state = {r[0] for r in raw.execute("SELECT id FROM battles WHERE state = 'voted'")}
    assert stored == dict(accepted)
    assert voted_state == set(stored)
    assert store.counts() == {"battles": len(ids), "votes": len(accepted)}
    # Forged ids and deliberate replays never get in; racing writers lose as replays.
    kinds = {kind for kind, _ in outcomes}
    assert kinds == {"forged", "replay", "race"}
    assert {o for (k, o) in outcomes if k == "forged"} == {"unknown"}
    assert {o for (k, o) in outcomes if k == "replay"} == {"replay"}
    assert {o for (k, o) in outcomes if k == "race"} == {"accepted", "replay"}
    assert outcomes["race", "accepted"] == len(accepted) > 50
    assert (
        outcomes["race", "replay"] > 0
        and outcomes["replay", "replay"] > 0
        and outcomes["forged", "unknown"] > 0
    )
    print(f"race: {RACE_SECONDS:g}s, {len(ids)} battles, outcomes {dict(outcomes)}")
    attempts = sum(outcomes.values())
    assert attempts == len(accepted) + sum(n for (_, o), n in outcomes.items() if o != "accepted")


# ----------------------------------------------------------------------------- battle files


def sample_records() -> list[dict]:
    return [
        {
            "model_a": "deepseek-r1-nano",
            "model_b": "baseline",
            "winner": winner,
            "conversation_a": conversation(f"question {i} — ünïcode ✓", f"# Answer\n- {i}\n**bold**"),
            "conversation_b": conversation(f"question {i} — ünïcode ✓", "short"),
            "turn": 1,
            "anony": i % 2 == 0,
            "language": "English",
            "tstamp": None if i == 3 else 1_700_000_000.5 + i,
        }
        for i, winner in enumerate(WINNERS * 2)
    ]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_battle_files_round_trip(tmp_path: Path, suffix: str) -> None:
    records = sample_records()
    path = write_battles(records, tmp_path / f"battles{suffix}")
    assert read_battles(path) == records
    again = write_battles(read_battles(path), tmp_path / f"again{suffix}")
    assert again.read_bytes() == path.read_bytes()


def test_store_battles_export_and_defaults(tmp_path: Path) -> None:
    store = ArenaStore(tmp_path / "arena.db")
    battle_id = store.create_battle("x", "y", conversation("hi", "hello"), conversation("hi", "hey"))
    store.record_vote(battle_id, "tie (bothbad)")
    for suffix in (".json", ".jsonl", ".parquet"):
        (record,) = read_battles(write_battles(store.battles(), tmp_path / f"store{suffix}"))
        assert record == store.battles()[0].to_record()
    minimal = tmp_path / "minimal.jsonl"
    minimal.write_text('{"model_a": "x", "model_b": "y", "winner": "tie", "extra": 1}\n\n')
    defaults = {
        "conversation_a": [],
        "conversation_b": [],
        "turn": 0,
        "anony": True,
        "language": "",
        "tstamp": None,
    }
    assert read_battles(minimal) == [{"model_a": "x", "model_b": "y", "winner": "tie", **defaults}]
    store.create_battle("x", "y", conversation("hi", "hello"), conversation("hi", "hey"))  # not voted yet
    with pytest.raises(BattleFormatError, match=r"record 1: field 'winner'"):
        write_battles(store.battles(voted_only=False), tmp_path / "x.jsonl")


def test_bad_records_name_file_line_and_field(tmp_path: Path) -> None:
    good = json.dumps(sample_records()[0])
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text("\n".join([good, good, json.dumps({**sample_records()[0], "winner": "draw"})]) + "\n")
    with pytest.raises(BattleFormatError, match=r"bad\.jsonl: line 3: field 'winner': expected one of"):
        read_battles(jsonl)
    jsonl.write_text(good + "\n{not json\n")
    with pytest.raises(BattleFormatError, match=r"bad\.jsonl: line 2: invalid JSON"):
        read_battles(jsonl)

    bad_turn = {**sample_records()[1], "conversation_b": [{"role": "user", "content": 5}]}
    pretty = tmp_path / "bad.json"
    pretty.write_text(json.dumps([sample_records()[0], bad_turn], indent=2))
    line = pretty.read_text().splitlines().index("  {", 2) + 1  # where the second record starts
    with pytest.raises(
        BattleFormatError, match=rf"bad\.json: line {line}: field 'conversation_b\[0\]\.content'"
    ):
        read_battles(pretty)
    pretty.write_text('[{"model_a": "x"}')
    with pytest.raises(BattleFormatError, match=r"bad\.json: line 1: field 'model_b'"):
        read_battles(pretty)
    pretty.write_text('{"model_a": "x"}')
    with pytest.raises(BattleFormatError, match=r"bad\.json: line 1: expected a JSON list"):
        read_battles(pretty)

    import pyarrow as pa  # here, not at the top: the race's spawned writers import this module
    import pyarrow.parquet as pq

    rows = sample_records()[:3]
    rows[2]["model_b"] = rows[2]["model_a"]
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(BattleFormatError, match=r"bad\.parquet: row 2: field 'model_b': same model"):
        read_battles(tmp_path / "bad.parquet")
    pq.write_table(table.drop_columns(["winner"]), tmp_path / "nowinner.parquet")
    with pytest.raises(BattleFormatError, match=r"nowinner\.parquet: field 'winner': column missing"):
        read_battles(tmp_path / "nowinner.parquet")
    with pytest.raises(BattleFormatError, match="unknown format"):
        read_battles(tmp_path / "battles.csv")
