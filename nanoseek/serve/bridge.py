"""The asyncio side of the engine: submit requests, await their deltas, cancel on disconnect or timeout.

    bridge = EngineBridge(engine, config, metrics)
    generation = bridge.start([GenerationRequest(messages=..., params=...)], think=True, answer_limit=None)
    async for deltas in generation.updates():      # batches of Deltas as the engine produces them
        ...
    generation.samples                             # per-sample text, token ids, logprobs, finish reason

The engine steps on its own thread (`engine.start()`); each request registers an `on_delta`
callback that appends to a list and wakes the event loop at most once per batch, so a busy engine
costs the loop one wake-up per step rather than one per token. Leaving `updates()` early (the
client went away, the deadline passed, an exception) aborts the engine requests, which frees their
cache slots at the engine's next step.

The bridge also enforces what the engine does not know about: the size of a request and the waiting
queue's bound, both counted in samples (prompts x n: one request of 20,000 prompts with n=32 once
took every slot for minutes), refused whole before any work (400 when it could never fit, 429 with
Retry-After when the queue is full); prompts surely too long for the context, refused from their
length before tokenizing (`min_prompt_tokens`); the request deadline (408); and chat's `max_tokens`
when the model thinks first: it limits the answer only, so the bridge counts tokens after `</think>`
and cuts a sample there with finish reason "length" (the engine's own `max_new_tokens` bounds
reasoning plus answer). A request that generates nothing (`max_tokens: 0`) never reaches the engine,
unless it asks for its prompt's logprobs (echo scoring), which its prefill computes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.requests import Request

from nanoseek.engine import Delta, Engine, GenerationRequest, TokenLogprob
from nanoseek.serve.config import ServerConfig
from nanoseek.serve.errors import APIError
from nanoseek.serve.logprobs import TokenTexts
from nanoseek.serve.metrics import ServerMetrics, engine_load
from nanoseek.serve.openai_schema import context_error
from nanoseek.serve.usage import reasoning_token_count
from nanoseek.tokenizer import FormatError, Tokenizer

POLL_SECONDS = 0.5  # how often a waiting request checks its deadline and the engine's health


class ClientDisconnected(Exception):
    """The client closed the connection; its generation was aborted."""


@dataclass
class Sample:
    """Everything generated so far for one choice."""

    request_index: int
    index: int
    parts: list[str] = field(default_factory=list)  # the text, delta by delta
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    in_answer: bool = False  # the `</think>` token has been generated
    answer_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(self.parts)


class Generation:
    """One HTTP request's engine requests (a prompt each), consumed from the event loop."""

    def __init__(
        self,
        bridge: EngineBridge,
        requests: list[GenerationRequest],
        prompt_tokens: list[int],
        think: bool,
        answer_limit: int | None,
    ):
        self.bridge = bridge
        self.prompt_tokens = prompt_tokens  # per engine request
        self.think = think  # the prompt opened a think block (`prompt_opens_think`)
        self.answer_limit = answer_limit
        self.samples = {(i, j): Sample(i, j) for i, r in enumerate(requests) for j in range(r.params.n)}
        self.unfinished = len(self.samples)
        self.start_time = time.perf_counter()
        self.deadline = time.monotonic() + bridge.config.request_timeout
        self.first_token_time: float | None = None
        self.outcome: str | None = None  # how it ended, for metrics
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._pending: list[Delta] = []
        self._wake_scheduled = False
        self._event = asyncio.Event()
        self._closed = False
        self.handles = []
        try:
            for i, request in enumerate(requests):
                if not engine_work(request):  # nothing to generate or score: finished as it starts
                    self._pending += [Delta(i, j, finish_reason="length") for j in range(request.params.n)]
                    continue
                self.handles.append(bridge.engine.submit(request, request_index=i, on_delta=self._on_delta))
        except ValueError as exc:  # the engine refused a prompt (checked before, so rare)
            self.abort()
            raise APIError(400, str(exc), param="prompt") from exc

    # ---------------------------------------------------------------- engine thread
    def _on_delta(self, delta: Delta) -> None:
        with self._lock:
            self._pending.append(delta)
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is shutting down
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._wake_scheduled = False
        self._event.set()

    # ---------------------------------------------------------------- event loop
    @property
    def done(self) -> bool:
        return self.unfinished == 0

    async def updates(self) -> AsyncIterator[list[Delta]]:
        """Batches of new deltas until every sample has finished; aborts the rest when left early."""
        try:
            while not self.done and not self._closed:
                with self._lock:
                    batch, self._pending = self._pending, []
                if not batch:
                    self._event.clear()
                    await self._wait()
                    continue
                accepted = [d for d in map(self._accept, batch) if d is not None]
                if accepted:
                    yield accepted
            self.outcome = self.outcome or "finished"
        finally:
            self.close()

    def close(self) -> None:
        """Abort whatever still runs and book the metrics; idempotent (routes call it too, so a
        stream that never started cannot leak its slots)."""
        if self._closed:
            return
        self._closed = True
        if not self.done or any(not h.done for h in self.handles):
            self.abort()  # cut samples still run in the engine; disconnects and timeouts too
        if self.outcome is None:
            self.outcome = "disconnect"
        self.bridge.finished(self)

    async def _wait(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.outcome = "timeout"
            raise APIError(
                408,
                f"The request took longer than the server's limit of {self.bridge.config.request_timeout:g} seconds.",
                code="request_timeout",
            )
        await wait_event(self._event, min(POLL_SECONDS, remaining))
        for handle in self.handles:
            if handle.error is not None:
                self.outcome = "error"
                raise APIError(500, "The engine failed while generating this response.", code="engine_error")

    def _accept(self, delta: Delta) -> Delta | None:
        """Add a delta to its sample; None if the sample was already cut. Applies the answer limit."""
        sample = self.samples[(delta.request_index, delta.index)]
        if sample.finish_reason is not None:
            return None
        if self.first_token_time is None and delta.token_ids:
            self.first_token_time = time.perf_counter()
            self.bridge.metrics.ttft.observe(self.first_token_time - self.start_time)
        sample.parts.append(delta.text)
        sample.token_ids += delta.token_ids
        if delta.logprobs:
            sample.logprobs += delta.logprobs
        if self.answer_limit is not None:
            end_think = self.bridge.end_think_id
            for token in delta.token_ids:
                if sample.in_answer:
                    sample.answer_tokens += 1
                elif token == end_think:
                    sample.in_answer = True
            if delta.finish_reason is None and sample.answer_tokens >= self.answer_limit:
                delta.finish_reason = "length"
        if delta.finish_reason is not None:
            sample.finish_reason = delta.finish_reason
            self.unfinished -= 1
        return delta

    async def collect(self, request: Request | None = None) -> None:
        """Run to the end (non-streaming responses); a client disconnect aborts it."""
        drain = asyncio.ensure_future(self._drain())
        if request is None:
            await drain
            return
        watcher = asyncio.ensure_future(wait_for_disconnect(request))
        try:
            await asyncio.wait({drain, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not drain.done():
                self.close()  # abort and book the disconnect now, whenever the drain sees its cancel
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain
                raise ClientDisconnected()
            drain.result()  # re-raise timeouts and engine errors
        finally:
            watcher.cancel()
            if not drain.done():
                drain.cancel()

    async def _drain(self) -> None:
        async for _ in self.updates():
            pass

    def abort(self) -> None:
        for handle in self.handles:
            handle.abort()

    # ---------------------------------------------------------------- results
    def ordered_samples(self) -> list[Sample]:
        """Samples in choice order: prompt-major, then sample index."""
        return [self.samples[k] for k in sorted(self.samples)]

    def choice_index(self, request_index: int, index: int) -> int:
        n = len(self.samples) // len(self.prompt_tokens)
        return request_index * n + index

    def reasoning_tokens(self, sample: Sample) -> int:
        tok = self.bridge.tokenizer
        return reasoning_token_count(sample.token_ids, tok.think_id, self.bridge.end_think_id, self.think)

    def cached_tokens(self) -> int:
        """Prompt tokens the engine reused from its prefix cache (DeepSeek's cache hits)."""
        return sum(h.cached_tokens for h in self.handles)

    def usage_counts(self) -> tuple[int, int, int]:
        """(prompt tokens, completion tokens, reasoning tokens) over all samples."""
        samples = self.samples.values()
        return (
            sum(self.prompt_tokens),
            sum(len(s.token_ids) for s in samples),
            sum(self.reasoning_tokens(s) for s in samples),
        )


def engine_work(request: GenerationRequest) -> bool:
    """Whether a request needs the engine: tokens to generate, or its prompt's logprobs to compute."""
    return request.params.max_new_tokens > 0 or request.params.prompt_logprobs is not None


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set or `seconds` pass. A cancellation always propagates: Python 3.11's
    `asyncio.wait_for` swallows one that arrives as the event is set, and a generation whose client had
    left then ran on to its end."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def wait_for_disconnect(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def longest_token_bytes(tokenizer: Tokenizer) -> int:
    """The most UTF-8 bytes of any token's string in the vocabulary (added tokens included): an upper
    bound on the text one token covers (a byte-level token's characters stand for one byte each)."""
    strings = (tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size))
    return max((len(s.encode("utf-8")) for s in strings if s), default=1)


class EngineBridge:
    """Shared by all requests of an app: the engine, the limits, the metrics."""

    def __init__(self, engine: Engine, config: ServerConfig, metrics: ServerMetrics):
        self.engine = engine
        self.config = config
        self.metrics = metrics
        tok = engine.tokenizer
        if tok is None:
            raise ValueError("serving needs a tokenizer: the model directory has no tokenizer.json")
        self.tokenizer = tok
        self.end_think_id = tok.end_think_id
        self.token_texts = TokenTexts(tok)
        self.context = engine.max_len
        self.max_token_bytes = longest_token_bytes(tok)
        self.vocab_size = engine.model.config.vocab_size
        self.max_slots = engine_load(engine)["slots"]
        self.in_flight = 0
        self._mean_seconds = 1.0  # moving average of request durations, for Retry-After

    def encode(
        self, request: GenerationRequest, param: str, room: int = 1, requested: int | None = None
    ) -> list[int]:
        """The prompt's token ids as the engine will see them; 400 if the engine refuses it or it
        leaves fewer than `room` positions of the context free (`requested`: the completion tokens
        asked for, for the message). A prompt surely too long is refused before it is tokenized."""
        floor = self.min_prompt_tokens(request)
        if floor + room > self.context:
            self.metrics.rejected.labels("prompt_too_long").inc()
            raise context_error(self.context, floor, requested, param, at_least=True)
        try:
            return self.engine.encode_prompt(request, room=room)
        except FormatError as exc:
            raise APIError(400, str(exc), param=exc.field) from None
        except ValueError as exc:
            too_long = re.search(r"prompt of (\d+) tokens does not fit", str(exc))
            if too_long:
                raise context_error(self.context, int(too_long.group(1)), requested, param) from None
            raise APIError(400, str(exc), param=param) from None

    def min_prompt_tokens(self, request: GenerationRequest) -> int:
        """A lower bound on a prompt's tokens, from its length alone (no tokenizing, so a 4 MB prompt
        costs microseconds, not the 11 s and gigabytes its tokens would): no token covers more than
        `max_token_bytes` bytes of text, hence no more characters. Valid for tokenizers that drop no
        input (byte-level BPE, as nanoseek trains and DeepSeek ships)."""
        if request.messages is not None:
            chars = sum(len(m.get("content") or "") for m in request.messages)
        elif isinstance(request.prompt, str):
            chars = len(request.prompt)
        else:  # token ids
            return len(request.prompt)
        return -(-chars // self.max_token_bytes)

    def check_size(self, prompts: int, n: int) -> None:
        """400 for a request that could never be queued: too many prompts, or more samples than the
        whole queue holds. Called before any work (tokenizing included)."""
        config = self.config
        if prompts > config.max_prompts:
            self.metrics.rejected.labels("too_many_prompts").inc()
            raise APIError(
                400,
                f"This request has {prompts} prompts; this server takes at most {config.max_prompts} per "
                "request. Send them in several requests.",
                param="prompt",
                code="too_many_prompts",
            )
        if prompts * n > config.max_queue:
            self.metrics.rejected.labels("too_many_samples").inc()
            asked = f"{prompts} prompts x n={n}" if prompts > 1 else f"n={n}"
            raise APIError(
                400,
                f"This request asks for {prompts * n} samples ({asked}); this server queues at most "
                f"{config.max_queue}. Send fewer prompts or a smaller n.",
                param="prompt" if prompts > 1 else "n",
                code="too_many_samples",
            )

    def check_capacity(self, samples: int) -> None:
        """429 with Retry-After when `samples` more would overfill the waiting queue (counted in samples)."""
        waiting = self.waiting_samples()
        if samples and waiting + samples > self.config.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            retry = max(1, min(60, math.ceil(self._mean_seconds * (waiting + 1) / self.max_slots)))
            raise APIError(
                429,
                f"The server is busy: {waiting} samples are waiting for a slot. Retry after {retry} s.",
                code="queue_full",
                headers={"Retry-After": str(retry)},
            )

    def waiting_samples(self) -> int:
        return engine_load(self.engine)["waiting_samples"]

    def start(
        self,
        requests: list[GenerationRequest],
        prompt_tokens: list[int],
        think: bool = False,
        answer_limit: int | None = None,
    ) -> Generation:
        """Submit the engine requests of one HTTP request (raises 429 when the queue is full)."""
        self.check_capacity(sum(r.params.n for r in requests if engine_work(r)))
        generation = Generation(self, requests, prompt_tokens, think, answer_limit)
        self.in_flight += 1
        self.metrics.in_flight.inc()
        return generation

    def finished(self, generation: Generation) -> None:
        """Book a generation's tokens, cost and latency (called once, when its stream ends)."""
        self.in_flight -= 1
        self.metrics.in_flight.dec()
        m = self.metrics
        prompt, completion, reasoning = generation.usage_counts()
        m.prompt_tokens.inc(prompt)
        m.generation_tokens.inc(completion)
        m.reasoning_tokens.inc(reasoning)
        cached = generation.cached_tokens()
        m.cached_prompt_tokens.inc(cached)
        m.cost.inc(self.config.prices.cost(prompt, cached, completion))
        m.finished.labels(generation.outcome or "finished").inc()
        elapsed = time.perf_counter() - generation.start_time
        self._mean_seconds = 0.9 * self._mean_seconds + 0.1 * elapsed
        if generation.first_token_time is not None and completion > 1:
            decode_seconds = time.perf_counter() - generation.first_token_time
            m.tpot.observe(decode_seconds / (completion - 1))
