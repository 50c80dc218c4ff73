"""A load generator for the chat API: concurrent streaming clients, time to first token, tokens/s.

    result = asyncio.run(run_load("http://127.0.0.1:8000", clients=32, duration=20, max_tokens=128))
    print(result.summary())             # requests, errors, tokens/s, p50/p99 time to first token

Each client streams /v1/chat/completions back to back until `duration` seconds have passed (or it
has made `requests_per_client` requests). A `disconnect_fraction` of the requests hang up after a
random number of chunks, the way impatient users and crashed clients do. With `ignore_eos` the
model generates exactly `max_tokens` tokens (`max_completion_tokens`, thinking included), so
throughput does not depend on what the model says. Used by `bench/serve_bench.py` and the load test.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass, field

import httpx

from nanoseek.engine.remote import ServerSentEvents


@dataclass
class LoadResult:
    clients: int
    seconds: float = 0.0
    requests: int = 0  # started
    completed: int = 0  # ended with [DONE] and a usage chunk
    disconnected: int = 0  # hung up on purpose
    tokens: int = 0  # generated tokens received (usage of completed requests, chunks of cut ones)
    ttft: list[float] = field(default_factory=list)  # seconds to the first token chunk
    errors: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def ttft_quantile(self, q: float) -> float:
        if not self.ttft:
            return float("nan")
        if len(self.ttft) == 1:
            return self.ttft[0]
        return statistics.quantiles(self.ttft, n=100, method="inclusive")[round(q * 100) - 1]

    def summary(self) -> str:
        return (
            f"{self.clients:3d} clients: {self.requests} requests ({self.completed} completed, "
            f"{self.disconnected} hung up, {len(self.errors)} errors), {self.tokens_per_second:.1f} tokens/s, "
            f"TTFT p50 {self.ttft_quantile(0.5) * 1000:.0f} ms p99 {self.ttft_quantile(0.99) * 1000:.0f} ms"
        )


async def one_request(
    http: httpx.AsyncClient, body: dict, result: LoadResult, hang_up_after: int | None
) -> None:
    start = time.perf_counter()
    result.requests += 1
    chunks = 0
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:200]
                result.errors.append(f"HTTP {response.status_code}: {text}")
                return
            events, usage = ServerSentEvents(), None
            async for line in response.aiter_lines():
                event = events.feed(line)
                if events.done:
                    break
                if event is None:
                    continue
                if "error" in event:
                    result.errors.append(f"stream error: {event['error'].get('message')}")
                    return
                if event.get("usage"):
                    usage = event["usage"]
                if any(_has_token(c) for c in event.get("choices", [])):
                    if chunks == 0:
                        result.ttft.append(time.perf_counter() - start)
                    chunks += 1
                    if hang_up_after is not None and chunks >= hang_up_after:
                        result.disconnected += 1
                        result.tokens += chunks
                        return  # leaving the block closes the connection mid-stream
            if not events.done or usage is None:
                result.errors.append("stream ended without a usage chunk and [DONE]")
                return
            result.completed += 1
            result.tokens += usage["completion_tokens"]
    except (httpx.HTTPError, ValueError) as exc:  # ValueError: an event that is not JSON
        result.errors.append(f"{type(exc).__name__}: {exc}")


def _has_token(choice: dict) -> bool:
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or delta.get("reasoning_content"))


async def run_load(
    base_url: str,
    clients: int,
    duration: float | None = None,
    requests_per_client: int | None = None,
    max_tokens: int = 64,
    disconnect_fraction: float = 0.0,
    ignore_eos: bool = True,
    api_key: str | None = None,
    seed: int = 0,
) -> LoadResult:
    """Run `clients` streaming clients; stop after `duration` seconds or `requests_per_client` each."""
    if duration is None and requests_per_client is None:
        raise ValueError("give a duration, a number of requests per client, or both")
    rng = random.Random(seed)
    result = LoadResult(clients)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    deadline = None if duration is None else time.perf_counter() + duration

    async def client(index: int, http: httpx.AsyncClient) -> None:
        made = 0
        while (deadline is None or time.perf_counter() < deadline) and (
            requests_per_client is None or made < requests_per_client
        ):
            made += 1
            body = {
                "messages": [{"role": "user", "content": f"Client {index} asks question {made}."}],
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_completion_tokens": max_tokens,
                "ignore_eos": ignore_eos,
                "temperature": 1.0,
            }
            hang_up = rng.randint(1, max(1, max_tokens // 2)) if rng.random() < disconnect_fraction else None
            await one_request(http, body, result, hang_up)

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=300, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    result.seconds = time.perf_counter() - start
    return result
