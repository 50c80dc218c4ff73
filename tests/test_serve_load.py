"""`nanoseek serve` under load and under fuzzing.

- 64 concurrent streaming clients, a quarter hanging up mid-stream: no errors, no leaked slots (the
  metrics read zero active afterwards, no request object stays alive), resident memory flat.
  8 seconds here; the acceptance run is NANOSEEK_SERVE_LOAD_SECONDS=60 (or `bench/serve_bench.py
  --soak 60`).
- The OpenAPI schema of /v1/chat/completions, fuzzed with schemathesis (valid and invalid bodies):
  never a 5xx. NANOSEEK_SERVE_FUZZ_EXAMPLES sets the number of examples per mode (default 40).
"""

import asyncio
import gc
import os
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoseek.engine import Engine, RequestHandle
from nanoseek.serve import ServerConfig, create_app
from nanoseek.serve.background import BackgroundServer
from nanoseek.serve.bridge import Generation
from nanoseek.serve.loadgen import run_load

LOAD_SECONDS = float(os.environ.get("NANOSEEK_SERVE_LOAD_SECONDS", "8"))
FUZZ_EXAMPLES = int(os.environ.get("NANOSEEK_SERVE_FUZZ_EXAMPLES", "40"))


pytestmark = pytest.mark.usefixtures("one_thread")


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    raise KeyError(name)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_64_streaming_clients_with_disconnects(demo_checkpoint):
    engine = Engine.from_pretrained(demo_checkpoint, max_slots=16)
    with BackgroundServer(create_app(engine, ServerConfig(max_queue=256))) as server:
        warm = asyncio.run(
            run_load(server.url, clients=64, duration=4, max_tokens=48, disconnect_fraction=0.25)
        )
        assert warm.errors == []
        rss_before = rss_bytes()
        result = asyncio.run(
            run_load(
                server.url, clients=64, duration=LOAD_SECONDS, max_tokens=48, disconnect_fraction=0.25, seed=1
            )
        )
        rss_after = rss_bytes()
        print(result.summary(), f"RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB")
        assert result.errors == [], result.errors[:5]
        assert result.completed > 0 and result.disconnected > 0
        assert result.requests == result.completed + result.disconnected
        deadline = time.monotonic() + 30
        while True:  # aborted requests give their slots back at the engine's next step
            text = httpx.get(server.url + "/metrics").text
            idle = all(
                metric(text, name) == 0
                for name in ("nanoseek_active_slots", "nanoseek_queue_depth", "nanoseek_requests_in_flight")
            )
            if idle or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert idle, "slots, queue or in-flight requests leaked"
        assert metric(text, "nanoseek_active_requests") == 0
        assert metric(text, 'nanoseek_generations_total{reason="disconnect"}') >= result.disconnected
        # nothing of a finished request stays alive (a leak would show here long before in RSS)
        gc.collect()
        live = [o for o in gc.get_objects() if type(o) in (Generation, RequestHandle)]
        assert live == [], f"{len(live)} generations or engine handles still alive"
        # RSS: allocator and oneDNN shape caches settle; a per-request leak would keep it climbing
        assert rss_after - rss_before < 96 * 2**20, "memory grew under steady load"


def test_fuzzing_the_chat_completions_schema_gives_no_5xx(demo_checkpoint):
    schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis")
    from schemathesis.generation.modes import GenerationMode

    engine = Engine.from_pretrained(demo_checkpoint, max_slots=8, max_len=96)
    app = create_app(engine, ServerConfig(request_timeout=5, max_queue=64))
    operation = schemathesis.openapi.from_dict(app.openapi())["/v1/chat/completions"]["POST"]
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    statuses: dict[int, int] = {}
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:

        @settings(max_examples=2 * FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=cases)
        def check(case):
            if isinstance(case.body, (bytes, str)):
                response = http.post(
                    "/v1/chat/completions", content=case.body, headers={"Content-Type": case.media_type or ""}
                )
            else:
                response = http.post("/v1/chat/completions", json=case.body)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case.body, response.text)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"}

        check()
        print("status codes:", statuses)
        assert statuses.get(200, 0) > 0 and statuses.get(400, 0) > 0  # both kinds were exercised
        assert httpx.get(server.url + "/health").json()["status"] == "ok"
