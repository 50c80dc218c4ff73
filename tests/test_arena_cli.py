"""`nanoseek arena` commands and the contestants file: errors that name the file and the field;
headless battles between two tiny checkpoints (verifier and judge), and between a checkpoint and a
local OpenAI-compatible endpoint; leaderboard, export and import on files and databases; `serve`
as a real process answering a battle and a vote over HTTP.

The checkpoints are conftest's `tiny_checkpoints` (a tiny random DeepSeek-V3 + a tiny BPE tokenizer per
contestant), shared with test_arena_browser.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient
from helpers import (
    TINY,
    answers_from,
    build_checkpoint,
    free_port,
    read_events,
    running_server,
    solve,
    write_contestants,
)

from nanoseek.arena import ArenaStore, BattleFormatError, read_battles, write_battles
from nanoseek.arena.app import create_app
from nanoseek.arena.cli import arena_main
from nanoseek.arena.contestants import (
    DEFAULT_PARAMS,
    ContestantError,
    close_contestants,
    load_contestants,
    open_contestant,
    open_contestants,
)
from nanoseek.arena.live import LiveArena

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- the contestants file


def test_a_contestants_file_in_toml_and_json(tmp_path):
    (tmp_path / "models" / "a").mkdir(parents=True)
    toml = tmp_path / "arena.toml"
    toml.write_text(
        """
[[contestants]]
name = "local"
kind = "checkpoint"
path = "models/a"
think = false
params = { temperature = 0.2, max_new_tokens = 64, stop = ["\\n\\n"] }

[[contestants]]
name = "r1"
kind = "openai"
base_url = "https://api.deepseek.com"
model = "deepseek-reasoner"
api_key_env = "NANOSEEK_TEST_KEY"
role = "judge"
"""
    )
    local, r1 = load_contestants(toml)
    assert local.path == (tmp_path / "models" / "a").resolve()  # relative to the file
    assert (local.think, local.params.temperature, local.params.max_new_tokens, local.params.stop) == (
        False,
        0.2,
        64,
        ["\n\n"],
    )
    assert local.params.top_p == DEFAULT_PARAMS["top_p"] and local.role == "contestant"
    assert (r1.base_url, r1.model, r1.api_key_env, r1.role) == (
        "https://api.deepseek.com",
        "deepseek-reasoner",
        "NANOSEEK_TEST_KEY",
        "judge",
    )
    assert r1.params.temperature == DEFAULT_PARAMS["temperature"]
    as_json = tmp_path / "arena.json"
    as_json.write_text(
        json.dumps(
            {"contestants": [{"name": "x", "kind": "openai", "base_url": "http://127.0.0.1:9", "model": "m"}]}
        )
    )
    [x] = load_contestants(as_json)
    assert x.kind == "openai" and x.api_key_env is None


BAD_ENTRIES = [
    ({"kind": "openai", "base_url": "http://h", "model": "m"}, "contestants[0].name"),
    ({"name": "a", "kind": "vllm"}, "contestants[0].kind"),
    ({"name": "a", "kind": "checkpoint"}, "contestants[0].path: required"),
    ({"name": "a", "kind": "openai", "model": "m"}, "contestants[0].base_url: required"),
    ({"name": "a", "kind": "openai", "base_url": "ftp://h", "model": "m"}, "contestants[0].base_url"),
    (
        {"name": "a", "kind": "checkpoint", "path": "p", "base_url": "http://h"},
        "contestants[0].base_url: unknown",
    ),
    (
        {"name": "a", "kind": "checkpoint", "path": "p", "int8": "yes"},
        "contestants[0].int8: expected true or false",
    ),
    ({"name": "a", "kind": "checkpoint", "path": 3}, "contestants[0].path: expected a string"),
    ({"name": "a", "kind": "checkpoint", "path": "p", "role": "referee"}, "contestants[0].role"),
    (
        {"name": "a", "kind": "checkpoint", "path": "p", "params": {"temprature": 1}},
        "params.temprature: unknown",
    ),
    (
        {"name": "a", "kind": "checkpoint", "path": "p", "params": {"top_p": 2.0}},
        "contestants[0].params: top_p",
    ),
    ({"name": "a", "kind": "checkpoint", "path": "p", "params": {"n": 4}}, "contestants[0].params.n"),
    (
        {"name": "a", "kind": "checkpoint", "path": "p", "params": {"max_new_tokens": 51.5}},
        "params.max_new_tokens: expected an integer, got 51.5",
    ),
    (
        {"name": "a", "kind": "checkpoint", "path": "p", "params": {"top_p": "high"}},
        "params.top_p: expected a number",
    ),
    (
        {"name": "a", "kind": "checkpoint", "path": "p", "params": {"stop": 3}},
        "params.stop: expected a string or a list",
    ),
    (
        {"name": "a", "kind": "checkpoint", "path": "p", "params": 0.5},
        "contestants[0].params: expected a table",
    ),
    ("just a name", "contestants[0]: expected a table"),
    (
        {"name": "a", "kind": "openai", "base_url": "http://h", "model": "m", "timeout": 0},
        "contestants[0].timeout",
    ),
]


@pytest.mark.parametrize(("entry", "field"), BAD_ENTRIES)
def test_bad_entries_are_reported_with_the_file_and_the_field(tmp_path, entry, field):
    path = tmp_path / "arena.json"
    path.write_text(json.dumps({"contestants": [entry]}))
    with pytest.raises(ContestantError) as err:
        load_contestants(path)
    assert str(err.value).startswith(f"{path}: ") and field in str(err.value)


def test_bad_files_are_reported_with_the_file(tmp_path):
    cases = {
        "missing.toml": "cannot read",
        "empty.toml": "contestants: expected a non-empty list",
        "broken.toml": "invalid TOML",
        "broken.json": "line 1: invalid JSON",
        "extra.json": "models: unknown top-level field",
        "twice.json": "contestants[1].name: 'a' is already the name of contestants[0]",
        "arena.yaml": ".toml or .json",
    }
    entry = {"name": "a", "kind": "openai", "base_url": "http://h", "model": "m"}
    (tmp_path / "empty.toml").write_text("")
    (tmp_path / "broken.toml").write_text("[[contestants]\nname = 1")
    (tmp_path / "broken.json").write_text("{nope")
    (tmp_path / "extra.json").write_text(json.dumps({"contestants": [entry], "models": []}))
    (tmp_path / "twice.json").write_text(json.dumps({"contestants": [entry, entry]}))
    (tmp_path / "arena.yaml").write_text("contestants: []")
    for name, message in cases.items():
        with pytest.raises(ContestantError) as err:
            load_contestants(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name)) and message in str(err.value), str(err.value)


def test_opening_checks_the_model_directory_and_the_api_key(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    path = tmp_path / "arena.toml"
    path.write_text(
        '[[contestants]]\nname = "a"\nkind = "checkpoint"\npath = "empty"\n\n'
        '[[contestants]]\nname = "b"\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
        'api_key_env = "NANOSEEK_ARENA_TEST_KEY"\n'
    )
    local, remote = load_contestants(path)
    with pytest.raises(ContestantError, match=r"contestants\[0\]\.path: .*\(no config\.json\)"):
        open_contestant(local)
    monkeypatch.delenv("NANOSEEK_ARENA_TEST_KEY", raising=False)
    with pytest.raises(
        ContestantError, match=r"contestants\[1\]\.api_key_env: .*NANOSEEK_ARENA_TEST_KEY is not set"
    ):
        open_contestant(remote)
    monkeypatch.setenv("NANOSEEK_ARENA_TEST_KEY", "sk-test")
    contestant = open_contestant(remote)
    assert contestant.generator.client.headers["Authorization"] == "Bearer sk-test"
    contestant.close()


# ----------------------------------------------------------------------------- commands


def test_headless_between_two_checkpoints_then_leaderboard_export_import(tmp_path, tiny_checkpoints, capsys):
    config = write_contestants(tmp_path / "arena.toml", tiny_checkpoints)
    db, out = tmp_path / "arena.db", tmp_path / "battles.jsonl"
    argv = ["headless", "--contestants", str(config), "--task", "arithmetic?digits=2", "--battles", "6"]
    assert arena_main([*argv, "--db", str(db), "--out", str(out), "--batch-size", "4", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "6 battles voted by verifier:arithmetic" in printed
    assert all(name in printed for name in TINY) and "Rating" in printed
    records = read_battles(out)
    assert len(records) == 6 and {r["model_a"] for r in records} <= set(TINY)
    assert all(r["winner"] in ("tie", "tie (bothbad)") for r in records)  # random models never get it right
    assert ArenaStore(db).counts() == {"battles": 6, "votes": 6}

    for source in (db, out):
        assert arena_main(["leaderboard", str(source), "--bootstrap", "10", "--style-control"]) == 0
        text = capsys.readouterr().out
        assert "style-controlled" in text and "style coefficients" in text and all(n in text for n in TINY)
    png = tmp_path / "board.png"
    assert arena_main(["leaderboard", str(out), "--markdown", "--plot", str(png), "--bootstrap", "5"]) == 0
    assert "| Rank | Model |" in capsys.readouterr().out and png.read_bytes().startswith(b"\x89PNG")

    exported = tmp_path / "exported.parquet"
    assert arena_main(["export", str(db), str(exported)]) == 0
    assert read_battles(exported) == read_battles(out)  # same battles, winners and timestamps
    copy = tmp_path / "copy.db"
    assert arena_main(["import", str(exported), str(copy)]) == 0
    assert arena_main(["import", str(out), str(copy)]) == 0
    assert "imported 6 battles" in capsys.readouterr().out
    assert ArenaStore(copy).counts() == {"battles": 12, "votes": 12}
    again = [b.to_record() for b in ArenaStore(copy).battles()]
    assert again[:6] == read_battles(out)


def test_headless_with_a_judge_model(tmp_path, tiny_checkpoints, capsys):
    """The judge entry does not battle; a random model gives no verdicts, so nothing is counted.
    A judge whose context is too short for the judge prompt stops the run with its name."""
    referee = build_checkpoint(tmp_path / "referee", seed=7, max_positions=1024)
    judges = "".join(
        f'\n[[contestants]]\nname = "{name}"\nkind = "checkpoint"\npath = "{path}"\nrole = "judge"\n'
        "params = { max_new_tokens = 4 }\n"
        for name, path in (("referee", referee), ("short", tiny_checkpoints["tiny-alpha"]))
    )
    config = write_contestants(tmp_path / "arena.toml", tiny_checkpoints, extra=judges)
    argv = ["headless", "--contestants", str(config), "--task", "arithmetic", "--battles", "3", "--quiet"]
    assert arena_main([*argv, "--judge", "short"]) == 1
    assert "judge:short failed: prompt of" in capsys.readouterr().err
    assert arena_main([*argv, "--judge", "referee"]) == 0
    printed = capsys.readouterr().out
    assert "battles voted by judge:referee" in printed and "referee" not in printed.split("judge:referee")[1]
    assert arena_main([*argv, "--judge", "nobody"]) == 1
    assert "--judge 'nobody' is not an entry" in capsys.readouterr().err


def oracle_endpoint(api_key: str) -> FastAPI:
    """An OpenAI-compatible chat API (streaming or not) that answers arithmetic questions right."""
    app = FastAPI()

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> dict | JSONResponse | StreamingResponse:
        if request.headers.get("authorization") != f"Bearer {api_key}":
            return JSONResponse(
                {"error": {"message": "bad key", "type": "auth", "param": None, "code": None}}, 401
            )
        body = await request.json()
        assert body["model"] == "oracle-1" and body["temperature"] == 0.6
        reasoning, content = (
            "I compute it.",
            f"The answer is \\boxed{{{solve(body['messages'][-1]['content'])}}}.",
        )
        if not body.get("stream"):
            message = {"role": "assistant", "reasoning_content": reasoning, "content": content}
            return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": {}}
        chunks = [{"reasoning_content": reasoning}, {"content": content}]
        lines = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in chunks]
        lines.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        sse = "".join(f"data: {json.dumps(line)}\n\n" for line in lines) + "data: [DONE]\n\n"
        return StreamingResponse(iter([sse]), media_type="text/event-stream")

    return app


def test_an_endpoint_and_a_checkpoint_battle_headless_and_on_the_web(
    tmp_path, tiny_checkpoints, capsys, monkeypatch
):
    """kind = "openai" next to kind = "checkpoint": the verifier ranks the right-answering endpoint first."""
    monkeypatch.setenv("NANOSEEK_ARENA_ORACLE_KEY", "sk-local")
    with running_server(oracle_endpoint("sk-local")) as url:
        config = write_contestants(
            tmp_path / "arena.toml",
            {"tiny-alpha": tiny_checkpoints["tiny-alpha"]},
            extra=f'\n[[contestants]]\nname = "oracle"\nkind = "openai"\nbase_url = "{url}/v1"\n'
            'model = "oracle-1"\napi_key_env = "NANOSEEK_ARENA_ORACLE_KEY"\n',
        )
        argv = ["headless", "--contestants", str(config), "--task", "arithmetic", "--battles", "8", "--quiet"]
        assert arena_main([*argv, "--out", str(tmp_path / "b.jsonl"), "--bootstrap", "10"]) == 0
        printed = capsys.readouterr().out
        battles = read_battles(tmp_path / "b.jsonl")
        assert len(battles) == 8
        assert all(b["winner"] == ("model_a" if b["model_a"] == "oracle" else "model_b") for b in battles)
        table = printed.split("Rank")[1]
        assert table.index("oracle") < table.index("tiny-alpha")

        contestants = open_contestants(load_contestants(config))  # the same two on the web
        try:
            with TestClient(create_app(LiveArena(contestants, ArenaStore(tmp_path / "web.db")))) as client:
                battle_id = client.post("/api/battles", json={"prompt": "What is 12 + 34?"}).json()[
                    "battle_id"
                ]
                events = read_events(client, battle_id)
                assert events[-1] == {"type": "end", "complete": True}
                assert "The answer is \\boxed{46}." in answers_from(events).values()
                assert any(e.get("reasoning_content") == "I compute it." for e in events)
        finally:
            close_contestants(contestants)

        monkeypatch.setenv("NANOSEEK_ARENA_ORACLE_KEY", "sk-wrong")
        assert arena_main(argv) == 1
        assert "contestant 'oracle' failed: HTTP 401: bad key" in capsys.readouterr().err


def test_command_errors_are_one_line(tmp_path, capsys):
    assert arena_main(["leaderboard", str(tmp_path / "none.jsonl")]) == 1
    assert "none.jsonl: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model_a": "x", "model_b": "y", "winner": "x"}\n')
    assert arena_main(["leaderboard", str(bad)]) == 1
    assert "bad.jsonl: line 1: field 'winner'" in capsys.readouterr().err
    assert arena_main(["export", str(bad), str(tmp_path / "o.jsonl")]) == 1
    assert "not an SQLite database" in capsys.readouterr().err
    assert arena_main(["headless", "--contestants", str(tmp_path / "none.toml"), "--task", "arithmetic"]) == 1
    assert "none.toml: cannot read" in capsys.readouterr().err
    empty = tmp_path / "empty.db"
    ArenaStore(empty)
    assert arena_main(["leaderboard", str(empty)]) == 0
    assert "no voted battles yet" in capsys.readouterr().out
    write_battles([], tmp_path / "nothing.json")
    assert arena_main(["import", str(tmp_path / "nothing.json"), str(empty)]) == 0


def test_import_is_all_or_nothing(tmp_path):
    store = ArenaStore(tmp_path / "arena.db")
    good = {"model_a": "x", "model_b": "y", "winner": "tie", "tstamp": 1.5}
    with pytest.raises(BattleFormatError, match="record 1: field 'winner'"):
        store.import_records([good, {**good, "winner": "x"}])
    assert store.counts() == {"battles": 0, "votes": 0}
    assert store.import_records([good, good]) == 2
    assert [b.tstamp for b in store.battles()] == [1.5, 1.5] and store.battles()[0].voter == "import"


def test_serve_runs_the_arena_on_checkpoints(tmp_path, tiny_checkpoints):
    config = write_contestants(tmp_path / "arena.toml", tiny_checkpoints)
    port, db = free_port(), tmp_path / "votes.db"
    command = [sys.executable, "-m", "nanoseek.arena.cli", "serve", "--contestants", str(config)]
    command += ["--db", str(db), "--port", str(port), "--bootstrap", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            deadline = time.monotonic() + 90
            while True:
                assert server.poll() is None, server.stdout.read().decode()
                try:
                    if http.get("/api/contestants").json() == {"contestants": list(TINY)}:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
            battle_id = http.post("/api/battles", json={"prompt": "What is 12 + 34?"}).json()["battle_id"]
            with http.stream("GET", f"/api/battles/{battle_id}/stream") as response:
                lines = [line for line in response.iter_lines() if line.startswith("data: ")]
            assert lines[-1] == "data: [DONE]" and json.loads(lines[-2][6:]) == {
                "type": "end",
                "complete": True,
            }
            assert not any(name in line for line in lines for name in TINY)
            revealed = http.post("/api/vote", json={"battle_id": battle_id, "winner": "model_b"}).json()
            assert {revealed["model_a"], revealed["model_b"]} == set(TINY)
            board = http.get("/api/leaderboard").json()
            assert board["votes"] == 1 and {r["model"] for r in board["leaderboard"]["rows"]} == set(TINY)
    finally:
        server.terminate()
        server.wait(30)
    [battle] = ArenaStore(db).battles()
    assert battle.winner == "model_b" and battle.conversation_a[0]["content"] == "What is 12 + 34?"


def test_open_contestants_loads_checkpoints_that_answer(tiny_checkpoints, tmp_path):
    specs = load_contestants(write_contestants(tmp_path / "arena.toml", tiny_checkpoints, max_new_tokens=5))
    contestants = open_contestants(specs)
    try:
        [completion] = contestants["tiny-alpha"].generate([[{"role": "user", "content": "hi"}]])
        assert 1 <= completion.completion_tokens <= 5 and completion.reasoning_content is not None
    finally:
        for c in contestants.values():
            c.close()
