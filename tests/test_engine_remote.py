"""RemoteGenerator against a scripted OpenAI/DeepSeek-style server on 127.0.0.1: chat with
reasoning_content, completions, SSE streaming (and the SSE parser on its own), retries on
429/5xx/timeouts, errors, concurrency limit, and no weight sync for a remote API."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import torch

from nanoseek.engine import GenerationRequest, Generator, RemoteGenerator, SamplingParams
from nanoseek.engine.remote import RemoteError, ServerSentEvents


class FakeAPI:
    """Scripted behaviour: `failures` status codes (or "sleep") to answer before succeeding."""

    def __init__(self):
        self.failures: list = []
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.delay = 0.0
        self.stream_error: str | None = None  # streams end with this error event instead of [DONE]
        self.lock = threading.Lock()


def make_handler(api: FakeAPI):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send_json(self, status: int, obj: dict, headers: dict | None = None):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with api.lock:
                api.bodies.append(body)
                api.headers.append(dict(self.headers))
                failure = api.failures.pop(0) if api.failures else None
                api.in_flight += 1
                api.max_in_flight = max(api.max_in_flight, api.in_flight)
            try:  # the request counts as in flight until its answer is ready, not until it is written:
                # the client may send its next request as soon as it has read this one's answer
                time.sleep(0.5 if failure == "sleep" else 0.0 if failure is not None else api.delay)
            finally:
                with api.lock:
                    api.in_flight -= 1
            if failure == "sleep":  # slept longer than the client's timeout
                return self.send_json(200, {})
            if failure is not None:
                return self.send_json(
                    failure,
                    {"error": {"message": f"scripted {failure}", "type": "x"}},
                    {"Retry-After": "0"},
                )
            if body.get("stream"):
                return self.stream(body)
            return self.send_json(200, self.answer(body))

        def answer(self, body: dict) -> dict:
            n = body.get("n", 1)
            if self.path.endswith("/chat/completions"):
                last = body["messages"][-1]["content"]
                choice = {
                    "message": {
                        "role": "assistant",
                        "content": f"echo {last}",
                        "reasoning_content": "thinking",
                    },
                    "finish_reason": "stop",
                    "logprobs": {
                        "content": [
                            {
                                "token": "echo",
                                "logprob": -0.5,
                                "top_logprobs": [{"token": "echo", "logprob": -0.5}],
                            }
                        ]
                    },
                }
            else:
                choice = {"text": f" after {body['prompt']}", "finish_reason": "length"}
            choices = [{**choice, "index": i} for i in range(n)]
            return {"choices": choices, "usage": {"prompt_tokens": 7, "completion_tokens": 3 * n}}

        def stream(self, body: dict):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            chunks = [
                {"reasoning_content": "think"},
                {"reasoning_content": "ing"},
                {"content": "hel"},
                {"content": "lo"},
            ]
            for i, delta in enumerate(chunks):
                reason = "stop" if i == len(chunks) - 1 else None
                event = {"choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
                self.wfile.write(f": keep-alive\n\ndata: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
                if api.stream_error:
                    error = {"error": {"message": api.stream_error, "type": "server_error"}}
                    self.wfile.write(f"data: {json.dumps(error)}\n\n".encode())
                    return
            self.wfile.write(b"data: [DONE]\n\n")

    return Handler


@pytest.fixture
def api():
    fake = FakeAPI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield fake
    server.shutdown()
    server.server_close()


def chat(content: str, **params) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": content}], params=SamplingParams(**params))


def test_chat_and_completions(api, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sk-test")
    with RemoteGenerator(api.url, "m", api_key_env="TEST_KEY") as remote:
        assert isinstance(remote, Generator)
        out = remote.generate(
            [
                chat("hi", n=2, seed=3, top_k=5, logprobs=True, top_logprobs=1),
                GenerationRequest(prompt="abc", params=SamplingParams(max_new_tokens=3)),
            ]
        )
    assert [(c.request_index, c.index) for c in out] == [(0, 0), (0, 1), (1, 0)]
    assert (out[0].reasoning_content, out[0].content) == ("thinking", "echo hi")
    assert out[0].text == "thinking\n</think>\n\necho hi"  # the chat format's shape
    assert out[0].logprobs[0].token == "echo" and out[0].logprobs[0].logprob == -0.5
    assert out[0].prompt_tokens == 7 and out[0].completion_tokens == 3
    assert out[2].text == " after abc" and out[2].finish_reason == "length" and out[2].content is None
    chat_body, completion_body = sorted(api.bodies, key=lambda b: "prompt" in b)  # sent concurrently
    assert chat_body["n"] == 2 and chat_body["seed"] == 3 and chat_body["top_k"] == 5
    assert "min_p" not in chat_body and chat_body["logprobs"] is True  # only knobs that are set
    assert completion_body["prompt"] == "abc" and completion_body["max_tokens"] == 3
    assert api.headers[0]["Authorization"] == "Bearer sk-test"


def test_split_n_sends_one_call_per_sample_with_its_seed(api):
    with RemoteGenerator(api.url, "m", split_n=True, concurrency=1) as remote:
        out = remote.generate([chat("x", n=3, seed=10)])
    assert [c.index for c in out] == [0, 1, 2]
    assert sorted(b["seed"] for b in api.bodies) == [10, 11, 12] and all(b["n"] == 1 for b in api.bodies)


def test_retries_on_429_5xx_and_timeouts(api):
    api.failures = [429, 503, "sleep", 500]
    with RemoteGenerator(api.url, "m", backoff=0.01, timeout=0.25) as remote:
        [c] = remote.generate([chat("again")])
    assert c.content == "echo again" and len(api.bodies) == 5


def test_gives_up_with_the_servers_message(api):
    api.failures = [400]
    with (
        RemoteGenerator(api.url, "m", backoff=0.01) as remote,
        pytest.raises(RemoteError, match="scripted 400"),
    ):
        remote.generate([chat("bad")])
    api.failures = [500, 500, 500]
    with RemoteGenerator(api.url, "m", backoff=0.01, max_retries=2) as remote, pytest.raises(RemoteError):
        remote.generate([chat("down")])
    nobody = RemoteGenerator("http://127.0.0.1:9/v1", "m", backoff=0.01, max_retries=1)
    with nobody, pytest.raises(httpx.TransportError):
        nobody.generate([chat("nobody listens")])


def test_concurrency_limit(api):
    api.delay = 0.05
    with RemoteGenerator(api.url, "m", concurrency=3) as remote:
        out = remote.generate([chat(str(i)) for i in range(12)])
    assert [c.content for c in out] == [f"echo {i}" for i in range(12)]
    assert api.max_in_flight == 3


def test_streaming_deltas(api):
    with RemoteGenerator(api.url, "m") as remote:
        deltas = list(remote.stream([chat("s")]))
    assert "".join(d.reasoning_content for d in deltas) == "thinking"
    assert "".join(d.content for d in deltas) == "hello"
    assert deltas[-1].finish_reason == "stop" and api.bodies[0]["stream"] is True


def test_an_error_event_inside_a_stream_raises_with_its_message(api):
    api.stream_error = "the model crashed"
    with RemoteGenerator(api.url, "m") as remote, pytest.raises(RemoteError, match="the model crashed"):
        list(remote.stream([chat("s")]))


def test_server_sent_events_are_parsed_as_the_format_says():
    events = ServerSentEvents()
    lines = [
        ": a comment",
        "event: message",
        'data:{"a": 1}',  # no space after the colon
        "id: 7",
        "",
        'data: {"b":',  # one event on two data lines
        "data: 2}",
        "",
        "",  # a blank line without data dispatches nothing
        "data: [DONE]",
        "",
    ]
    got = [events.feed(line) for line in lines]
    assert [g for g in got if g is not None] == [{"a": 1}, {"b": 2}] and events.done
    assert got[4] == {"a": 1} and got[2] is None  # an event is dispatched by the blank line after it
    bad = ServerSentEvents()
    assert bad.feed("data: oops") is None
    with pytest.raises(ValueError, match="not JSON: 'oops'"):
        bad.feed("")


def test_a_remote_api_takes_no_weights():
    remote = RemoteGenerator("http://127.0.0.1:9/v1", "m")
    with remote, pytest.raises(NotImplementedError, match="cannot take new weights"):
        remote.sync_weights(torch.nn.Linear(2, 2))
