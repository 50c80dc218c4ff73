"""`nanoseek serve` refusing what it should: invalid parameters (400 naming them), prompts over the
context, oversized bodies (413), a full queue (429 + Retry-After), timeouts (408), API keys (401),
CORS only when configured; and cancelling: a client that disconnects frees its cache slots.
"""

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest
from helpers import error_of

from nanoseek.engine import Engine
from nanoseek.serve import ServerConfig, create_app
from nanoseek.serve.auth import load_api_keys
from nanoseek.serve.background import BackgroundServer
from nanoseek.serve.bridge import wait_event
from nanoseek.serve.errors import validation_param

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
LONG = {"messages": HI, "ignore_eos": True, "stream": True}  # loops the script until the context is full


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def server_config():
    return ServerConfig(model_name="demo", max_body_bytes=20_000)


def slow_engine(checkpoint, seconds_per_step: float = 0.02, max_slots: int = 1) -> Engine:
    """An engine whose steps take at least `seconds_per_step`, so a long request surely still runs
    when the test acts, however fast the machine."""
    engine = Engine.from_pretrained(checkpoint, max_slots=max_slots)
    step = engine.step

    def slow_step():
        time.sleep(seconds_per_step)
        return step()

    engine.step = slow_step
    return engine


@pytest.fixture(scope="module")
def slow_server(demo_checkpoint):
    with BackgroundServer(create_app(slow_engine(demo_checkpoint, 0.01, max_slots=4))) as s:
        yield s


def disconnects(client: httpx.Client) -> float:
    """The server's count of generations cancelled because their client went away."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('nanoseek_generations_total{reason="disconnect"}'):
            return float(line.split()[-1])
    return 0.0


def wait_until_idle(client: httpx.Client, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = client.get("/health").json()
        if health["active"] == health["waiting"] == health["busy_slots"] == 0 or time.monotonic() > deadline:
            return health
        time.sleep(0.05)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": HI, "temperature": 2.5}, "temperature"),
        ({"messages": HI, "temperature": "hot"}, "temperature"),
        ({"messages": HI, "top_p": 1.5}, "top_p"),
        ({"messages": HI, "n": 0}, "n"),
        ({"messages": HI, "n": 1.0}, "n"),
        ({"messages": HI, "n": 9}, "n"),  # more samples than the engine's 4 slots
        ({"messages": HI, "max_tokens": 0}, "max_tokens"),
        ({"messages": HI, "presence_penalty": 3}, "presence_penalty"),
        ({"messages": HI, "frequency_penalty": -2.5}, "frequency_penalty"),
        ({"messages": HI, "top_logprobs": 3}, "top_logprobs"),  # needs logprobs: true
        ({"messages": HI, "top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"messages": HI, "stop": ["a", 3]}, "stop[1]"),
        ({"messages": HI, "stop": ["s"] * 17}, "stop"),
        ({"messages": HI, "stream": "yes"}, "stream"),
        ({"messages": HI, "seed": 2**70}, "seed"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].type",
        ),
        ({"model": "demo"}, "messages"),
    ],
)
def test_invalid_parameters_are_400s_naming_the_parameter(http, body, param):
    r = http.post(CHAT, json=body)
    assert r.status_code == 400, r.text
    error = error_of(r)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param.split("[")[0].split(".")[0] in error["message"] or param in error["message"]


def test_bad_json_lone_surrogates_and_unknown_fields(http):
    r = http.post(CHAT, content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in error_of(r)["message"]
    raw = '{"messages": [{"role": "user", "content": "\\ud800"}]}'  # valid JSON, invalid Unicode
    r = http.post(CHAT, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and error_of(r)["param"] == "messages[0].content"
    r = http.post(CHAT, json={"messages": HI, "max_tokens": 1, "frobnicate": {"x": 1}, "tools": []})
    assert r.status_code == 200


def test_completions_validation(http):
    assert error_of(http.post("/v1/completions", json={"prompt": []}))["param"] == "prompt"
    assert error_of(http.post("/v1/completions", json={"prompt": [[]]}))["param"] == "prompt"
    assert error_of(http.post("/v1/completions", json={"prompt": [10**9]}))["param"] == "prompt"
    assert error_of(http.post("/v1/completions", json={"prompt": "x", "suffix": "y"}))["param"] == "suffix"
    assert error_of(http.post("/v1/completions", json={"prompt": "x", "logprobs": 30}))["param"] == "logprobs"


def test_prompt_over_the_context_is_a_400_that_says_so(http):
    long = [{"role": "user", "content": "Tell me a story about a dog. " * 80}]
    r = http.post(CHAT, json={"messages": long})
    error = error_of(r)
    assert r.status_code == 400 and error["code"] == "context_length_exceeded"
    assert "maximum context length is 256 tokens" in error["message"]
    r = http.post(CHAT, json={"messages": HI, "max_completion_tokens": 1000})
    assert r.status_code == 400 and error_of(r)["param"] == "max_completion_tokens"
    assert "maximum context length" in error_of(r)["message"]
    r = http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 300})
    assert r.status_code == 400 and error_of(r)["code"] == "context_length_exceeded"


def test_oversized_body_is_413(http):
    r = http.post(CHAT, json={"messages": [{"role": "user", "content": "x" * 30_000}]})
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"


def test_unknown_path_and_method_are_openai_errors(http):
    assert http.get("/v1/nothing").status_code == 404 and error_of(http.get("/v1/nothing"))
    r = http.get(CHAT)
    assert r.status_code == 405 and error_of(r)
    r = http.get("/v1/models/other")
    assert r.status_code == 404 and error_of(r)["code"] == "model_not_found"


def test_stream_disconnect_frees_the_slot(slow_server):
    http = httpx.Client(base_url=slow_server.url, timeout=60)
    before = disconnects(http)
    with (
        httpx.Client(base_url=slow_server.url, timeout=60) as other,
        other.stream("POST", CHAT, json=LONG) as r,
    ):
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert next(lines) == "" and next(lines).startswith("data: ")  # a token: admitted
        assert http.get("/health").json()["busy_slots"] == 1
    # leaving the block closed the connection mid-stream
    health = wait_until_idle(http)
    assert health["busy_slots"] == 0 and health["active"] == 0
    assert disconnects(http) == before + 1


def test_non_stream_disconnect_frees_the_slots(slow_server):
    http = httpx.Client(base_url=slow_server.url, timeout=60)
    before = disconnects(http)
    body = json.dumps({"messages": HI, "ignore_eos": True, "n": 3, "max_completion_tokens": 200}).encode()
    url = httpx.URL(slow_server.url)
    head = f"POST {CHAT} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    with socket.create_connection((url.host, url.port)) as client:  # a client that hangs up ...
        client.sendall(head.encode() + body)
        deadline = time.monotonic() + 20
        while http.get("/health").json()["busy_slots"] < 3:  # ... once its 3 samples run (>= 2 s)
            assert time.monotonic() < deadline, "the request was never admitted"
            time.sleep(0.01)
    health = wait_until_idle(http)
    assert health["busy_slots"] == 0 and health["active"] == 0
    assert disconnects(http) == before + 1


def test_a_cancel_that_arrives_with_a_delta_still_cancels():
    """The disconnect race behind a rare CI failure: the engine's wake-up and the client's cancel land
    in the same loop turn. The cancel must win, or the generation runs on to its end."""

    async def race() -> None:
        event = asyncio.Event()
        waiting = asyncio.ensure_future(wait_event(event, 5.0))
        await asyncio.sleep(0)  # it now waits for the event
        event.set()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(race())


def test_full_queue_is_429_with_retry_after_and_timeouts_are_408(demo_checkpoint):
    engine = slow_engine(demo_checkpoint, seconds_per_step=0.03)  # 240 tokens: 7 s
    config = ServerConfig(model_name="demo", max_queue=1, request_timeout=3.0)
    with (
        BackgroundServer(create_app(engine, config)) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        long = {"messages": HI, "ignore_eos": True, "max_completion_tokens": 240}
        with (
            httpx.Client(base_url=server.url, timeout=60) as a,
            a.stream("POST", CHAT, json={**long, "stream": True}) as first,
        ):
            lines = first.iter_lines()  # keep it: a dropped iterator closes the connection
            assert next(lines).startswith("data: ")
            while http.get("/health").json()["busy_slots"] < 1:
                time.sleep(0.02)  # admitted: it holds the only slot for 240 slow steps
            queued = {}
            thread = threading.Thread(
                target=lambda: queued.update(r=httpx.post(server.url + CHAT, json=long, timeout=60))
            )
            thread.start()
            deadline = time.monotonic() + 10
            while http.get("/health").json()["waiting"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            r = http.post(CHAT, json=long)
            assert r.status_code == 429 and error_of(r)["type"] == "rate_limit_error"
            assert int(r.headers["Retry-After"]) >= 1
            thread.join()
        # the queued request waited behind the long stream past its 3 s deadline
        assert queued["r"].status_code == 408, queued["r"].text
        assert error_of(queued["r"])["code"] == "request_timeout"
        health = wait_until_idle(http)
        assert health["busy_slots"] == 0 and health["waiting"] == 0


def test_api_keys(demo_checkpoint, tmp_path, monkeypatch):
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# comment\nsk-file\n\n")
    monkeypatch.setenv("NANOSEEK_API_KEY", "sk-env1, sk-env2")
    keys = load_api_keys(["sk-flag"], key_file)
    assert keys == ["sk-flag", "sk-file", "sk-env1", "sk-env2"]
    engine = Engine.from_pretrained(demo_checkpoint, max_slots=2)
    with BackgroundServer(create_app(engine, ServerConfig(api_keys=keys))) as server:
        url = server.url
        body = {"messages": HI, "max_tokens": 1}
        r = httpx.post(url + CHAT, json=body)
        assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"
        assert r.headers["WWW-Authenticate"] == "Bearer"
        r = httpx.post(url + CHAT, json=body, headers={"Authorization": "Bearer sk-wrong"})
        assert r.status_code == 401
        for key in keys:
            r = httpx.post(url + CHAT, json=body, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/health").status_code == 200  # open, like the page and /metrics
        assert httpx.get(url + "/").status_code == 200


def test_cors_off_by_default_and_on_when_configured(demo_checkpoint, server):
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    r = httpx.options(server.url + CHAT, headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    engine = Engine.from_pretrained(demo_checkpoint, max_slots=2)
    with BackgroundServer(create_app(engine, ServerConfig(cors_origins=["https://example.org"]))) as cors:
        r = httpx.options(cors.url + CHAT, headers=preflight)
        assert r.headers["access-control-allow-origin"] == "https://example.org"
        r = httpx.options(cors.url + CHAT, headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_validation_param_spelling():
    assert validation_param(("body", "messages", 0, "content")) == "messages[0].content"
    assert validation_param(("body", "stop", "list[str]", 1)) == "stop[1]"
    assert validation_param(("body",)) is None


def test_stream_error_after_headers_is_reported_in_the_stream(demo_checkpoint):
    engine = slow_engine(demo_checkpoint)
    with BackgroundServer(create_app(engine, ServerConfig(request_timeout=0.3))) as server:
        with httpx.stream(
            "POST", server.url + CHAT, json={**LONG, "max_completion_tokens": 240}, timeout=60
        ) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "request_timeout"


def test_an_engine_failure_is_a_500_and_the_server_recovers(demo_checkpoint):
    engine = Engine.from_pretrained(demo_checkpoint, max_slots=2)
    step = engine.step
    broken = {"on": True}

    def failing_step():
        if broken["on"]:
            raise RuntimeError("simulated engine failure")
        return step()

    engine.step = failing_step
    with (
        BackgroundServer(create_app(engine)) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        r = http.post(CHAT, json={"messages": HI})
        assert r.status_code == 500 and error_of(r)["code"] == "engine_error"
        broken["on"] = False
        r = http.post(CHAT, json={"messages": HI})
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "stop"
        assert wait_until_idle(http)["busy_slots"] == 0


@pytest.mark.parametrize(
    "extra",
    [
        {"top_k": 2**63},
        {"top_k": -1},
        {"temperature": 1e-300},
        {"top_p": 0},
        {"seed": -(2**63)},
        {"seed": 2**64 - 1},
    ],
)
def test_extreme_valid_values_are_served(http, extra):
    # found by fuzzing: top_k = 2**63 used to reach torch and fail every request in the batch
    r = http.post(CHAT, json={"messages": HI, **extra})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello! I am **nanoseek**, a tiny R1 model."
