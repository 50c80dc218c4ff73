"""RemoteGenerator: the `Generator` protocol over an OpenAI-compatible HTTP API.

    from nanoseek.engine import RemoteGenerator, GenerationRequest, SamplingParams
    teacher = RemoteGenerator("https://api.deepseek.com", model="deepseek-reasoner",
                              api_key_env="DEEPSEEK_API_KEY")
    remote = RemoteGenerator("http://127.0.0.1:8000/v1", model="nanoseek")   # vLLM or `nanoseek serve`
    [c] = remote.generate([GenerationRequest(messages=[{"role": "user", "content": "2+2?"}])])
    c.reasoning_content, c.content

Chat requests go to `{base_url}/chat/completions`, text and token-id prompts to `{base_url}/completions`.
DeepSeek's `reasoning_content` (and vLLM's `reasoning`) fill `Completion.reasoning_content`; `text` is
then rebuilt in the chat format's shape, `{reasoning}\\n</think>\\n\\n{content}`, so code that parses
native completions parses these too. Knobs OpenAI lacks (top_k, min_p, repetition_penalty,
stop_token_ids, ignore_eos) are sent only when set, as vLLM's extra parameters.

Robustness: each HTTP call is retried with exponential backoff (honouring Retry-After) on 429, 5xx,
timeouts and connection errors; other errors, and an error event inside a stream, raise
`RemoteError` with the server's message. Streams are parsed by `ServerSentEvents`, the one SSE client
parser in nanoseek (the serving load generator uses it too). At most
`concurrency` calls are in flight (a thread pool). Remote APIs return token strings, not ids, so
`token_ids` is empty and `completion_tokens` comes from the reported usage.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from nanoseek.engine.protocol import Completion, Delta, GenerationRequest, SamplingParams, TokenLogprob

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class RemoteError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class RemoteGenerator:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        concurrency: int = 8,
        split_n: bool = False,
    ):
        """api_key defaults to the environment variable `api_key_env`; split_n sends n requests of
        one sample each (seeds seed + j) for APIs without `n` (DeepSeek's)."""
        self.base_url, self.model = base_url.rstrip("/"), model
        key = api_key if api_key is not None else os.environ.get(api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout)
        self.max_retries, self.backoff = max_retries, backoff
        self.concurrency, self.split_n = concurrency, split_n
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="nanoseek-remote")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def __enter__(self) -> RemoteGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ Generator protocol
    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        calls = [(i, j, r) for i, r in enumerate(requests) for j in self._sample_starts(r)]
        results = list(self._pool.map(lambda call: self._call(*call), calls))
        return [c for cs in results for c in cs]

    def stream(self, requests: list[GenerationRequest]) -> Iterator[Delta]:
        out: queue.Queue[Delta | BaseException | None] = queue.Queue()
        calls = [(i, j, r) for i, r in enumerate(requests) for j in self._sample_starts(r)]
        stop = threading.Event()

        def run(call) -> None:
            try:
                if stop.is_set():
                    return
                for delta in self._stream_call(*call):
                    if stop.is_set():
                        return
                    out.put(delta)
            except BaseException as exc:
                out.put(exc)
            finally:
                out.put(None)

        for call in calls:
            self._pool.submit(run, call)
        pending = len(calls)
        try:
            while pending:
                item = out.get()
                if item is None:
                    pending -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            stop.set()

    def sync_weights(self, model) -> None:
        """A remote API holds its own weights: nothing here can hand it new ones."""
        raise NotImplementedError(
            f"RemoteGenerator ({self.base_url}) cannot take new weights: a remote API serves its own. "
            "Train with a local generator (nanoseek.engine.Engine) or reload the server's model yourself"
        )

    # ------------------------------------------------------------------ requests
    def _sample_starts(self, request: GenerationRequest) -> list[int]:
        """First sample index of each HTTP call for a request: [0] or [0, 1, .., n-1] with split_n."""
        return list(range(request.params.n)) if self.split_n else [0]

    def _body(self, request: GenerationRequest, first: int, stream: bool) -> tuple[str, dict[str, Any]]:
        p: SamplingParams = request.params
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": p.max_new_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "n": 1 if self.split_n else p.n,
        }
        if request.messages is not None:
            path, body["messages"] = "/chat/completions", request.messages
            if not request.think:
                body["chat_template_kwargs"] = {"enable_thinking": False}
            if p.logprobs or p.top_logprobs:
                body["logprobs"], body["top_logprobs"] = True, p.top_logprobs
        else:
            path, body["prompt"] = "/completions", request.prompt
            if p.logprobs or p.top_logprobs:
                body["logprobs"] = max(p.top_logprobs, 1 if p.logprobs else 0)
        if p.seed is not None:
            body["seed"] = p.seed + first
        extras = {
            "stop": p.stop or None,
            "frequency_penalty": p.frequency_penalty or None,
            "presence_penalty": p.presence_penalty or None,
            "top_k": p.top_k or None,
            "min_p": p.min_p or None,
            "repetition_penalty": p.repetition_penalty if p.repetition_penalty != 1 else None,
            "stop_token_ids": p.stop_token_ids or None,
            "ignore_eos": p.ignore_eos or None,
        }
        body.update({k: v for k, v in extras.items() if v is not None})
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return self.base_url + path, body

    def _post(self, url: str, body: dict[str, Any], stream: bool = False) -> httpx.Response:
        """POST with retries on 429/5xx/timeouts; returns a successful response (open, if stream)."""
        for attempt in range(self.max_retries + 1):
            delay = self.backoff * 2**attempt
            try:
                request = self.client.build_request("POST", url, json=body)
                response = self.client.send(request, stream=stream)
            except (httpx.TimeoutException, httpx.TransportError):
                if attempt == self.max_retries:
                    raise
            else:
                if response.status_code < 400:
                    return response
                if stream:
                    response.read()
                    response.close()
                if response.status_code not in RETRY_STATUS or attempt == self.max_retries:
                    raise RemoteError(response.status_code, _error_message(response))
                retry_after = response.headers.get("retry-after")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = min(float(retry_after), 60.0)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _call(self, request_index: int, first: int, request: GenerationRequest) -> list[Completion]:
        url, body = self._body(request, first, stream=False)
        data = self._post(url, body).json()
        usage = data.get("usage") or {}
        choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
        completions = []
        for k, choice in enumerate(choices):
            if request.messages is not None:
                message = choice.get("message") or {}
                content = message.get("content") or ""
                reasoning = message.get("reasoning_content") or message.get("reasoning")
                text = f"{reasoning}\n</think>\n\n{content}" if reasoning else content
                logprobs = _chat_logprobs((choice.get("logprobs") or {}).get("content"))
            else:
                text, reasoning, content = choice.get("text") or "", None, None
                logprobs = _completion_logprobs(choice.get("logprobs"))
            completions.append(
                Completion(
                    text=text,
                    token_ids=[],
                    finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                    prompt_tokens=usage.get("prompt_tokens", 0),
                    logprobs=logprobs if (request.params.logprobs or request.params.top_logprobs) else None,
                    reasoning_content=(reasoning or "") if request.messages is not None else None,
                    content=content,
                    request_index=request_index,
                    index=first + k,
                    request_id=request.request_id,
                    completion_tokens=usage.get("completion_tokens", 0) // max(1, len(choices)),
                )
            )
        return completions

    def _stream_call(self, request_index: int, first: int, request: GenerationRequest) -> Iterator[Delta]:
        url, body = self._body(request, first, stream=True)
        response = self._post(url, body, stream=True)
        events = ServerSentEvents()
        try:
            for line in response.iter_lines():
                data = events.feed(line)
                if events.done:
                    break
                if data is None:
                    continue
                if "error" in data:
                    raise RemoteError(
                        response.status_code, f"error event in the stream: {_event_error(data)}"
                    )
                for choice in data.get("choices") or []:
                    index = first + choice.get("index", 0)
                    reason = choice.get("finish_reason")
                    if request.messages is not None:
                        d = choice.get("delta") or {}
                        reasoning = d.get("reasoning_content") or d.get("reasoning") or ""
                        content = d.get("content") or ""
                        delta = Delta(request_index, index, reasoning + content, [], None, reasoning, content)
                    else:
                        delta = Delta(request_index, index, choice.get("text") or "")
                    delta.request_id = request.request_id
                    if reason:
                        delta.finish_reason = "length" if reason == "length" else "stop"
                    yield delta
        finally:
            response.close()


class ServerSentEvents:
    """The client side of an OpenAI-style server-sent event stream, fed one line at a time (so a sync
    and an async transport share it: `RemoteGenerator`, `serve.loadgen`).

        events = ServerSentEvents()
        for line in response.iter_lines():
            data = events.feed(line)       # the JSON payload of the event this line completes, or None
            if events.done:                # `data: [DONE]` ended the stream
                break

    As the SSE format says: an event is its `data:` lines (one optional space after the colon; several
    are joined with newlines) up to a blank line; lines starting with ':' are comments; other fields
    (event, id, retry) are ignored. An event that is not JSON raises ValueError quoting it."""

    def __init__(self):
        self.done = False
        self._data: list[str] = []

    def feed(self, line: str) -> dict | None:
        if line:
            name, _, value = line.partition(":")
            if name == "data":
                self._data.append(value[1:] if value.startswith(" ") else value)
            return None
        if not self._data:
            return None
        payload, self._data = "\n".join(self._data), []
        if payload == "[DONE]":
            self.done = True
            return None
        try:
            data = json.loads(payload)
        except json.JSONDecodeError:
            raise ValueError(f"server-sent event is not JSON: {payload[:200]!r}") from None
        if not isinstance(data, dict):
            raise ValueError(f"server-sent event is not a JSON object: {payload[:200]!r}")
        return data


def _event_error(data: dict) -> str:
    """The message of an `{"error": ...}` event (OpenAI's and our server's shape)."""
    error = data["error"]
    return str(error.get("message", error)) if isinstance(error, dict) else str(error)


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return error.get("message", response.text) if isinstance(error, dict) else str(error)
    except (json.JSONDecodeError, AttributeError):
        return response.text[:500]


def _chat_logprobs(items: list[dict] | None) -> list[TokenLogprob]:
    out = []
    for item in items or []:
        top = item.get("top_logprobs") or []
        out.append(
            TokenLogprob(
                token_id=-1,
                logprob=item.get("logprob", 0.0),
                top=[(-1, t.get("logprob", 0.0)) for t in top],
                token=item.get("token", ""),
                top_tokens=[t.get("token", "") for t in top],
            )
        )
    return out


def _completion_logprobs(lp: dict | None) -> list[TokenLogprob]:
    if not lp:
        return []
    tops = lp.get("top_logprobs") or [None] * len(lp.get("tokens", []))
    out = []
    for token, logprob, top in zip(lp.get("tokens", []), lp.get("token_logprobs", []), tops):
        top = top or {}
        out.append(TokenLogprob(-1, logprob or 0.0, [(-1, v) for v in top.values()], token, list(top.keys())))
    return out
