"""bench/abuse.py in small: its bookkeeping (what counts as a 5xx, a hang, an unexpected answer, a
missed goal), and two of its categories run end to end against in-process servers (`nanoseek serve`
on the demo checkpoint, the arena on scripted contestants), which must come out clean.
The full run (real processes, every category) is `python bench/abuse.py`; docs/benchmarks.md."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from helpers import scripted_contestants

from nanoseek.arena import ArenaStore
from nanoseek.arena.app import create_app as create_arena
from nanoseek.arena.limits import ArenaLimits
from nanoseek.arena.live import LiveArena
from nanoseek.serve import ServerConfig
from nanoseek.serve.background import BackgroundServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import abuse  # noqa: E402  (bench/abuse.py)


def test_outcomes_are_counted_by_what_each_case_must_get():
    row = abuse.Row("x", "serve")
    error = b'{"error": {"message": "m", "type": "t", "param": null, "code": "c"}}'
    row.add(abuse.Outcome("bad body", 400, {}, error, len(error)), range(400, 500))
    row.add(abuse.Outcome("accepted a bad body", 200, {}, b"{}", 2), range(400, 500))
    row.add(abuse.Outcome("crash", 500, {}, error, len(error)), {400})
    row.add(abuse.Outcome("slow", hang=True), {400})
    row.add(abuse.Outcome("reset", error="ReadError"), {400})
    row.add(abuse.Outcome("429 without Retry-After", 429, {}, error, len(error)), {429})
    row.add(abuse.Outcome("429", 429, {"retry-after": "3"}, error, len(error)), {429})
    row.add(abuse.Outcome("echo", 400, {}, error, 10_000), {400})
    row.add(abuse.Outcome("not the shape", 400, {}, b'{"detail": "x"}', 15), {400})
    row.add(abuse.Outcome("cap", 503, {}, b"", 0), {0, 503}, shape=False)
    assert (row.cases, row.ok, row.client_errors, row.shed, row.server_errors, row.hangs) == (
        10,
        1,
        5,
        1,
        1,
        1,
    )
    assert row.unexpected == 5  # the 200, the reset, the 429 without Retry-After, the echo, the shape
    rss = {
        "serve": {"started": 250.0, "warmed": 300.0, "end": 320.0},
        "arena": {"started": 250.0, "warmed": 300.0, "end": 340.0},
    }
    misses = abuse.verdict([row], rss)
    assert "1 server errors" in misses and "1 hangs" in misses and "5 unexpected" in misses
    assert any(m.startswith("arena RSS") for m in misses) and not any(
        m.startswith("serve RSS") for m in misses
    )
    clean = {"arena": {"started": 250.0, "warmed": 300.0, "end": 329.0}}
    assert abuse.verdict([abuse.Row("y", "arena", cases=3, ok=3)], clean) == []
    assert "| all |  | 10 | 1 | 5 | 1 | 1 | 1 | 5 | 0 |" in abuse.table([row])


@pytest.fixture(scope="module")
def server_config():
    return ServerConfig(model_name="demo", api_keys=[abuse.API_KEY, "sk-second"])


@pytest.fixture(scope="module")
def serve_target(one_thread, server):
    return abuse.Target("serve", server.url, os.getpid(), api_key=abuse.API_KEY)


@pytest.mark.parametrize("category", ["malformed", "host"])
def test_a_category_against_nanoseek_serve_comes_out_clean(serve_target, category):
    row = asyncio.run(abuse.run_category(category, serve_target, abuse.Sizes.quick()))
    assert row.cases >= 18 and row.client_errors > 0
    assert (row.server_errors, row.hangs, row.unexpected, row.leaked) == (0, 0, 0, 0), row.notes


def test_host_against_the_arena_comes_out_clean(tmp_path):
    limits = ArenaLimits(allowed_hosts=(), trusted_proxies=("127.0.0.1",))
    live = LiveArena(scripted_contestants(), ArenaStore(tmp_path / "arena.db"), seed=0, max_active=3)
    with BackgroundServer(create_arena(live, limits=limits), limits=limits) as server:
        target = abuse.Target("arena", server.url, os.getpid(), max_active=3)
        row = asyncio.run(abuse.run_category("host", target, abuse.Sizes.quick()))
        assert live.active == 0
    assert row.cases == 18 and row.ok == 8 and row.client_errors == 10
    assert (row.server_errors, row.hangs, row.unexpected, row.leaked) == (0, 0, 0, 0), row.notes
