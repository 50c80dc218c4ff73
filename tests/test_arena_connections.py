"""`nanoseek arena serve` holds slow clients as `nanoseek serve` does: it runs uvicorn over serve's
connection guard (header and body read deadlines, a connection cap) with the same flags, answers only
requests addressed to its own names (DNS rebinding: 400), and sends its pages with serve's
Content-Security-Policy. Scripted contestants (no model), a real uvicorn on a free port.
"""

from __future__ import annotations

import socket
import time

import anyio
import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from helpers import scripted_contestants

from nanoseek.arena import ArenaStore
from nanoseek.arena.app import create_app
from nanoseek.arena.cli import arena_main, parser, serve_limits
from nanoseek.arena.limits import ArenaLimits
from nanoseek.arena.live import LiveArena
from nanoseek.serve.background import BackgroundServer
from nanoseek.serve.connections import GuardedH11Protocol


def arena_app(tmp_path, limits: ArenaLimits):
    return create_app(
        LiveArena(scripted_contestants(), ArenaStore(tmp_path / "arena.db"), seed=0), limits=limits
    )


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[float | None, bytes]:
    """(seconds until the server closed the connection or None, what it sent)."""
    start, sent = time.monotonic(), b""
    sock.settimeout(0.2)
    while time.monotonic() - start < timeout:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start, sent
        if not chunk:
            return time.monotonic() - start, sent
        sent += chunk
    return None, sent


def test_slow_headers_and_bodies_are_cut_and_extra_connections_refused(tmp_path):
    limits = ArenaLimits(header_timeout=1.0, body_timeout=1.0, max_connections=4, allowed_hosts=())
    with BackgroundServer(arena_app(tmp_path, limits), limits=limits) as server:
        address = (server.host, server.port)
        headers = socket.create_connection(address)
        headers.sendall(b"POST /api/battles HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
        body = socket.create_connection(address)
        body.sendall(
            b"POST /api/battles HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        try:
            for sock in (headers, body):
                closed, sent = read_until_closed(sock, timeout=6)
                assert closed is not None and closed < 5, "a slow client was held"
                assert sent.startswith(b"HTTP/1.1 408 ") and b'"request_timeout"' in sent, sent
        finally:
            headers.close()
            body.close()
        held = [socket.create_connection(address) for _ in range(4)]
        try:
            time.sleep(0.3)
            extra = socket.create_connection(address)
            closed, sent = read_until_closed(extra, timeout=3)
            extra.close()
            assert (
                closed is not None and sent.startswith(b"HTTP/1.1 503 ") and b"too_many_connections" in sent
            )
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 5
        while True:  # the held ones are gone (closed by us, or cut at the header deadline)
            r = httpx.get(server.url + "/api/contestants", timeout=10)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 200


@pytest.mark.parametrize("path", ["/", "/leaderboard", "/api/contestants"])
def test_a_foreign_host_header_is_refused(tmp_path, path):
    app = arena_app(tmp_path, ArenaLimits(allowed_hosts=("arena.example.org",)))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        r = client.get(path, headers={"Host": "evil.example"})  # a DNS-rebinding page's request
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host"
        assert "--allowed-host" in r.json()["error"]["message"]
        vote = client.post(
            "/api/vote", json={"battle_id": "x", "winner": "tie"}, headers={"Host": "evil.example"}
        )
        assert vote.status_code == 400 and vote.json()["error"]["code"] == "invalid_host"
        for host in (
            "127.0.0.1:8001",
            "localhost",
            "[::1]:8001",
            "arena.example.org",
            "ARENA.example.org:443",
        ):
            assert client.get(path, headers={"Host": host}).status_code == 200, host


def test_the_pages_have_the_chat_pages_security_headers(tmp_path):
    with TestClient(arena_app(tmp_path, ArenaLimits())) as client:
        for path in ("/", "/leaderboard"):
            r = client.get(path)
            policy = r.headers["content-security-policy"]
            assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
            assert r.headers["x-content-type-options"] == "nosniff"


def test_the_serve_command_runs_the_guard_with_its_flags(tmp_path, monkeypatch):
    contestants = tmp_path / "arena.toml"
    contestants.write_text(
        "".join(
            f'[[contestants]]\nname = "{name}"\nkind = "openai"\nbase_url = "http://127.0.0.1:9"\nmodel = "m"\n'
            for name in ("one", "two")
        )
    )
    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: served.append(self.config))
    flags = ["--header-timeout", "2.5", "--body-timeout", "7", "--max-connections", "9"]
    argv = ["serve", "--contestants", str(contestants), "--db", str(tmp_path / "a.db"), *flags]
    assert arena_main([*argv, "--allowed-host", "arena.lan"]) == 0
    (config,) = served
    assert config.http.func is GuardedH11Protocol and config.proxy_headers is False
    limits = config.http.keywords["limits"]
    assert (limits.header_timeout, limits.body_timeout, limits.max_connections) == (2.5, 7.0, 9)
    with TestClient(config.app, base_url="http://127.0.0.1") as client:  # the Host check is on
        assert client.get("/api/contestants", headers={"Host": "evil.example"}).status_code == 400
        assert client.get("/api/contestants", headers={"Host": "arena.lan:8001"}).status_code == 200


def test_connection_flags_out_of_range_are_one_line(capsys):
    for flags, message in (
        (["--header-timeout", "0"], "--header-timeout must be a number of seconds > 0"),
        (["--max-connections", "0"], "--max-connections must be an integer >= 1"),
    ):  # refused before the contestants file is read (it does not exist)
        assert arena_main(["serve", "--contestants", "missing.toml", *flags]) == 1
        assert message in capsys.readouterr().err
    args = parser().parse_args(["serve", "--contestants", "x", "--host", "0.0.0.0"])
    assert serve_limits(args).allowed_hosts == ()  # a wildcard is no name: only the local ones


def test_refused_battles_and_votes_take_no_worker_thread(tmp_path, monkeypatch):
    # a flood from one client must not fill the thread pool every other client's requests run on
    calls = []
    run_sync = anyio.to_thread.run_sync

    async def counted(func, *args, **kwargs):
        calls.append(func)
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    app = arena_app(tmp_path, ArenaLimits(battles_per_minute=2, votes_per_minute=3))
    with TestClient(app) as client:
        battles = [client.post("/api/battles", json={"prompt": "q"}).status_code for _ in range(12)]
        votes = [
            client.post("/api/vote", json={"battle_id": "nope", "winner": "tie"}).status_code
            for _ in range(12)
        ]
    assert battles.count(201) == 2 and battles.count(429) == 10
    assert votes.count(404) == 3 and votes.count(429) == 9
    assert len(calls) == 5  # the 2 battles and 3 votes admitted; none of the 19 refused
