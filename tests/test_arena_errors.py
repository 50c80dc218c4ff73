"""The web arena's errors: one JSON shape everywhere ({"error": {"message", "type", "param", "code"}},
as `nanoseek serve` answers), lone surrogates refused with 400 (not a 500 from the database), no
message echoing more than ~100 characters of the input, oversized bodies refused before parsing,
and a bug answered as a JSON 500 that says nothing of its cause.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers import assert_error, read_events, running_server, scripted_contestants, start_battle

from nanoseek.arena import ArenaStore
from nanoseek.arena.app import create_app
from nanoseek.arena.live import LiveArena

JSON = {"content-type": "application/json"}


@pytest.fixture
def store(tmp_path: Path) -> ArenaStore:
    return ArenaStore(tmp_path / "arena.db")


@pytest.fixture
def client(store: ArenaStore):
    app = create_app(LiveArena(scripted_contestants(), store, seed=0), num_bootstrap=10)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_lone_surrogates_are_400s_on_every_field(client: TestClient, store: ArenaStore) -> None:
    battle_id = start_battle(client)
    read_events(client, battle_id)
    for path, body, param in (
        ("/api/battles", '{"prompt": "\\ud800"}', "prompt"),
        ("/api/battles", '{"prompt": "fine \\udfff then"}', "prompt"),
        ("/api/vote", '{"battle_id": "\\ud800", "winner": "a"}', "battle_id"),
        ("/api/vote", '{"battle_id": "' + battle_id + '", "winner": "\\udc00"}', "winner"),
    ):
        error = assert_error(client.post(path, content=body.encode(), headers=JSON), 400, "invalid_value")
        assert error["param"] == param and "surrogate" in error["message"]
    assert store.counts() == {"battles": 1, "votes": 0}
    assert client.post("/api/battles", json={"prompt": "a valid pair \U0001f600"}).status_code == 201


def test_a_lone_surrogate_leaves_the_connection_usable(store: ArenaStore) -> None:
    app = create_app(LiveArena(scripted_contestants(), store, seed=0))
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        response = http.post("/api/battles", content=b'{"prompt": "\\ud800"}', headers=JSON)
        assert_error(response, 400, "invalid_value")
        assert http.get("/api/contestants").status_code == 200  # the same keep-alive connection


def test_every_error_has_one_shape(client: TestClient) -> None:
    cases = [
        (client.get("/no/such/page"), 404, None),
        (client.get("/api/nothing"), 404, None),
        (client.delete("/api/vote"), 405, None),
        (
            client.post("/api/vote", content=b'{"battle_id": "\xff\xfe", "winner": "a"}', headers=JSON),
            400,
            None,
        ),
        (client.post("/api/vote", content=b'{"battle_id": ', headers=JSON), 400, None),  # JSON syntax error
        (client.post("/api/vote", content=b"[1, 2]", headers=JSON), 400, None),
        (client.post("/api/vote", json={"battle_id": 7, "winner": "a"}), 400, "battle_id"),
        (client.post("/api/battles", json={"prompt": ["a list"]}), 400, "prompt"),
        (client.post("/api/battles", json={}), 400, "prompt"),
        (client.get("/api/battles/forged"), 404, "battle_id"),
        (client.get("/leaderboard.png"), 404, None),
    ]
    for response, status, param in cases:
        assert "detail" not in response.json(), response.text
        error = assert_error(response, status)
        assert error["param"] == param, (response.request.url, response.text)
        assert error["type"] in {"invalid_request_error", "not_found_error"}


def test_messages_never_echo_unbounded_input(client: TestClient) -> None:
    battle_id = start_battle(client)
    read_events(client, battle_id)
    winner = "w" * 500_000
    response = client.post("/api/vote", json={"battle_id": battle_id, "winner": winner})
    error = assert_error(response, 400, "invalid_winner")
    assert len(response.content) < 1000 and "500002 characters" in error["message"]
    response = client.post("/api/vote", json={"battle_id": battle_id, "winner": ["w" * 100_000]})
    assert_error(response, 400, "invalid_value")
    assert len(response.content) < 1000
    response = client.get("/" + "p" * 5000)
    assert_error(response, 404)
    assert len(response.content) < 1000
    # a body far over any prompt's size is refused whole, before it is parsed
    response = client.post("/api/vote", json={"battle_id": battle_id, "winner": "w" * 3_000_000})
    assert_error(response, 413, "request_too_large")
    assert len(response.content) < 1000
    assert client.post("/api/vote", json={"battle_id": battle_id, "winner": "a"}).status_code == 200


def test_a_bug_is_a_json_500_that_names_nothing(client: TestClient, store: ArenaStore, monkeypatch) -> None:
    def broken(battle_id):
        raise RuntimeError("sqlite file /secret/path/arena.db is corrupt")

    monkeypatch.setattr(store, "get_battle", broken)
    response = client.get("/api/battles/anything")
    error = assert_error(response, 500)
    assert error["type"] == "server_error" and "secret" not in json.dumps(response.json())
