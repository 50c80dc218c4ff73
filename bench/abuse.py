"""Abuse benchmark: `nanoseek serve` and `nanoseek arena serve` attacked from outside, as in issue 15.

    python bench/abuse.py                      # every category, both servers (~1 min on 2 cores)
    python bench/abuse.py --quick              # fewer cases of each (~45 s)
    python bench/abuse.py --only floods,slow --json abuse.json

It builds the scripted demo checkpoint (`nanoseek.serve.demo`) in a temporary directory, starts the
two servers as real processes on free loopback ports (serve: 8 slots, one torch thread, an API key
file; arena: two contestants on that checkpoint, 12 new tokens each, behind `--trusted-proxy
127.0.0.1` so that each simulated client is one X-Forwarded-For address, as behind a real proxy; both
with 2 s header and 3 s body deadlines and a cap of 256 connections), then replays each category of
attack against them and prints one table, one row per category and server:

- cases: requests (or sockets) tried; 2xx / 4xx: answers by status;
- shed: 503 answers by design (the connection cap, the arena's bound on battles generating at once);
- 5xx: any other 5xx (server errors); hangs: no answer within 30 s (slow clients: the socket still
  open 5 s past the server's deadline);
- unexpected: an answer other than the one that case must get (a 200 for a malformed body, an error
  that is not `{"error": {message, type, param, code}}`, one longer than 4 KB (echoed input), a 429
  without Retry-After, a connection reset, two stored votes on one battle, ...); the first few are
  printed under the table;
- leaked: after the category, once the server has had up to 15 s to settle: serve's running +
  waiting requests and busy slots (/health, /metrics); the arena's battles still generating
  (/api/health) once every battle the run started has ended;
- RSS before / after: the server process's VmRSS (/proc/<pid>/status) before the category and after
  it has settled, in MiB.

Before the attacks each server gets ordinary traffic until a round of it grows its RSS by less than
1% (`warm_up`): an engine's memory grows over its first few hundred batches of new shapes and then
stays, which is not the attacks' doing. The goal, checked at the end (exit status 1 if missed): 0 5xx,
0 hangs, 0 unexpected, 0 leaked, and each server's RSS at the end within 10% of its RSS after the
warm-up (its RSS when started is printed too). Results: docs/benchmarks.md. Categories: malformed (bad JSON,
fields, types, surrogates, invalid UTF-8), floods (20,000 prompts x n=32 in one request while a
normal client is timed; more samples than the queue holds; a hang-up on a full queue; 200 battles from
one client), huge (4 MiB prompts, four at once), slow (clients dribbling headers or bodies, silent
ones, more connections than the cap), disconnects (streams and battle followers hanging up midway),
races (16 clients voting on one battle), rates (battles and votes over the per-client limits), bodies
(413 for large, falsely declared and chunked bodies), host (DNS rebinding), auth (key file).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import free_port, wait_until_up  # noqa: E402  (a script beside this one)

from nanoseek.serve.demo import build_demo_checkpoint  # noqa: E402
from nanoseek.serve.loadgen import run_load  # noqa: E402

HANG_S = 30.0  # an answer later than this is a hang
MAX_ERROR_BYTES = 4096  # an error body longer than this echoes what the client sent
API_KEY = "sk-bench#1"  # a '#' inside a key is part of it (issue 15, item 4)
DEADLINES = {"header": 2.0, "body": 3.0}  # the servers' read deadlines (seconds) in this benchmark
MAX_CONNECTIONS = 256
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
HI = [{"role": "user", "content": "hi"}]
JSON = {"Content-Type": "application/json"}


@dataclass
class Sizes:
    """How many cases of each kind: the full run and --quick."""

    slow_sockets: int = 240
    cap_extra: int = 24
    flood_requests: int = 48
    disconnect_clients: int = 32
    disconnect_seconds: float = 6.0
    race_battles: int = 6
    arena_flood: int = 200
    warm_rounds: int = 10  # at most, of ordinary traffic before the RSS baseline

    @classmethod
    def quick(cls) -> Sizes:
        return cls(60, 8, 16, 12, 3.0, 2, 60, 2)


@dataclass
class Outcome:
    """One request's fate: status (None: no HTTP answer; 0: closed without a word), body, timing."""

    label: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    size: int = 0
    seconds: float = 0.0
    hang: bool = False
    error: str = ""

    def code(self) -> str | None:
        try:
            return json.loads(self.body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class Row:
    category: str
    server: str
    cases: int = 0
    ok: int = 0  # 2xx
    client_errors: int = 0  # 4xx
    shed: int = 0  # 503 by design
    server_errors: int = 0  # other 5xx
    hangs: int = 0
    unexpected: int = 0
    leaked: int = 0
    rss_before: float = 0.0
    rss_after: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.notes) < 8:
            self.notes.append(text[:300])

    def add(self, o: Outcome, expected: Collection[int], shape: bool = True) -> None:
        """Count one outcome; `expected`: the statuses this case may get (0: closed without a word);
        `shape`: errors must be OpenAI-shaped, short, and 429 / arena 503 carry Retry-After."""
        self.cases += 1
        if o.hang:
            self.hangs += 1
            self.note(f"{o.label}: no answer within the timeout")
            return
        if o.status is None:
            self.unexpected += 1
            self.note(f"{o.label}: {o.error}")
            return
        s = o.status
        if 200 <= s < 300:
            self.ok += 1
        elif 400 <= s < 500:
            self.client_errors += 1
        elif s == 503 and s in expected:
            self.shed += 1
        elif s >= 500:
            self.server_errors += 1
            self.note(f"{o.label}: {s} {o.body[:160]!r}")
            return
        problem = None if s in expected else f"got {s}, expected {sorted(expected)}"
        if problem is None and shape and s >= 400:
            problem = error_problem(o)
        if problem:
            self.unexpected += 1
            self.note(f"{o.label}: {problem}: {o.body[:120]!r}")

    def fail(self, text: str) -> None:
        """A check over several cases failed (one vote per battle, a rate limit's count, ...)."""
        self.unexpected += 1
        self.note(text)


def error_problem(o: Outcome) -> str | None:
    if o.size > MAX_ERROR_BYTES:
        return f"a {o.size}-byte error body (echoes the input?)"
    try:
        error = json.loads(o.body)["error"]
        assert {"message", "type", "param", "code"} <= set(error)
    except (ValueError, KeyError, TypeError, AssertionError):
        return "not an OpenAI-shaped error"
    if (o.status == 429 or error["code"] == "arena_busy") and "retry-after" not in o.headers:
        return f"{o.status} without Retry-After"
    return None


async def call(http: httpx.AsyncClient, method: str, path: str, label: str, **kwargs) -> Outcome:
    """One request; a JSON `body` (any object, lone surrogates escaped, or bytes sent as they are) or
    any other `content`."""
    if "body" in kwargs:
        body = kwargs.pop("body")
        kwargs["content"] = body if isinstance(body, bytes) else json.dumps(body).encode()
        kwargs["headers"] = {**JSON, **kwargs.get("headers", {})}
    start = time.perf_counter()
    try:
        r = await http.request(method, path, timeout=kwargs.pop("timeout", HANG_S), **kwargs)
    except httpx.TimeoutException:
        return Outcome(label, hang=True, seconds=time.perf_counter() - start)
    except httpx.HTTPError as exc:
        return Outcome(label, error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - start)
    body = r.content
    return Outcome(label, r.status_code, dict(r.headers), body[:2048], len(body), time.perf_counter() - start)


async def post(http: httpx.AsyncClient, path: str, label: str, **kwargs) -> Outcome:
    return await call(http, "POST", path, label, **kwargs)


# ----------------------------------------------------------------------------- the servers


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Target:
    """A running server: its URL and process id, how clients authenticate, how to count leaks."""

    name: str  # "serve" or "arena"
    url: str
    pid: int
    api_key: str | None = None
    max_active: int = 8  # arena: battles generating at once
    battles: list[str] = field(default_factory=list)  # arena: battles this run started
    _clients: itertools.count = field(default_factory=lambda: itertools.count(1))

    def client(self, **kwargs) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=HANG_S, limits=limits, **kwargs)

    def identity(self) -> dict[str, str]:
        """A fresh simulated client (behind the trusted proxy): its own rate-limit buckets."""
        i = next(self._clients)
        return {"X-Forwarded-For": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"}

    async def settle(self, timeout: float = 15.0) -> int:
        """What is still held once the server had `timeout` seconds to finish (see the docstring)."""
        return await (serve_load(self, timeout) if self.name == "serve" else arena_slots_held(self, timeout))


async def serve_load(t: Target, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    async with t.client() as http:
        while True:
            health = (await http.get("/health")).json()
            in_flight = 0
            for line in (await http.get("/metrics")).text.splitlines():
                if line.startswith("nanoseek_requests_in_flight "):
                    in_flight = int(float(line.split()[-1]))
            held = health["waiting"] + max(health["active"], health["busy_slots"], in_flight)
            if held == 0 or time.monotonic() > deadline:
                return held
            await asyncio.sleep(0.1)


async def battle_ended(http: httpx.AsyncClient, battle_id: str, timeout: float) -> bool:
    """Follow the battle's stream to its end; False if it does not end within `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            async with http.stream("GET", f"/api/battles/{battle_id}/stream") as r:
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        return True
    except (TimeoutError, httpx.HTTPError):
        pass
    return False


async def arena_slots_held(t: Target, timeout: float) -> int:
    """Battles still generating (`/api/health`) once every battle this run started has ended."""
    deadline = time.monotonic() + timeout
    async with t.client() as http:
        ended = await asyncio.gather(*(battle_ended(http, b, timeout) for b in t.battles))
        t.battles = [b for b, done in zip(t.battles, ended) if not done]
        while True:
            active = (await http.get("/api/health")).json()["active_battles"]
            if active == 0 or time.monotonic() > deadline:
                return active
            await asyncio.sleep(0.1)


def start_servers(tmp: Path, log) -> tuple[subprocess.Popen, subprocess.Popen, Target, Target]:
    """Build the demo checkpoint, start `nanoseek serve` and `nanoseek arena serve` on free ports."""
    model = build_demo_checkpoint(tmp / "model", depth=2, max_len=512)
    keys = tmp / "keys.txt"
    keys.write_text(f"# keys of the abuse benchmark\n{API_KEY}\n  sk-second  \n")
    contestants = tmp / "arena.toml"
    contestants.write_text(
        "".join(
            f'[[contestants]]\nname = "{name}"\nkind = "checkpoint"\npath = "{model}"\n'
            "params = { temperature = 0, max_new_tokens = 12 }\n"
            for name in ("demo-a", "demo-b")
        )
    )
    guard = f"--header-timeout {DEADLINES['header']} --body-timeout {DEADLINES['body']}".split()
    guard += ["--max-connections", str(MAX_CONNECTIONS)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    serve_port, arena_port = free_port(), free_port()
    serve_cmd = ["-m", "nanoseek.serve.cli", "--model", str(model), "--port", str(serve_port)]
    serve_cmd += ["--max-slots", "8", "--threads", "1", "--api-key-file", str(keys), "--log-level", "warning"]
    arena_cmd = ["-m", "nanoseek.arena.cli", "serve", "--contestants", str(contestants)]
    arena_cmd += ["--port", str(arena_port), "--db", str(tmp / "arena.db")]
    arena_cmd += ["--trusted-proxy", "127.0.0.1", "--seed", "0", "--bootstrap", "10"]
    serve = subprocess.Popen([sys.executable, *serve_cmd, *guard], env=env, stdout=log, stderr=log)
    arena = subprocess.Popen([sys.executable, *arena_cmd, *guard], env=env, stdout=log, stderr=log)
    wait_until_up(serve, f"http://127.0.0.1:{serve_port}/health")
    wait_until_up(arena, f"http://127.0.0.1:{arena_port}/api/health")
    return (
        serve,
        arena,
        Target("serve", f"http://127.0.0.1:{serve_port}", serve.pid, api_key=API_KEY),
        Target("arena", f"http://127.0.0.1:{arena_port}", arena.pid),
    )


async def ordinary_traffic(t: Target, sizes: Sizes) -> None:
    """What a server sees in normal use: for serve, the soak's mix of `bench/serve_bench.py`
    (streaming clients, a quarter of them closing the tab midway) and a batch of prompts; for the
    arena, as many battles as may generate at once, five times, a vote, and readers."""
    if t.name == "serve":
        await run_load(
            t.url,
            clients=sizes.disconnect_clients,
            duration=2.0,
            max_tokens=32,
            disconnect_fraction=0.25,
            api_key=t.api_key,
            seed=1,
        )
        async with t.client() as http:
            await post(http, COMPLETIONS, "warm-up", body={"prompt": ["hi"] * 8, "max_tokens": 8})
        return
    async with t.client() as http:
        ids = []
        for _ in range(5):
            hi = [{"prompt": f"Hi {i}"} for i in range(t.max_active)]
            started = await asyncio.gather(
                *(post(http, "/api/battles", "warm-up", body=b, headers=t.identity()) for b in hi)
            )
            ids += [json.loads(o.body)["battle_id"] for o in started if o.status == 201]
            await asyncio.gather(*(battle_ended(http, b, HANG_S) for b in ids))
        if ids:
            vote = {"battle_id": ids[0], "winner": "tie"}
            await post(http, "/api/vote", "warm-up", body=vote, headers=t.identity())
        reads = ["/api/leaderboard", "/api/contestants", *(f"/api/battles/{b}" for b in ids)] * 2
        await asyncio.gather(*(call(http, "GET", path, "warm-up") for path in reads))


async def warm_up(t: Target, sizes: Sizes) -> int:
    """Ordinary traffic until the server's RSS grows by less than 1% in a round (at most
    `sizes.warm_rounds` rounds), so that the RSS baseline is a server at work, not one that has
    answered nothing: an engine's memory grows over its first few hundred batches of new shapes,
    then stays. Returns the rounds it took."""
    rounds, last = 0, rss_mib(t.pid)
    while rounds < sizes.warm_rounds:
        await ordinary_traffic(t, sizes)
        rounds, now = rounds + 1, rss_mib(t.pid)
        if now < 1.01 * last:
            break
        last = now
    return rounds


# ----------------------------------------------------------------------------- the categories


def serve_malformed_cases() -> list[tuple[str, str, bytes | object]]:
    """(label, path, JSON body or raw bytes) that must all get a 4xx from `nanoseek serve`."""
    chat = {"messages": HI, "max_tokens": 4}
    bad_fields = {
        "messages": [
            None,
            "hi",
            [],
            [{}],
            [{"role": "wizard", "content": "x"}],
            [{"role": "user", "content": 5}],
            [{"role": "user", "content": "\ud800"}],
            [{"role": "user", "content": "a\udfffb"}],
        ],
        "max_tokens": [-1, "4", 2.5],  # a large one is allowed: it bounds the answer, the context the rest
        "n": [0, -1, 10**6, "2"],
        "temperature": [-1, 3, "hot"],
        "top_p": [2, -0.5],
        "stream": ["yes", 2],
        "stop": [5, ["a"] * 100],
        "logprobs": ["yes"],
        "top_logprobs": [100, -1],
        "presence_penalty": [5],
        "frequency_penalty": [-5],
        "seed": ["x"],
        "stream_options": ["x"],
        "max_completion_tokens": [-5],
    }
    cases: list[tuple[str, str, bytes | object]] = []
    for name, values in bad_fields.items():
        for v in values:
            body = (
                {k: w for k, w in chat.items() if k != name}
                if v is None and name == "messages"
                else {**chat, name: v}
            )
            cases.append((f"chat {name}={str(v)[:30]}", CHAT, body))
    completion = {"prompt": "hi", "max_tokens": 4}
    for name, v in [
        ("prompt", None),
        ("prompt", []),
        ("prompt", [-1]),
        ("prompt", [10**9]),
        ("prompt", 5),
        ("prompt", "\ud800"),
        ("echo", "x"),
        ("logprobs", 100),
        ("max_tokens", -1),
        ("best_of", 0),
    ]:
        body = {k: w for k, w in completion.items() if k != name} if v is None else {**completion, name: v}
        cases.append((f"completions {name}={str(v)[:30]}", COMPLETIONS, body))
    raw = [
        b"",
        b"{",
        b"not json",
        b"[]",
        b"null",
        b'"text"',
        b"123",
        b'{"messages": NaN}',
        b'{"messages": [{"role": "user", "content": "\xff\xfe"}], "max_tokens": 4}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"max_tokens": 1' + b"0" * 5000 + b', "messages": []}',
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e999}',
    ]
    cases += [(f"chat raw {body[:24]!r}", CHAT, body) for body in raw]
    cases += [(f"completions raw {body[:24]!r}", COMPLETIONS, body) for body in raw]
    return cases


async def malformed_serve(t: Target, row: Row, sizes: Sizes) -> None:
    async with t.client() as http:
        for label, path, body in serve_malformed_cases():
            row.add(await post(http, path, label, body=body), range(400, 500))
        plain = {"content": json.dumps({"messages": HI}).encode(), "headers": {"Content-Type": "text/plain"}}
        row.add(await post(http, CHAT, "text/plain body", **plain), range(400, 500))
        for method, path in (
            ("GET", "/v1/nope"),
            ("PUT", CHAT),
            ("GET", COMPLETIONS),
            ("DELETE", "/v1/models"),
            ("GET", "/v1/models/" + "x" * 5000),
            ("GET", "/v1/" + "x" * 5000),
            ("GET", "/" + "%00" * 100),
        ):
            row.add(await call(http, method, path, f"{method} {path[:30]}"), range(400, 500))


async def malformed_arena(t: Target, row: Row, sizes: Sizes) -> None:
    async with t.client() as http:
        voted = await started_battle(t, http)
        if voted:
            await post(
                http, "/api/vote", "vote", body={"battle_id": voted, "winner": "tie"}, headers=t.identity()
            )
        battle_bodies = [
            {},
            {"prompt": 5},
            {"prompt": None},
            {"prompt": ""},
            {"prompt": "   "},
            {"prompt": "\ud800"},
            {"prompt": "a\udfffb"},
            {"prompt": ["hi"]},
            {"prompt": "x" * 8001},
            [],
        ]
        vote_bodies = [
            {},
            {"battle_id": 5, "winner": "tie"},
            {"battle_id": "nope", "winner": "tie"},
            {"battle_id": "nope", "winner": "w" * 900_000},
            {"battle_id": voted, "winner": "w" * 900_000},
            {"battle_id": voted, "winner": "model_a"},
            {"battle_id": "\ud800", "winner": "tie"},
            {"battle_id": voted, "winner": None},
            {"battle_id": "x" * 900_000, "winner": "tie"},
        ]
        raw = [
            b"",
            b"{",
            b"not json",
            b"null",
            b'{"prompt": "\xff\xfe"}',
            b"[" * 100_000 + b"]" * 100_000,
            b'{"prompt": 1' + b"0" * 5000 + b"}",
            b'{"prompt": NaN}',
        ]
        cases = [(f"battle {str(b)[:30]}", "/api/battles", b) for b in battle_bodies + raw]
        cases += [(f"vote {str(b)[:40]}", "/api/vote", b) for b in vote_bodies + raw]
        for label, path, body in cases:
            row.add(await post(http, path, label, body=body, headers=t.identity()), range(400, 500))
        for method, path in (
            ("GET", "/nope"),
            ("DELETE", "/api/vote"),
            ("GET", "/api/battles/" + "x" * 5000),
            ("GET", "/api/battles/%00/stream"),
            ("PUT", "/api/battles"),
        ):
            row.add(await call(http, method, path, f"{method} {path[:30]}"), range(400, 500))


async def started_battle(t: Target, http: httpx.AsyncClient, prompt: str = "What is 2 + 2?") -> str | None:
    """A battle whose answers are complete (None if the arena would not start one)."""
    o = await post(http, "/api/battles", "battle", body={"prompt": prompt}, headers=t.identity())
    if o.status != 201:
        return None
    battle_id = json.loads(o.body)["battle_id"]
    t.battles.append(battle_id)
    await battle_ended(http, battle_id, HANG_S)
    return battle_id


async def timed_chats(http: httpx.AsyncClient, count: int) -> list[Outcome]:
    return [
        await post(http, CHAT, "normal client", body={"messages": HI, "max_tokens": 8}) for _ in range(count)
    ]


async def floods_serve(t: Target, row: Row, sizes: Sizes) -> None:
    flood = json.dumps({"prompt": ["Sort: 3, 1, 2."] * 20000, "n": 32, "max_tokens": 16}).encode()
    async with t.client() as http:
        alone = await timed_chats(http, 4)
        floods = [post(http, COMPLETIONS, "20,000 prompts x n=32", body=flood) for _ in range(4)]
        *flooded, during = await asyncio.gather(*floods, timed_chats(http, 4))
        for o in flooded:
            row.add(o, {400})
        for o in alone + during:
            row.add(o, {200})
        before, under = (statistics.median(o.seconds for o in group) for group in (alone, during))
        row.note(
            f"normal client: median {before * 1000:.0f} ms alone, {under * 1000:.0f} ms during the flood"
        )
        # more samples than the queue holds: each request is 8 prompts; the excess gets 429 + Retry-After
        body = {"prompt": [f"Count to {i}." for i in range(8)], "max_tokens": 2}
        many = await asyncio.gather(
            *(post(http, COMPLETIONS, "8-prompt burst", body=body) for _ in range(sizes.flood_requests))
        )
        for o in many:
            row.add(o, {200, 429})
        row.note(f"{sum(o.status == 429 for o in many)} of {len(many)} 8-prompt requests refused with 429")
        # a full queue (128 prompts x n=2 = the 256 waiting samples it holds), then the client hangs up
        await serve_load(t, 15)  # the burst's work is done
        full = {"prompt": ["Tell me a story."] * 128, "n": 2, "max_tokens": 64, "stream": True}
        async with http.stream("POST", COMPLETIONS, json=full) as r:
            row.add(Outcome("full queue, then a hang-up", r.status_code, dict(r.headers)), {200})
            async for _ in r.aiter_lines():
                break
        hung_up = time.monotonic()
        while (await http.get("/health")).json()["waiting"] and time.monotonic() - hung_up < 10:
            await asyncio.sleep(0.02)
        emptied = time.monotonic() - hung_up
        row.note(f"nothing waiting {emptied:.2f} s after the flooding client hung up")
        if emptied > 1.5:  # issue 15: within a second (and a little for a busy 2-core machine)
            row.fail(f"the queue took {emptied:.1f} s to empty after the flooding client hung up")


async def floods_arena(t: Target, row: Row, sizes: Sizes) -> None:
    one = t.identity()  # all from one client
    async with t.client() as http:
        prompts = [{"prompt": f"Q{i}"} for i in range(sizes.arena_flood)]
        out = await asyncio.gather(
            *(post(http, "/api/battles", "battle flood", body=b, headers=one) for b in prompts)
        )
    for o in out:
        row.add(o, {201, 429, 503})
        if o.status == 201:
            t.battles.append(json.loads(o.body)["battle_id"])
    accepted = sum(o.status == 201 for o in out)
    row.note(
        f"{sizes.arena_flood} battles from one client: {accepted} started, "
        f"{sum(o.status == 503 for o in out)} busy (503), {sum(o.status == 429 for o in out)} rate-limited (429)"
    )
    if accepted > 21:  # the burst is 20 (one more may refill while the requests arrive)
        row.fail(f"{accepted} battles accepted from one client, over the limit of 20 a minute")


@contextmanager
def polled(url: str) -> Iterator[list[float]]:
    """The latencies of GET `url` every 50 ms while the block runs, from a thread of its own (so the
    benchmark's event loop, busy sending megabytes, does not delay the probe)."""
    seconds: list[float] = []
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(timeout=HANG_S) as http:
            while not stop.is_set():
                start = time.perf_counter()
                http.get(url)
                seconds.append(time.perf_counter() - start)
                stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield seconds
    finally:
        stop.set()
        thread.join()


async def huge_serve(t: Target, row: Row, sizes: Sizes) -> None:
    text = "Sort: 3, 1, 2. " * (4_000_000 // 15)  # ~4.0 MB: a body just under the 4 MiB limit
    bodies = [
        (CHAT, {"messages": [{"role": "user", "content": text}], "max_tokens": 4}),
        (COMPLETIONS, {"prompt": text, "max_tokens": 4}),
    ]
    async with t.client() as http:
        for path, body in bodies:
            payload = json.dumps(body).encode()
            with polled(t.url + "/health") as health:
                out = await asyncio.gather(
                    *(post(http, path, f"4 MB prompt to {path}", body=payload) for _ in range(4))
                )
            for o in out:
                row.add(o, {400})
            row.note(
                f"four 4 MB prompts to {path}: answered in {max(o.seconds for o in out):.2f} s, "
                f"/health at most {max(health, default=0) * 1000:.0f} ms"
            )


async def huge_arena(t: Target, row: Row, sizes: Sizes) -> None:
    text = "Sort: 3, 1, 2. " * (1_000_000 // 15)  # under the arena's 1 MiB body limit
    async with t.client() as http:
        body = {"prompt": text}
        out = await asyncio.gather(
            *(post(http, "/api/battles", "1 MB prompt", body=body, headers=t.identity()) for _ in range(4))
        )
    for o in out:
        row.add(o, {400})


async def raw_socket(
    url: str, label: str, send_first: bytes, drip: bytes | None, limit: float, until_closed: bool = True
) -> Outcome:
    """Open a connection, send `send_first`, then `drip` every 0.25 s; wait for the server to answer
    and close (status 0: closed without a word), or only to answer if not `until_closed`; a hang if
    that takes more than `limit` seconds."""
    host, port = url.removeprefix("http://").split(":")
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
    except OSError as exc:
        return Outcome(label, error=f"connect: {exc}")

    async def dribble() -> None:
        try:
            writer.write(send_first)
            while drip:
                await writer.drain()
                await asyncio.sleep(0.25)
                writer.write(drip)
        except (ConnectionError, RuntimeError):
            pass

    sender = asyncio.ensure_future(dribble())
    received = b""
    try:
        async with asyncio.timeout(limit):
            while chunk := await reader.read(65536):
                received += chunk
                if not until_closed and answered(received):
                    break
    except TimeoutError:
        return Outcome(label, hang=True, seconds=time.perf_counter() - start)
    except ConnectionError:
        pass  # reset after the answer: closed
    finally:
        sender.cancel()
        writer.close()
    status = int(received[9:12]) if received.startswith(b"HTTP/1.1 ") else 0
    body = received.partition(b"\r\n\r\n")[2]
    return Outcome(label, status, {}, body[:2048], len(body), time.perf_counter() - start)


def answered(received: bytes) -> bool:
    """Whether `received` holds a whole HTTP response (its head and Content-Length bytes of body)."""
    head, sep, body = received.partition(b"\r\n\r\n")
    length = next(
        (line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")),
        b"0",
    )
    return bool(sep) and len(body) >= int(length)


async def slow(t: Target, row: Row, sizes: Sizes) -> None:
    path = CHAT if t.name == "serve" else "/api/battles"
    host = t.url.removeprefix("http://")
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    kinds = {  # what each slow client sends first, then drips; the answer it must get
        "headers": (head.encode() + b"X-Pad: ", b"a", {408, 503}),
        "body": (f"{head}Content-Length: 100000\r\n\r\n".encode() + b"{", b" ", {408, 503}),
        "silent": (b"", None, {0, 503}),
    }
    limit = max(DEADLINES.values()) + 5
    fds_before = open_fds(t.pid)
    wave = [
        raw_socket(t.url, k, kinds[k][0], kinds[k][1], limit)
        for k in itertools.islice(itertools.cycle(kinds), sizes.slow_sockets)
    ]
    tasks = [asyncio.ensure_future(w) for w in wave]
    await asyncio.sleep(1.0)
    fds_peak = open_fds(t.pid)
    for kind, o in zip(itertools.cycle(kinds), await asyncio.gather(*tasks)):
        row.add(o, kinds[kind][2], shape=False)
    row.note(
        f"{sizes.slow_sockets} slow clients: server fds {fds_before} -> {fds_peak} (1 s in) -> {open_fds(t.pid)} after"
    )
    # more connections than the cap: the extra ones are answered 503 at once
    cap = [
        raw_socket(t.url, "idle over the cap", b"", None, limit)
        for _ in range(MAX_CONNECTIONS + sizes.cap_extra)
    ]
    out = await asyncio.gather(*cap)
    for o in out:
        row.add(o, {0, 503}, shape=False)
    shed = sum(o.status == 503 for o in out)
    row.note(f"{len(out)} idle connections against a cap of {MAX_CONNECTIONS}: {shed} answered 503")
    if shed < sizes.cap_extra // 2:
        row.fail(f"only {shed} of {len(out)} connections refused with a cap of {MAX_CONNECTIONS}")


async def disconnects_serve(t: Target, row: Row, sizes: Sizes) -> None:
    result = await run_load(
        t.url,
        clients=sizes.disconnect_clients,
        duration=sizes.disconnect_seconds,
        max_tokens=32,
        disconnect_fraction=0.5,
        api_key=t.api_key,
        seed=3,
    )
    for _ in range(result.completed + result.disconnected):
        row.add(Outcome("stream", 200), {200})
    for error in result.errors:
        status = int(error[5:8]) if error.startswith("HTTP ") else None
        row.add(Outcome(f"stream: {error[:100]}", status, error=error), {200})
    row.note(f"{result.requests} streams, {result.disconnected} hung up midway")


async def disconnects_arena(t: Target, row: Row, sizes: Sizes) -> None:
    async with t.client() as http:
        ids = []
        for i in range(sizes.race_battles):
            o = await post(
                http, "/api/battles", "battle", body={"prompt": f"Tell me about {i}."}, headers=t.identity()
            )
            row.add(o, {201})
            if o.status == 201:
                ids.append(json.loads(o.body)["battle_id"])
                async with http.stream("GET", f"/api/battles/{ids[-1]}/stream") as r:
                    async for _ in r.aiter_lines():
                        break  # hang up after the first event
        t.battles += ids
        await asyncio.gather(*(battle_ended(http, b, HANG_S) for b in ids))
        for battle_id in ids:
            view = (await http.get(f"/api/battles/{battle_id}")).json()
            if view.get("answer_a") is None or view.get("answer_b") is None:
                row.fail(f"battle {battle_id}: answers missing after its follower hung up")


async def races(t: Target, row: Row, sizes: Sizes) -> None:
    async with t.client() as http:
        votes_before = (await http.get("/api/leaderboard")).json()["votes"]
        raced = 0
        for _ in range(sizes.race_battles):
            battle_id = await started_battle(t, http)
            if battle_id is None:
                row.fail("could not start a battle to vote on")
                continue
            winners = [random.choice(["model_a", "model_b", "tie", "tie (bothbad)"]) for _ in range(16)]
            votes = [{"battle_id": battle_id, "winner": w} for w in winners]
            out = await asyncio.gather(
                *(post(http, "/api/vote", "racing vote", body=v, headers=t.identity()) for v in votes)
            )
            for o in out:
                row.add(o, {200, 409})
            won = [w for w, o in zip(winners, out) if o.status == 200]
            stored = (await http.get(f"/api/battles/{battle_id}")).json()
            if len(won) != 1 or stored.get("winner") != won[0]:
                row.fail(
                    f"battle {battle_id}: {len(won)} votes accepted, stored winner {stored.get('winner')!r}"
                )
            raced += 1
        votes_after = (await http.get("/api/leaderboard")).json()["votes"]
        if votes_after - votes_before != raced:
            row.fail(f"{raced} raced battles added {votes_after - votes_before} votes")
        row.note(f"{raced} battles x 16 racing voters: {votes_after - votes_before} votes stored")


async def rates(t: Target, row: Row, sizes: Sizes) -> None:
    for what, path, limit, tries in (("battles", "/api/battles", 20, 30), ("votes", "/api/vote", 30, 40)):
        one = t.identity()
        body = (
            {"prompt": "Rate me."} if what == "battles" else {"battle_id": "no-such-battle", "winner": "tie"}
        )
        async with t.client() as http:
            out = [
                await post(http, path, f"{what} over the limit", body=body, headers=one) for _ in range(tries)
            ]
        allowed = {201, 503, 429} if what == "battles" else {404, 429}
        for o in out:
            row.add(o, allowed)
            if o.status == 201:
                t.battles.append(json.loads(o.body)["battle_id"])
        refused = sum(o.status == 429 for o in out)
        row.note(f"{tries} {what} from one client (limit {limit}/min): {refused} got 429 + Retry-After")
        if refused < tries - limit - 1:
            row.fail(f"{what}: only {refused} of {tries} refused with a limit of {limit} a minute")


async def bodies(t: Target, row: Row, sizes: Sizes) -> None:
    path, limit = (CHAT, 4 * 2**20) if t.name == "serve" else ("/api/battles", 2**20)
    big = json.dumps(
        {"messages": [{"role": "user", "content": "x" * (limit + 2**20)}], "prompt": "x" * 10}
    ).encode()
    async with t.client() as http:
        row.add(await post(http, path, "over the limit", body=big), {413})

        async def chunks():
            for _ in range(limit // 2**16 + 32):
                yield b"x" * 2**16

        row.add(await post(http, path, "chunked, no length", content=chunks(), headers=JSON), {413})
    host = t.url.removeprefix("http://")
    lie = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 200000000\r\n\r\n{{"
    row.add(await raw_socket(t.url, "declares 200 MB", lie.encode(), None, HANG_S, until_closed=False), {413})


async def host(t: Target, row: Row, sizes: Sizes) -> None:
    port = t.url.rsplit(":", 1)[1]
    paths = ["/health", "/v1/models"] if t.name == "serve" else ["/", "/api/contestants"]
    bad = [
        "evil.example",
        f"evil.example:{port}",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        f"attacker.test:{port}",
    ]
    good = [f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"]
    async with t.client() as http:
        for p in paths:
            for name in bad:
                row.add(await call(http, "GET", p, f"Host: {name}", headers={"Host": name}), {400})
            for name in good:
                row.add(await call(http, "GET", p, f"Host: {name}", headers={"Host": name}), {200})


async def auth(t: Target, row: Row, sizes: Sizes) -> None:
    refused = [
        None,
        "Bearer wrong",
        "Bearer sk-bench",
        "Bearer sk-bench#",
        "Basic c2stYmVuY2gjMQ==",
        "Bearer",
        "Bearer # keys of the abuse benchmark",
        f"Bearer {API_KEY} extra",
    ]
    accepted = [f"Bearer {API_KEY}", "bearer sk-second"]
    async with httpx.AsyncClient(base_url=t.url, timeout=HANG_S) as http:  # no key by default
        for header in refused + accepted:
            headers = {"Authorization": header} if header is not None else {}
            expected = {200} if header in accepted else {401}
            row.add(
                await call(http, "GET", "/v1/models", f"Authorization: {header}", headers=headers), expected
            )
            chat = {"messages": HI, "max_tokens": 2}
            row.add(
                await post(http, CHAT, f"chat, Authorization: {header}", headers=headers, body=chat), expected
            )
    with tempfile.TemporaryDirectory() as tmp:  # a key file without keys must not start an open server
        keys = Path(tmp) / "keys.txt"
        keys.write_text("# only comments\n   # and blanks\n\n")
        cmd = [sys.executable, "-m", "nanoseek.serve.cli", "--model", tmp, "--port", str(free_port())]
        cmd += ["--api-key-file", str(keys)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        o = Outcome(
            "key file with only comments", 400 if done.returncode == 2 else 200, body=done.stderr.encode()
        )
        row.add(o, {400}, shape=False)
        if done.returncode != 2 or len(done.stderr.splitlines()) != 1:
            row.fail(f"a key file without keys: exit {done.returncode}, stderr {done.stderr[-200:]!r}")


Category = Callable[[Target, Row, Sizes], Awaitable[None]]
CATEGORIES: dict[str, dict[str, Category]] = {
    "malformed": {"serve": malformed_serve, "arena": malformed_arena},
    "floods": {"serve": floods_serve, "arena": floods_arena},
    "huge": {"serve": huge_serve, "arena": huge_arena},
    "slow": {"serve": slow, "arena": slow},
    "disconnects": {"serve": disconnects_serve, "arena": disconnects_arena},
    "races": {"arena": races},
    "rates": {"arena": rates},
    "bodies": {"serve": bodies, "arena": bodies},
    "host": {"serve": host, "arena": host},
    "auth": {"serve": auth},
}


async def run_category(name: str, t: Target, sizes: Sizes) -> Row:
    """One category against one server, with the leak count and RSS around it."""
    row = Row(name, t.name, rss_before=rss_mib(t.pid))
    start = time.perf_counter()
    await CATEGORIES[name][t.name](t, row, sizes)
    row.leaked = await t.settle()
    await asyncio.sleep(0.5)
    row.rss_after = rss_mib(t.pid)
    row.seconds = time.perf_counter() - start
    return row


# ----------------------------------------------------------------------------- the table


COLUMNS = ["category", "server", "cases", "2xx", "4xx", "shed", "5xx", "hangs", "unexpected", "leaked"]
COLUMNS += ["RSS before", "RSS after"]
COUNTS = ("cases", "ok", "client_errors", "shed", "server_errors", "hangs", "unexpected", "leaked")  # Row's


def table(rows: list[Row]) -> str:
    cells = [
        [
            r.category,
            r.server,
            *(getattr(r, k) for k in COUNTS),
            f"{r.rss_before:.0f} MiB",
            f"{r.rss_after:.0f} MiB",
        ]
        for r in rows
    ]
    total = [sum(r[i] for r in cells) for i in range(2, 10)]
    cells.append(["all", "", *total, "", ""])
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in cells]
    return "\n".join(lines)


def verdict(rows: list[Row], rss: dict[str, dict[str, float]]) -> list[str]:
    """What misses the goal (empty: met). `rss`: server -> {"started", "warmed", "end"} in MiB."""
    misses = [
        f"{sum(getattr(r, k) for r in rows)} {k.replace('_', ' ')}"
        for k in ("server_errors", "hangs", "unexpected", "leaked")
        if sum(getattr(r, k) for r in rows)
    ]
    misses += [
        f"{name} RSS {m['end']:.0f} MiB is more than 10% above {m['warmed']:.0f} MiB"
        for name, m in rss.items()
        if m["end"] > 1.10 * m["warmed"]
    ]
    return misses


async def attack(targets: list[Target], names: list[str], sizes: Sizes) -> tuple[list[Row], dict]:
    """Warm the servers up, run each category against each server; (rows, name -> (RSS when the
    server had just started, after the warm-up, at the end))."""
    cold = {t.name: rss_mib(t.pid) for t in targets}
    warm = {t.name: await warm_up(t, sizes) for t in targets}
    await asyncio.sleep(0.5)
    start_rss = {t.name: rss_mib(t.pid) for t in targets}
    print("warmed up: " + ", ".join(f"{n} in {r} round(s) of ordinary traffic" for n, r in warm.items()))
    rows = []
    for name in names:
        for t in targets:
            if t.name in CATEGORIES[name]:
                rows.append(await run_category(name, t, sizes))
                r = rows[-1]
                print(f"  {name:<12} {t.name:<6} {r.cases:5d} cases in {r.seconds:5.1f} s", flush=True)
    await asyncio.sleep(1.0)
    return rows, {
        t.name: {"started": cold[t.name], "warmed": start_rss[t.name], "end": rss_mib(t.pid)} for t in targets
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer cases of each category (~45 s)")
    p.add_argument("--only", default=None, help=f"comma-separated categories (of {', '.join(CATEGORIES)})")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the rows and the verdict here")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(CATEGORIES)
    unknown = [n for n in names if n not in CATEGORIES]
    if unknown:
        p.error(f"unknown categories {unknown}; choose from {', '.join(CATEGORIES)}")
    sizes = Sizes.quick() if args.quick else Sizes()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "servers.log", "w+b") as log:
        serve, arena, *targets = start_servers(Path(tmp), log)
        print(
            f"servers up in {time.perf_counter() - began:.1f} s: serve {targets[0].url}, arena {targets[1].url}",
            flush=True,
        )
        try:
            rows, rss = asyncio.run(attack(targets, names, sizes))
            crashed = [
                f"{t.name} exited" for t, proc in zip(targets, (serve, arena)) if proc.poll() is not None
            ]
        finally:
            for process in (serve, arena):
                process.terminate()
                process.wait(timeout=30)
    seconds = time.perf_counter() - began
    print("\n" + table(rows))
    for r in rows:
        for n in r.notes:
            print(f"  {r.category}/{r.server}: {n}")
    for name, m in rss.items():
        change = 100 * (m["end"] / m["warmed"] - 1)
        print(
            f"RSS {name}: {m['started']:.0f} MiB started, {m['warmed']:.0f} MiB after the warm-up, "
            f"{m['end']:.0f} MiB at the end ({change:+.1f}%)"
        )
    misses = verdict(rows, rss) + crashed
    print(f"{seconds:.0f} s in all; goal " + ("met" if not misses else "missed: " + "; ".join(misses)))
    if args.json:
        out = {
            "rows": [asdict(r) for r in rows],
            "rss": rss,
            "seconds": seconds,
            "misses": misses,
            "quick": args.quick,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
