"""Continuous batching bookkeeping: cache slots, the waiting queue, and what each engine step runs.

    scheduler = Scheduler(num_slots=16, token_budget=512, prefill_chunk=256)
    scheduler.add(group)                       # a request of n samples joins the queue
    admitted = scheduler.admit()               # FIFO into free slots (a group needs n of them)
    plan = scheduler.plan(tokens_per_decode=1) # decode every running sample, prefill with the rest
    scheduler.release(seq)                     # a finished or aborted sample frees its slot

Memory is fixed up front: `num_slots` rows of `max_len` positions in the latent cache, so a long
request never makes the cache grow; it holds one slot until it finishes. Every step decodes one
token (two with speculation) for each running sample and spends the rest of `token_budget` on
prompts, in arrival order, in chunks of at most `prefill_chunk` tokens (chunked prefill), so a long
prompt never stalls the samples that are already decoding.

A request with n samples takes n slots at once: sample 0 prefills the prompt, and when the prompt is
in the cache the other n - 1 fork it (the cache's `copy_slot`), so the prompt is computed once.
The waiting queue is first come first served and also lets any request leave it in O(1) (a
client that hangs up aborts its queued requests: one HTTP request may hold thousands), and it keeps
the number of samples it holds, which is what a server's admission counts. Requests and samples
compare by identity (`eq=False`): two requests with the same prompt and parameters are still two.
This module holds no tensors and runs no model; `Engine` does.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from nanoseek.engine.protocol import FinishReason, GenerationRequest, SamplingParams, TokenLogprob


class Status(Enum):
    PREFILL = "prefill"  # sample 0: prompt going into the cache
    FORK = "fork"  # samples 1..n-1: waiting for sample 0's prompt, then copying it
    RUNNING = "running"  # has a pending token to feed at position `num_cached`
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One sample of a request, living in one cache slot."""

    group: RequestState
    index: int  # sample index within the request
    slot: int
    generator: torch.Generator | None
    status: Status = Status.FORK
    num_cached: int = 0  # cache positions [0, num_cached) hold this sample's tokens
    output: list[int] = field(default_factory=list)  # generated ids; the last one is fed next
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    draft: int | None = None  # speculative decoding: MTP's guess for the token after output[-1]
    text: Any = None  # detok.TextStream when there is a tokenizer
    splitter: Any = None  # detok.ReasoningSplitter for chat requests

    @property
    def params(self) -> SamplingParams:
        return self.group.params


@dataclass(eq=False)
class RequestState:
    """A request in flight: its prompt ids, its n samples, and where its results go."""

    request: GenerationRequest
    request_index: int
    prompt_ids: list[int]
    handle: Any  # engine.RequestHandle
    sequences: list[Sequence] = field(default_factory=list)
    cached_tokens: int = 0  # prompt tokens reused from the prefix cache (prefill starts there)
    # params.prompt_logprobs: filled chunk by chunk during prefill, [None] for the first token
    prompt_logprobs: list[TokenLogprob | None] | None = None

    @property
    def params(self) -> SamplingParams:
        return self.request.params

    @property
    def n(self) -> int:
        return self.request.params.n

    @property
    def prefilled(self) -> int:
        return self.sequences[0].num_cached if self.sequences else 0


@dataclass
class Plan:
    decode: list[Sequence]  # running samples, one (or 1 + draft) token each
    prefill: list[tuple[RequestState, int, int]]  # (request, start, end): prompt[start:end] this step


class WaitingQueue:
    """Requests waiting for cache slots, oldest first; `remove` is O(1) and `samples` counts their
    samples (a request of n samples counts n)."""

    def __init__(self) -> None:
        self._groups: OrderedDict[RequestState, None] = OrderedDict()  # keys by identity
        self.samples = 0

    def append(self, group: RequestState) -> None:
        self._groups[group] = None
        self.samples += group.n

    def first(self) -> RequestState:
        return next(iter(self._groups))

    def popleft(self) -> RequestState:
        group, _ = self._groups.popitem(last=False)
        self.samples -= group.n
        return group

    def remove(self, group: RequestState) -> bool:
        """Take a request out of the queue; False if it is not there (admitted or already gone)."""
        if group not in self._groups:
            return False
        del self._groups[group]
        self.samples -= group.n
        return True

    def clear(self) -> None:
        self._groups.clear()
        self.samples = 0

    def __len__(self) -> int:
        return len(self._groups)

    def __iter__(self) -> Iterator[RequestState]:
        return iter(list(self._groups))


class Scheduler:
    def __init__(self, num_slots: int, token_budget: int, prefill_chunk: int | None = None):
        self.num_slots = num_slots
        self.token_budget = token_budget
        self.prefill_chunk = prefill_chunk or token_budget
        self.free_slots: deque[int] = deque(range(num_slots))
        self.waiting = WaitingQueue()
        self.active: list[RequestState] = []  # admitted, not finished, in admission order

    def add(self, group: RequestState) -> None:
        if group.n > self.num_slots:
            raise ValueError(f"n={group.n} samples need more than the engine's {self.num_slots} slots")
        self.waiting.append(group)

    def admit(self) -> list[RequestState]:
        """Move waiting requests into free slots, first come first served (no overtaking, so a
        request with many samples is not starved by small ones)."""
        admitted = []
        while self.waiting and self.waiting.first().n <= len(self.free_slots):
            group = self.waiting.popleft()
            slots = [self.free_slots.popleft() for _ in range(group.n)]
            group.sequences = [Sequence(group, i, slot, None) for i, slot in enumerate(slots)]
            group.sequences[0].status = Status.PREFILL
            self.active.append(group)
            admitted.append(group)
        return admitted

    def plan(self, tokens_per_decode: int = 1) -> Plan:
        decode = [s for g in self.active for s in g.sequences if s.status is Status.RUNNING]
        budget = self.token_budget - tokens_per_decode * len(decode)
        prefill = []
        for group in self.active:
            if budget <= 0:
                break
            if group.sequences[0].status is Status.PREFILL:
                start = group.prefilled
                end = min(len(group.prompt_ids), start + self.prefill_chunk, start + budget)
                prefill.append((group, start, end))
                budget -= end - start
        return Plan(decode, prefill)

    def release(self, seq: Sequence) -> None:
        """A finished sample gives its slot back (once)."""
        if seq.slot >= 0:
            self.free_slots.append(seq.slot)
            seq.slot = -1

    def retire(self, group: RequestState) -> None:
        self.active.remove(group)

    def remove_waiting(self, group: RequestState) -> bool:
        """Take a request that was never admitted out of the queue (O(1)); False if it was admitted."""
        return self.waiting.remove(group)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.active)
