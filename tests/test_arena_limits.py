"""The web arena's limits: per-client rate limits on new battles and votes (429 with Retry-After),
a bound on battles generating at once (503 with Retry-After; the threads stay bounded), one client
identity for both (the remote address; X-Forwarded-For only from a trusted proxy, also through
uvicorn as `nanoseek arena serve` runs it), and the `serve` flags that set them.

Contestants are helpers' `ScriptedGenerator`s: no model, a gate holds their answers open.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from helpers import ANSWERS, ScriptedGenerator, assert_error, read_events, scripted_contestants

from nanoseek.arena import ArenaStore
from nanoseek.arena.app import create_app
from nanoseek.arena.cli import arena_main, parser, serve_limits, uvicorn_options
from nanoseek.arena.contestants import Contestant
from nanoseek.arena.limits import ArenaLimits, RateLimiter, client_identity
from nanoseek.arena.live import MAX_ACTIVE, ArenaBusy, LiveArena


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_bucket_per_client() -> None:
    clock = Clock()
    limiter = RateLimiter(3, clock=clock)  # 3 a minute: a burst of 3, then one every 20 s
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(20.0)
    assert limiter.take("b") == 0.0  # another client has its own bucket
    clock.now += 10
    assert limiter.take("a") == pytest.approx(10.0)  # refused attempts do not spend tokens
    clock.now += 10
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    assert RateLimiter(0, clock=clock).take("a") == 0.0  # 0: no limit


def test_buckets_are_forgotten_when_full_and_bounded_in_number() -> None:
    clock = Clock()
    limiter = RateLimiter(60, max_clients=100, clock=clock)
    for i in range(1000):  # a thousand addresses at once: only the last 100 are remembered
        limiter.take(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100
    clock.now += 61  # a minute later every bucket is full again: nothing to remember
    limiter.take("10.9.9.9")
    assert len(limiter) == 1


def test_client_identity() -> None:
    assert client_identity("203.0.113.7") == "203.0.113.7"
    assert client_identity("::ffff:203.0.113.7") == "203.0.113.7"
    same_host = {client_identity(f"2001:db8:1:2::{i:x}") for i in range(1, 50)}
    assert same_host == {"2001:db8:1:2::/64"}  # one host usually owns a /64
    assert client_identity("2001:db8:1:3::1") != "2001:db8:1:2::/64"
    assert client_identity(None) == "unknown" and client_identity("testclient") == "testclient"


def arena(store: ArenaStore, limits: ArenaLimits, **live_options) -> tuple[LiveArena, object]:
    live = LiveArena(scripted_contestants(), store, seed=0, **live_options)
    return live, create_app(live, num_bootstrap=10, limits=limits)


def test_new_battles_and_votes_are_limited_per_client(tmp_path: Path) -> None:
    store = ArenaStore(tmp_path / "arena.db")
    _, app = arena(store, ArenaLimits(battles_per_minute=3, votes_per_minute=2))
    with (
        TestClient(app, client=("198.51.100.1", 1000)) as one,
        TestClient(app, client=("198.51.100.2", 1)) as two,
    ):
        ids = [one.post("/api/battles", json={"prompt": f"q{i}"}) for i in range(3)]
        assert [r.status_code for r in ids] == [201, 201, 201]
        refused = one.post("/api/battles", json={"prompt": "one more"})
        error = assert_error(refused, 429, "rate_limit_exceeded")
        assert error["type"] == "rate_limit_error" and "3 a minute" in error["message"]
        assert 15 <= int(refused.headers["Retry-After"]) <= 21  # a token every 20 s
        assert two.post("/api/battles", json={"prompt": "q"}).status_code == 201  # not the other client
        assert store.counts()["battles"] == 4

        battle_id = ids[0].json()["battle_id"]
        read_events(one, battle_id)
        # vote attempts count whether or not they are stored: guessing ids costs as much as voting
        assert_error(one.post("/api/vote", json={"battle_id": "forged", "winner": "a"}), 404)
        assert one.post("/api/vote", json={"battle_id": battle_id, "winner": "a"}).status_code == 200
        refused = one.post("/api/vote", json={"battle_id": ids[1].json()["battle_id"], "winner": "a"})
        assert_error(refused, 429, "rate_limit_exceeded")
        assert int(refused.headers["Retry-After"]) >= 1
        assert store.counts()["votes"] == 1
        assert store.battles()[0].winner == "model_a"


def gated_contestants(gate: threading.Event) -> dict[str, Contestant]:
    return {
        name: Contestant(name, ScriptedGenerator(lambda _, a=answer: a, gate=gate))
        for name, answer in ANSWERS.items()
    }


def arena_threads() -> int:
    return sum(t.name.startswith("arena-") for t in threading.enumerate())


def test_battles_generating_at_once_are_bounded(tmp_path: Path) -> None:
    gate = threading.Event()
    store = ArenaStore(tmp_path / "arena.db")
    live = LiveArena(gated_contestants(gate), store, seed=0, max_active=2)
    app = create_app(live, limits=ArenaLimits(battles_per_minute=0))
    before = arena_threads()
    try:
        with TestClient(app) as client:
            held = [client.post("/api/battles", json={"prompt": f"q{i}"}) for i in range(2)]
            assert [r.status_code for r in held] == [201, 201] and live.active == 2
            for i in range(50):  # a flood of new battles while both are generating
                refused = client.post("/api/battles", json={"prompt": f"flood {i}"})
                assert_error(refused, 503, "arena_busy")
                assert int(refused.headers["Retry-After"]) >= 1
            assert arena_threads() - before <= 2 * live.max_active  # two threads per generating battle
            assert store.counts()["battles"] == 2  # nothing stored for a refused battle
            gate.set()
            for response in held:
                assert read_events(client, response.json()["battle_id"])[-1]["complete"]
            deadline = time.monotonic() + 10
            while live.active and time.monotonic() < deadline:
                time.sleep(0.01)
            assert live.active == 0  # both slots given back
            assert client.post("/api/battles", json={"prompt": "now there is room"}).status_code == 201
    finally:
        gate.set()


def test_a_failing_store_gives_the_slot_back(tmp_path: Path, monkeypatch) -> None:
    gate = threading.Event()
    store = ArenaStore(tmp_path / "arena.db")
    live = LiveArena(gated_contestants(gate), store, max_active=1)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(store, "create_battle", broken)
        for _ in range(3):
            with pytest.raises(OSError):
                live.start("q")
    assert live.active == 0
    try:
        battle_id = live.start("q")  # the one slot is free
        with pytest.raises(ArenaBusy):
            live.start("q")
    finally:
        gate.set()
    assert store.get_battle(battle_id) is not None


def serve_args(*flags: str):
    return parser().parse_args(["serve", "--contestants", "arena.toml", *flags])


def serve_like_the_cli(app, args) -> tuple[uvicorn.Server, threading.Thread, str]:
    """uvicorn with the options `nanoseek arena serve` uses, on a free port."""
    options = {
        **uvicorn_options(args),
        "host": "127.0.0.1",
        "port": 0,
        "log_level": "warning",
        "lifespan": "off",
    }
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("trusted", [False, True])
def test_x_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path: Path, trusted: bool) -> None:
    args = serve_args("--battles-per-minute", "1", *(["--trusted-proxy", "127.0.0.1"] if trusted else []))
    store = ArenaStore(tmp_path / "arena.db")
    live = LiveArena(scripted_contestants(), store, seed=0)
    server, thread, url = serve_like_the_cli(create_app(live, limits=serve_limits(args)), args)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:

            def start(forwarded: str) -> httpx.Response:
                return http.post("/api/battles", json={"prompt": "q"}, headers={"X-Forwarded-For": forwarded})

            first = start("192.0.2.1")
            assert first.status_code == 201
            if trusted:  # the proxy names the client: each client has its own bucket
                assert start("192.0.2.2").status_code == 201
                assert start("10.0.0.1, 192.0.2.3").status_code == 201  # the rightmost untrusted address
                assert_error(start("192.0.2.1"), 429, "rate_limit_exceeded")
            else:  # a client that says it is someone else is still 127.0.0.1
                for forwarded in ("192.0.2.2", "192.0.2.3", "10.0.0.1, 192.0.2.4"):
                    assert_error(start(forwarded), 429, "rate_limit_exceeded")
            battle_id = first.json()["battle_id"]
            read_events(http, battle_id)
            http.post(
                "/api/vote",
                json={"battle_id": battle_id, "winner": "tie"},
                headers={"X-Forwarded-For": "192.0.2.9"},
            )
    finally:
        server.should_exit = True
        thread.join(10)
    ip = store._conn().execute("SELECT ip FROM votes").fetchone()[0]
    assert ip == ("192.0.2.9" if trusted else "127.0.0.1")  # the vote records the same identity


def test_serve_flags(capsys) -> None:
    flags = "--battles-per-minute 5 --votes-per-minute 0 --max-active-battles 3 --trusted-proxy 10.0.0.0/8"
    args = serve_args(*flags.split(), "--trusted-proxy", "::1")
    assert args.max_active_battles == 3
    assert serve_limits(args) == ArenaLimits(
        battles_per_minute=5,
        votes_per_minute=0,
        trusted_proxies=("10.0.0.0/8", "::1"),
        allowed_hosts=("127.0.0.1",),  # the Host check: --host (and the local names)
    )
    assert serve_limits(serve_args()) == ArenaLimits(allowed_hosts=("127.0.0.1",))
    assert serve_args().max_active_battles == MAX_ACTIVE
    assert uvicorn_options(serve_args())["proxy_headers"] is False
    for flags, message in (
        (["--battles-per-minute", "-1"], "--battles-per-minute must be a number >= 0"),
        (["--max-active-battles", "0"], "--max-active-battles must be >= 1"),
        (["--trusted-proxy", "my-proxy"], "--trusted-proxy must be IP addresses or networks"),
    ):  # refused before the contestants file is even read (it does not exist here)
        assert arena_main(["serve", "--contestants", "missing.toml", *flags]) == 1
        assert message in capsys.readouterr().err
