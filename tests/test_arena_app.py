"""The web arena over HTTP: a battle streamed, voted and revealed; forged, replayed, early and malformed
votes refused with 4xx; 16 clients voting at once store exactly one vote per battle; a failing
contestant; the pages and the leaderboard served with nothing from outside.

The contestants are helpers' `ScriptedGenerator`s (the Generator protocol, no model), as in the other
test_arena_* files; test_arena_browser.py runs real checkpoints.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers import (
    ANSWERS,
    ScriptedGenerator,
    answers_from,
    assert_error,
    read_events,
    running_server,
    scripted_contestants,
    start_battle,
)

from nanoseek.arena import ArenaStore
from nanoseek.arena.app import STATIC, create_app, sse
from nanoseek.arena.contestants import Contestant
from nanoseek.arena.limits import ArenaLimits
from nanoseek.arena.live import LiveArena, LiveBattle


@pytest.fixture
def store(tmp_path: Path) -> ArenaStore:
    return ArenaStore(tmp_path / "arena.db")


@pytest.fixture
def client(store: ArenaStore) -> Iterator[TestClient]:
    with TestClient(create_app(LiveArena(scripted_contestants(), store, seed=0), num_bootstrap=20)) as c:
        yield c


def test_a_battle_streams_anonymously_and_reveals_after_the_vote(client: TestClient, store: ArenaStore):
    battle_id = start_battle(client)
    raw = client.get(f"/api/battles/{battle_id}/stream").text
    events = read_events(client, battle_id)  # a second follower replays the whole battle
    assert events[-1] == {"type": "end", "complete": True}
    answers = answers_from(events)
    assert sorted(answers.values()) != [] and all(a in ANSWERS.values() for a in answers.values())
    assert answers["a"] != answers["b"]
    before = client.get(f"/api/battles/{battle_id}").json()
    for name in ANSWERS:  # no name anywhere before the vote
        assert name not in raw and name not in json.dumps(before)
    assert before["state"] == "open" and before["answer_a"] == answers["a"] and "model_a" not in before

    revealed = client.post("/api/vote", json={"battle_id": battle_id, "winner": "a"}).json()
    assert revealed["winner"] == "model_a" and revealed["state"] == "voted"
    assert ANSWERS[revealed["model_a"]] == answers["a"] and ANSWERS[revealed["model_b"]] == answers["b"]
    [stored] = store.battles()
    assert (stored.id, stored.winner, stored.model_a, stored.model_b) == (
        battle_id,
        "model_a",
        revealed["model_a"],
        revealed["model_b"],
    )
    assert stored.conversation_a == [
        {"role": "user", "content": "What is 40 + 2?"},
        {"role": "assistant", "content": answers["a"]},
    ]
    assert client.get(f"/api/battles/{battle_id}").json()["model_b"] == revealed["model_b"]

    board = client.get("/api/leaderboard").json()
    assert board["votes"] == 1
    rows = {r["model"]: r for r in board["leaderboard"]["rows"]}
    assert rows[revealed["model_a"]]["wins"] == 1 and rows[revealed["model_b"]]["losses"] == 1
    png = client.get("/leaderboard.png?style_control=1")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert client.get("/api/leaderboard?style_control=true").json()["leaderboard"]["style_control"] is True


def test_pairs_are_random_and_cover_every_model(client: TestClient):
    ids = [start_battle(client, f"question {i}") for i in range(12)]
    pairs = Counter()
    for battle_id in ids:
        read_events(client, battle_id)
        battle = client.post("/api/vote", json={"battle_id": battle_id, "winner": "tie"}).json()
        assert battle["model_a"] != battle["model_b"]
        pairs[battle["model_a"]] += 1
    assert len(pairs) >= 2  # side A is not always the same model
    assert client.get("/api/contestants").json() == {"contestants": sorted(ANSWERS)}


def test_forged_replayed_early_and_malformed_votes_get_4xx(store: ArenaStore):
    gate = threading.Event()
    contestants = {  # alpha-7b's answer waits for the gate
        "alpha-7b": Contestant("alpha-7b", ScriptedGenerator(lambda _: ANSWERS["alpha-7b"], gate=gate)),
        "bravo-1b": Contestant("bravo-1b", ScriptedGenerator(lambda _: ANSWERS["bravo-1b"])),
    }
    with TestClient(create_app(LiveArena(contestants, store, seed=1))) as client:
        # forged: an id the server never issued
        assert_error(
            client.post("/api/vote", json={"battle_id": "x" * 24, "winner": "model_a"}), 404, "unknown_battle"
        )
        assert_error(client.get("/api/battles/forged/stream"), 404, "unknown_battle")
        assert_error(client.get("/api/battles/forged"), 404)
        # early: answers still streaming
        battle_id = start_battle(client)
        assert_error(
            client.post("/api/vote", json={"battle_id": battle_id, "winner": "model_b"}),
            409,
            "answers_incomplete",
        )
        gate.set()
        read_events(client, battle_id)
        # malformed
        error = assert_error(
            client.post("/api/vote", json={"battle_id": battle_id, "winner": "A"}), 400, "invalid_winner"
        )
        assert error["param"] == "winner"
        assert assert_error(client.post("/api/vote", json={"battle_id": battle_id}), 400)["param"] == "winner"
        assert_error(
            client.post("/api/vote", content=b"not json", headers={"content-type": "application/json"}), 400
        )
        # the vote, then its replay
        assert client.post("/api/vote", json={"battle_id": battle_id, "winner": "bothbad"}).status_code == 200
        for winner in ("bothbad", "model_a"):
            assert_error(
                client.post("/api/vote", json={"battle_id": battle_id, "winner": winner}),
                409,
                "already_voted",
            )
        assert store.counts()["votes"] == 1 and store.battles()[0].winner == "tie (bothbad)"
        # its events can still be followed
        assert answers_from(read_events(client, battle_id))["a"] in ANSWERS.values()
        # prompts
        assert assert_error(client.post("/api/battles", json={"prompt": "   "}), 400)["param"] == "prompt"
        assert (
            assert_error(client.post("/api/battles", json={"prompt": "x" * 9000}), 400)["param"] == "prompt"
        )
        assert_error(client.post("/api/battles", json={}), 400)


def test_a_failing_contestant_ends_the_battle_unvotable_without_leaking_its_name(store: ArenaStore):
    contestants = {
        "good-model": Contestant("good-model", ScriptedGenerator(lambda _: "fine")),
        "broken-model": Contestant("broken-model", ScriptedGenerator(lambda _: "", fail=True)),
    }
    with TestClient(create_app(LiveArena(contestants, store))) as client:
        battle_id = start_battle(client)
        events = read_events(client, battle_id)
        [error] = [e for e in events if e["type"] == "error"]
        assert "model" not in error["message"].replace("this model", "")  # no name, no upstream message
        assert events[-1] == {"type": "end", "complete": False}
        assert "secret" not in json.dumps(events)
        assert_error(client.post("/api/vote", json={"battle_id": battle_id, "winner": "tie"}), 409)
        assert store.counts() == {"battles": 1, "votes": 0}


def test_sixteen_clients_voting_at_once_store_one_vote_per_battle(store: ArenaStore):
    no_vote_limit = ArenaLimits(votes_per_minute=0)  # 160 attempts from one address: the race, not the limit
    app = create_app(LiveArena(scripted_contestants(), store, seed=2), limits=no_vote_limit)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        ids = [start_battle(http, f"q{i}") for i in range(10)]
        for battle_id in ids:
            assert read_events(http, battle_id)[-1]["complete"]

        def voter(seed: int) -> list[tuple[str, int]]:
            rng = random.Random(seed)
            order = ids[:]
            rng.shuffle(order)
            with httpx.Client(base_url=url, timeout=30) as own:
                return [
                    (
                        b,
                        own.post(
                            "/api/vote", json={"battle_id": b, "winner": rng.choice(["a", "b", "tie"])}
                        ).status_code,
                    )
                    for b in order
                ]

        with ThreadPoolExecutor(16) as pool:
            results = [r for rs in pool.map(voter, range(16)) for r in rs]
    accepted = Counter(b for b, status in results if status == 200)
    assert accepted == Counter(ids)  # exactly one accepted vote per battle
    assert {status for _, status in results} == {200, 409}
    assert store.counts() == {"battles": 10, "votes": 10}


def test_pages_and_assets_are_served_by_the_app_alone(client: TestClient):
    for path in ("/", "/leaderboard"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        for ref in re.findall(r'(?:src|href)="([^"]+)"', page.text):
            assert ref.startswith("/"), f"{path} loads {ref} from elsewhere"
            assert client.get(ref).status_code == 200
    for asset in STATIC.iterdir():
        text = asset.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a load
        assert not re.search(r"https?://|//cdn|@import", text), f"{asset.name} refers outside the app"
    # before any vote
    assert client.get("/api/leaderboard").json() == {"votes": 0, "leaderboard": None}
    assert_error(client.get("/leaderboard.png"), 404, "no_votes")


def test_battles_older_than_the_kept_logs_replay_from_the_store(store: ArenaStore):
    live = LiveArena(scripted_contestants(), store, seed=3, keep=0)
    with TestClient(create_app(live)) as client:
        battle_id = start_battle(client)
        while battle_id in live.logs:  # dropped once finished (keep=0)
            time.sleep(0.01)
        events = read_events(client, battle_id)
    battle = store.get_battle(battle_id)
    assert answers_from(events) == {"a": ANSWERS[battle.model_a], "b": ANSWERS[battle.model_b]}
    assert events[-1] == {"type": "end", "complete": True}
    assert not any(e.get("reasoning_content") for e in events)  # the thinking is not stored


def test_sse_follows_the_log_with_keep_alives_until_it_ends():
    log = LiveBattle()

    async def collect() -> list[str]:
        chunks = []
        async for chunk in sse(log, poll=0.01, heartbeat=0.03):
            chunks.append(chunk)
            if len(chunks) == 1:  # the generating side writes only after a keep-alive went out
                log.add({"type": "delta", "side": "a", "reasoning_content": "", "content": "hi"})
                log.add({"type": "end", "complete": True}, done=True)
        return chunks

    chunks = asyncio.run(collect())
    assert chunks[0] == ": keep-alive\n\n"  # nothing for a while
    data = [c for c in chunks if c.startswith("data: ")]
    assert [json.loads(c[6:])["type"] for c in data[:-1]] == ["delta", "end"]
    assert data[-1] == "data: [DONE]\n\n"


def test_the_answers_of_a_voted_battle_never_change(store: ArenaStore):
    prompt = [{"role": "user", "content": "q"}]
    answered = [*prompt, {"role": "assistant", "content": "a"}]
    battle_id = store.create_battle("x", "y", prompt, prompt)
    assert store.set_conversations(battle_id, answered, answered)
    store.record_vote(battle_id, "tie")
    assert not store.set_conversations(battle_id, prompt, prompt)
    assert not store.set_conversations("forged", answered, answered)
    battle = store.get_battle(battle_id)
    assert battle.conversation_a == battle.conversation_b == answered and battle.turn == 1
