"""Prometheus metrics of the server: requests, tokens, cost, latencies, queue depth, batch occupancy.

    metrics = ServerMetrics(engine)           # one registry per app (tests run several apps)
    metrics.requests.labels("/v1/chat/completions", "200").inc()
    body = metrics.render()                   # the text exposition format served at GET /metrics

    curl -s 127.0.0.1:8000/metrics | grep nanoseek_

Request counts and HTTP latency are recorded by `MetricsMiddleware` (every response, errors
included); token counts, time to first token and time per output token by the generation bridge
(`bridge.py`). Engine load is read when scraped: `nanoseek_queue_depth` (requests waiting for cache
slots), `nanoseek_queued_samples` (their samples: what admission counts), `nanoseek_active_requests`,
`nanoseek_active_slots` / `nanoseek_max_slots` and their ratio `nanoseek_batch_occupancy`, plus the engine's own counters (steps, prefill and generated tokens).
The prefix cache: `nanoseek_prefix_cache_hit_tokens` / `_miss_tokens` (prompt tokens reused / computed),
`nanoseek_prefix_cache_hit_rate`, `nanoseek_prefix_cache_bytes` (memory held, against
`nanoseek_prefix_cache_max_bytes`) and `nanoseek_prefix_cache_blocks`; `nanoseek_cached_prompt_tokens`
counts the hits of finished requests (what `usage` bills at the cache-hit price).
After a load test these gauges read 0 again: nothing leaked. The usual `process_*` metrics (resident
memory, CPU seconds) come from prometheus_client's process collector.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ENDPOINTS = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/"}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TOKEN_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


def engine_load(engine: Any) -> dict[str, int]:
    """Waiting requests and their samples, running requests, busy and total cache slots of an engine.

    Reads the scheduler's queues (a consistent-enough snapshot: their lengths are read atomically)."""
    scheduler = engine.scheduler
    if hasattr(engine, "load"):
        load = dict(engine.load())
    else:
        slots = scheduler.num_slots
        load = {
            "waiting": len(scheduler.waiting),
            "active": len(scheduler.active),
            "busy_slots": slots - len(scheduler.free_slots),
            "slots": slots,
        }
    load["waiting_samples"] = scheduler.waiting.samples  # what admission counts (prompts x n)
    return load


class EngineCollector:
    """Engine gauges and counters, computed at scrape time."""

    def __init__(self, engine: Any):
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        load = engine_load(self.engine)
        occupancy = load["busy_slots"] / load["slots"]
        gauges = [
            ("nanoseek_queue_depth", "Requests waiting for free cache slots", load["waiting"]),
            ("nanoseek_queued_samples", "Samples waiting for free cache slots", load["waiting_samples"]),
            ("nanoseek_active_requests", "Requests holding cache slots", load["active"]),
            ("nanoseek_active_slots", "Cache slots in use (one per running sample)", load["busy_slots"]),
            ("nanoseek_max_slots", "Cache slots (samples decoded together)", load["slots"]),
            ("nanoseek_batch_occupancy", "Fraction of cache slots in use", occupancy),
        ]
        for name, text, value in gauges:
            yield GaugeMetricFamily(name, text, value=value)
        stats = getattr(self.engine, "stats", {})
        for key, text in (
            ("steps", "Engine steps (one batched forward each)"),
            ("prefill_tokens", "Prompt tokens run through the model"),
            ("generated_tokens", "Tokens sampled by the engine"),
        ):
            if key in stats:
                yield CounterMetricFamily(f"nanoseek_engine_{key}", text, value=stats[key])
        prefix = getattr(self.engine, "prefix_cache", None)
        if prefix is not None:
            yield from prefix_cache_metrics(prefix)


def prefix_cache_metrics(prefix: Any) -> Iterator[Metric]:
    """The engine's prefix cache: hits and misses in prompt tokens, the hit rate, the memory it holds."""
    s = prefix.stats()
    yield CounterMetricFamily(
        "nanoseek_prefix_cache_hit_tokens",
        "Prompt tokens reused from the prefix cache",
        value=s["hit_tokens"],
    )
    yield CounterMetricFamily(
        "nanoseek_prefix_cache_miss_tokens",
        "Prompt tokens prefilled (not in the prefix cache)",
        value=s["miss_tokens"],
    )
    total = s["hit_tokens"] + s["miss_tokens"]
    gauges = [
        (
            "hit_rate",
            "Fraction of prompt tokens reused from the prefix cache",
            s["hit_tokens"] / total if total else 0.0,
        ),
        ("bytes", "Bytes of cache rows held by the prefix cache in memory", s["bytes"]),
        ("max_bytes", "The prefix cache's memory budget in bytes", s["max_bytes"]),
        ("blocks", "Blocks held by the prefix cache in memory", s["blocks"]),
    ]
    for name, text, value in gauges:
        yield GaugeMetricFamily(f"nanoseek_prefix_cache_{name}", text, value=value)


class ServerMetrics:
    def __init__(self, engine: Any):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "nanoseek_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "nanoseek_request_duration_seconds",
            "Time from request to the end of the response (streams included)",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "nanoseek_time_to_first_token_seconds",
            "Time from request to the first generated token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "nanoseek_time_per_output_token_seconds",
            "Mean time between generated tokens of a request",
            buckets=TOKEN_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "nanoseek_prompt_tokens", "Prompt tokens of finished requests", registry=r
        )
        self.generation_tokens = Counter(
            "nanoseek_generation_tokens", "Generated tokens returned (reasoning included)", registry=r
        )
        self.reasoning_tokens = Counter("nanoseek_reasoning_tokens", "Generated thinking tokens", registry=r)
        self.cached_prompt_tokens = Counter(
            "nanoseek_cached_prompt_tokens",
            "Prompt tokens of finished requests served by the prefix cache",
            registry=r,
        )
        self.cost = Counter(
            "nanoseek_cost_dollars", "Cost of the served tokens at the configured prices", registry=r
        )
        self.finished = Counter(
            "nanoseek_generations", "Generations by how they ended", ["reason"], registry=r
        )  # stop, length, disconnect, timeout, error
        self.rejected = Counter(
            "nanoseek_requests_rejected", "Requests refused before generation", ["reason"], registry=r
        )
        self.in_flight = Gauge("nanoseek_requests_in_flight", "Generation requests being served", registry=r)
        r.register(EngineCollector(engine))
        ProcessCollector(registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def endpoint_label(path: str) -> str:
    """Known routes by name; anything else as "other" (so fuzzing random paths adds no series)."""
    if path in ENDPOINTS:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    if path.startswith("/static/"):
        return "/static"
    return "other"


class MetricsMiddleware:
    """ASGI middleware: count every HTTP response by endpoint and status, and time it to its last byte."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_label(scope["path"])
        start = time.perf_counter()
        status = "500"  # if the app dies before it answers
        recorded = False

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                self.metrics.requests.labels(endpoint, status).inc()
                self.metrics.request_duration.labels(endpoint).observe(time.perf_counter() - start)

        async def send_and_time(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                record()

        try:
            await self.app(scope, receive, send_and_time)
        finally:
            record()  # a stream cut short by a disconnect never sends its last body message
