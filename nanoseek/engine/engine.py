"""The native inference engine: continuous batching over the model's cache, behind `Generator`.

    from nanoseek.engine import Engine, GenerationRequest, SamplingParams
    engine = Engine.from_pretrained("runs/sft/model", max_slots=16)      # or Engine(model, tokenizer)
    out = engine.generate([GenerationRequest(prompt="Once upon", params=SamplingParams(n=4))])
    for delta in engine.stream([GenerationRequest(messages=[{"role": "user", "content": "hi"}])]):
        print(delta.content or delta.reasoning_content, end="")

For a server (many threads submitting, one loop stepping):

    engine.start()                                   # background thread runs step() while there is work
    handle = engine.submit(request, stream=True)     # thread-safe
    for delta in handle: ...                         # blocking iterator; or on_delta=callback
    handle.abort()                                   # frees its slots now (or when the running step ends)
    engine.stop()

Each `step()` admits queued requests into free cache slots, prefills prompts within a token budget
(chunked), decodes one token for every running sample in one batched forward (the fused decode path,
`decode.py`; two tokens with MTP speculation, see `speculative.py`), samples each row with its own generator (`sampling.py`), and
retires finished samples, freeing their slots. A request with n samples prefills once and forks.
Prompts that share a prefix with earlier ones reuse its cache rows (`prefix_cache.py`): on admission
the longest cached chain of 16-token blocks is copied into the request's slot and prefill starts
after it; `Completion.cached_tokens` says how many prompt tokens were reused. A request asking for
`prompt_logprobs` gets them from its own prefill (so it skips the prefix cache), chunk by chunk.

One bad request never fails its batch: an exception while starting, running or sampling one request
(a forward that raises for its rows, NaN logits, a parameter the sampler cannot use, a stop or text
check that raises) finishes that request alone with the error (`handle.result()` raises it, a server
answers 500 for it) and frees its slots; the batch goes on. A batched forward that raises is run
again request by request to find the culprits (a forward only writes its own rows of the cache, so
running it twice changes nothing); an error no single request explains fails every request in flight.

The engine wraps the model and never changes it: its decode path (`runner.py`, `decode.py`) keeps
fused copies of the weights beside the model, and each forward runs in eval mode without autograd
(the model's own mode is restored after). A trainer that updates the model hands the new weights
over explicitly, `engine.sync_weights(model)` after each optimizer step (the `Generator` contract);
a step on weights changed since the last sync raises RuntimeError instead of decoding with stale
copies.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nanoseek.engine.detok import ReasoningSplitter, TextStream
from nanoseek.engine.prefix_cache import (
    BLOCK_SIZE,
    DEFAULT_DISK_MB,
    DEFAULT_MB,
    PrefixCache,
    weights_fingerprint,
)
from nanoseek.engine.protocol import (
    Completion,
    Delta,
    FinishReason,
    GenerationRequest,
    TokenLogprob,
)
from nanoseek.engine.runner import ModelRunner, trim_heap
from nanoseek.engine.sampling import Sampler, SampleRow
from nanoseek.engine.scheduler import RequestState, Scheduler, Sequence, Status
from nanoseek.model import from_pretrained as load_model
from nanoseek.tokenizer import Tokenizer
from nanoseek.tokenizer.chat_format import prompt_opens_think, render_prompt, split_completion

log = logging.getLogger(__name__)


@dataclass
class Stats(Mapping):
    """What an engine has done since it was built. Counted through the methods; read as attributes or
    as a read-only mapping (`stats["steps"]`, `dict(stats)`) by servers' metrics and benches."""

    steps: int = 0
    prefill_tokens: int = 0  # prompt tokens run through the model (a request of n samples counts once)
    generated_tokens: int = 0
    drafted: int = 0  # MTP drafts verified
    accepted: int = 0  # drafts that were the right token

    def count_step(self) -> None:
        self.steps += 1

    def count_prefill(self, tokens: int) -> None:
        self.prefill_tokens += tokens

    def count_generated(self, tokens: int = 1) -> None:
        self.generated_tokens += tokens

    def count_drafts(self, drafted: int, accepted: int) -> None:
        self.drafted += drafted
        self.accepted += accepted

    @property
    def acceptance(self) -> float:
        """Fraction of MTP drafts accepted (nan before any)."""
        return self.accepted / self.drafted if self.drafted else float("nan")

    def __getitem__(self, key: str) -> int:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


class RequestHandle:
    """A submitted request: iterate it for Deltas (stream=True), or wait for `result()`."""

    def __init__(self, engine: Engine, request_index: int, n: int, request_id: str | None):
        self.engine, self.request_index, self.request_id = engine, request_index, request_id
        self.completions: list[Completion | None] = [None] * n
        self.deltas: queue.Queue[Delta | None] | None = None  # set when streaming
        self.on_delta: Callable[[Delta], None] | None = None
        self.state: RequestState | None = None
        self.error: BaseException | None = None
        self.submitted_at = time.perf_counter()
        self.finished_at: float | None = None  # time.perf_counter() when the last sample finished
        self._done = threading.Event()
        self._prompt_scored = threading.Event()  # prompt_logprobs complete (or the request ended)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> list[Completion]:
        """The n completions, once all are finished (blocks; raises if the engine failed). Without a
        background loop the caller steps the engine until then."""
        while self.engine._thread is None and not self.done:
            self.engine.step()
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.request_id or self.request_index} still running")
        if self.error is not None:
            raise RuntimeError("the engine failed while running this request") from self.error
        return list(self.completions)

    def abort(self) -> None:
        self.engine.abort(self)

    def prompt_logprobs(self, timeout: float | None = None) -> list[TokenLogprob | None] | None:
        """With params.prompt_logprobs: the prompt's own logprobs, one per prompt token (None for the
        first), as soon as its prefill is done (blocks until then, before the completion finishes);
        None if the request was aborted before. Raises if the request failed."""
        while self.engine._thread is None and not self._prompt_scored.is_set():
            self.engine.step()
        if not self._prompt_scored.wait(timeout):
            raise TimeoutError(f"request {self.request_id or self.request_index}: prompt still prefilling")
        if self.error is not None:
            raise RuntimeError("the engine failed while running this request") from self.error
        scored = self.state.prompt_logprobs if self.state is not None else None
        return scored if scored is not None and len(scored) == len(self.state.prompt_ids) else None

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens reused from the prefix cache (known once the request is admitted)."""
        return self.state.cached_tokens if self.state is not None else 0

    def __iter__(self) -> Iterator[Delta]:
        if self.deltas is None:
            raise RuntimeError("submit(..., stream=True) to iterate over deltas")
        while True:
            if self.engine._thread is None and self.deltas.empty() and not self.done:
                self.engine.step()  # no background loop: the consumer drives the engine
                continue
            delta = self.deltas.get()
            if delta is None:
                if self.error is not None:
                    raise RuntimeError("the engine failed while running this request") from self.error
                return
            yield delta

    def _emit(self, delta: Delta) -> None:
        if self.deltas is not None:
            self.deltas.put(delta)
        if self.on_delta is not None:
            try:
                self.on_delta(delta)
            except Exception:  # a broken consumer loses its request, not the whole batch
                log.exception("on_delta callback of request %s failed; aborting it", self.request_id)
                self.engine.abort(self)

    def _finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self.finished_at = time.perf_counter()
        self._prompt_scored.set()
        self._done.set()
        if self.deltas is not None:
            self.deltas.put(None)


def encode_prompt(
    tok: Tokenizer | None, request: GenerationRequest, max_len: int, vocab_size: int, room: int = 1
) -> list[int]:
    """A request's prompt as token ids (chat messages rendered, text with BOS where the tokenizer adds
    one), checked to leave `room` positions of max_len free and to lie in the vocabulary. Every
    Generator encodes prompts with this, so the same request means the same ids on every engine."""
    if request.params.stop and tok is None:
        raise ValueError("stop strings need a tokenizer; use stop_token_ids")
    if request.messages is not None or isinstance(request.prompt, str):
        if tok is None:
            raise ValueError("text and chat prompts need a tokenizer; pass token ids")
        if request.messages is not None:
            ids = render_prompt(tok, request.messages, think=request.think)
        else:
            ids = tok.encode(request.prompt)
            if ids[:1] != [tok.bos_id]:  # as the tokenizer's own `tokenizer(text)` does
                ids = [*tok.bos_prefix, *ids]
    else:
        ids = [int(i) for i in request.prompt]
    if not ids:
        raise ValueError("empty prompt")
    if len(ids) + room > max_len:
        raise ValueError(f"prompt of {len(ids)} tokens does not fit max_len={max_len}")
    if min(ids) < 0 or max(ids) >= vocab_size:
        raise ValueError(f"prompt token ids must be in [0, {vocab_size})")
    return ids


def model_tokenizer(path: str | Path) -> Tokenizer | None:
    """The tokenizer of a model path as `from_pretrained` loads its weights: a GGUF file's (or that of
    the one GGUF in a directory without config.json), built from its metadata; else the directory's
    tokenizer.json; None without one. CheckpointError, naming the file, if it cannot be used."""
    from nanoseek.model.formats.gguf import find_gguf

    gguf = find_gguf(path)
    if gguf is not None:
        from nanoseek.tokenizer.gguf_vocab import gguf_tokenizer

        return gguf_tokenizer(gguf)
    return Tokenizer.from_dir(path) if (Path(path) / "tokenizer.json").exists() else None


class Engine:
    """Continuous-batching generator over a model (thread-safe `submit`, one stepping loop)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer | None = None,
        max_slots: int = 16,
        max_len: int | None = None,
        token_budget: int = 512,
        prefill_chunk: int | None = None,
        speculative: bool = False,
        cache_dtype: torch.dtype | None = None,
        prefix_cache_mb: float = DEFAULT_MB,
        prefix_cache_block: int = BLOCK_SIZE,
        prefix_cache_dir: str | Path | None = None,
        prefix_cache_disk_mb: float = DEFAULT_DISK_MB,
    ):
        """max_slots: samples decoded together (cache rows); max_len: prompt + completion tokens per
        sample (default: the model's max_position_embeddings); token_budget: tokens per step
        (decodes first, prompts get the rest); prefill_chunk: the most prompt tokens of one request
        per step; speculative: MTP draft-and-verify decoding (needs a model with MTP layers).
        prefix_cache_mb: memory for cached prompt prefixes (0: no prefix cache), in blocks of
        prefix_cache_block tokens; prefix_cache_dir: also keep them on disk (prefix_cache_disk_mb at
        most), where a later engine on the same weights finds them.
        The model is any registered family's (`model.new_cache` makes the cache); the engine reads
        its weights now and at each `sync_weights`, and never changes it."""
        cfg = model.config
        if speculative and not getattr(cfg, "num_nextn_predict_layers", 0):  # dense families have none
            raise ValueError("speculative decoding drafts with the MTP module; this model has none")
        per_decode = 2 if speculative else 1
        if token_budget <= per_decode * max_slots:
            raise ValueError(f"token_budget must exceed {per_decode} x max_slots so prompts can progress")
        self.model = model
        self.tokenizer = tokenizer
        self.max_len = max_len or cfg.max_position_embeddings
        self.speculative = speculative
        self.eos_id = tokenizer.eos_id if tokenizer is not None else cfg.eos_token_id
        # every token that ends a sample: EOS, generation_config's eos_token_id list, the end of turn
        ends = tokenizer.stop_ids if tokenizer is not None else cfg.eos_token_id
        self.stop_ids = frozenset(ends if isinstance(ends, (list, tuple)) else [ends])
        self.runner = ModelRunner(model, max_slots, self.max_len, speculative, cache_dtype)
        self.sampler = Sampler(cfg.vocab_size, max_slots, model.device)
        self.scheduler = Scheduler(max_slots, token_budget, prefill_chunk)
        self.prefix_cache = PrefixCache(
            self.runner.cache,
            prefix_cache_block,
            int(prefix_cache_mb * 2**20),
            prefix_cache_dir,
            int(prefix_cache_disk_mb * 2**20),
        )
        self._fingerprint()
        self.stats = Stats()
        self._lock = threading.Lock()  # guards the waiting queue and the abort set
        self._step_lock = threading.Lock()  # one step at a time
        self._wakeup = threading.Condition(self._lock)
        self._aborts: set[RequestHandle] = set()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._rng = random.Random(int.from_bytes(os.urandom(8), "little"))

    @classmethod
    def from_pretrained(
        cls, path: str | Path, int8: bool = False, device=None, dtype=None, **kwargs
    ) -> Engine:
        """Load a model directory (weights + tokenizer.json) of any registered family, or a GGUF file
        (or a directory holding one: its own tokenizer), into an engine; int8 quantizes the weights."""
        model = load_model(path, device=device, dtype=dtype).eval()
        if int8:
            from nanoseek.engine.quant import quantize_int8

            quantize_int8(model)
        return cls(model, model_tokenizer(path), **kwargs)

    # ------------------------------------------------------------------ Generator protocol
    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        """All samples of all requests, request-major (request 0's n samples first)."""
        self.runner.check_synced()
        handles = [self.submit(r, request_index=i) for i, r in enumerate(requests)]
        try:
            while self._thread is None and not all(h.done for h in handles):
                self.step()
            return [c for h in handles for c in h.result()]
        finally:
            for h in handles:
                if not h.done:
                    self.abort(h)

    def stream(self, requests: list[GenerationRequest]) -> Iterator[Delta]:
        """Deltas of all samples as they are generated; closing the iterator aborts what is left."""
        self.runner.check_synced()
        shared: queue.Queue[Delta] = queue.Queue()
        handles = [self.submit(r, request_index=i, on_delta=shared.put) for i, r in enumerate(requests)]
        try:
            while True:
                while not shared.empty():
                    yield shared.get()
                if all(h.done for h in handles):
                    break
                if self._thread is None:
                    self.step()
                else:
                    try:
                        delta = shared.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    yield delta
            for h in handles:
                h.result()  # raises if the engine failed
        finally:
            for h in handles:
                if not h.done:
                    self.abort(h)

    def sync_weights(self, model: nn.Module) -> None:
        """Make every later generate() use these weights (the trainer's model after its update k).

        `model` is the engine's own model (updated in place by an optimizer: the sync only rebuilds the
        engine's fused decode weights, no copy of the model), or another model of the same family and
        shape, whose state_dict is loaded into the engine's model. Samples already running keep the
        cache they computed with the old weights. Thread-safe: waits for a running step to finish."""
        with self._step_lock:
            changed = model is not self.model or self.runner.versions.changed()
            if model is not self.model:
                try:
                    self.model.load_state_dict(model.state_dict())
                except RuntimeError as e:
                    first = str(e).strip().splitlines()[0]
                    raise ValueError(
                        f"sync_weights: these weights do not fit the engine's model: {first}"
                    ) from e
            self.runner.sync()
            if changed:
                self._fingerprint()

    def _fingerprint(self) -> None:
        """Key the prefix cache to the current weights (its memory blocks go when they changed)."""
        if self.prefix_cache.enabled:
            disk = self.prefix_cache.disk is not None
            self._weights_key = weights_fingerprint(self.model, self.runner.cache, disk)
            self._key_prefix_cache()

    def _key_prefix_cache(self) -> None:
        """The MTP layer's cache rows are computed only while speculating, so blocks stored in one mode
        never serve the other: the mode is part of the key."""
        mode = b"speculative" if self._speculative else b"plain"
        self.prefix_cache.set_fingerprint(hashlib.sha256(self._weights_key + mode).digest())

    @property
    def speculative(self) -> bool:
        return self._speculative

    @speculative.setter
    def speculative(self, on: bool) -> None:
        self._speculative = bool(on)
        if getattr(self, "_weights_key", None) is not None:
            self._key_prefix_cache()

    # ------------------------------------------------------------------ submitting (any thread)
    def submit(
        self,
        request: GenerationRequest,
        request_index: int = 0,
        stream: bool = False,
        on_delta: Callable[[Delta], None] | None = None,
    ) -> RequestHandle:
        """Queue a request; it joins the running batch at the next step with enough free slots."""
        prompt_ids = self.encode_prompt(request, room=0 if request.params.max_new_tokens == 0 else 1)
        handle = RequestHandle(self, request_index, request.params.n, request.request_id)
        handle.deltas = queue.Queue() if stream else None
        handle.on_delta = on_delta
        handle.state = RequestState(request, request_index, prompt_ids, handle)
        with self._lock:
            self.scheduler.add(handle.state)
            self._wakeup.notify()
        return handle

    def abort(self, handle: RequestHandle) -> None:
        """Stop a request (thread-safe): its samples finish with reason "abort". A queued request leaves
        the queue now; a running one frees its slots now, or when the step running at the moment ends
        (never in the middle of one)."""
        with self._lock:
            if handle.done:
                return
            queued = self.scheduler.remove_waiting(handle.state)
            if not queued:
                self._aborts.add(handle)
                self._wakeup.notify()
        if queued:  # no slot, no sample, nothing the stepping thread touches
            self._abort(handle.state)
        elif self._step_lock.acquire(blocking=False):
            try:  # no step is running: free the slots now
                self._apply_aborts()
            finally:
                self._step_lock.release()

    def encode_prompt(self, request: GenerationRequest, room: int = 1) -> list[int]:
        """The prompt's token ids; ValueError if it leaves fewer than `room` positions of max_len free
        (0 for a caller that only scores the prompt)."""
        return encode_prompt(self.tokenizer, request, self.max_len, self.model.config.vocab_size, room)

    # ------------------------------------------------------------------ background loop
    def start(self) -> Engine:
        """Run step() on a background thread whenever there is work (for servers)."""
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="nanoseek-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        """Stop the background loop (if any); queued and running requests are left unfinished."""
        self.stop()

    def load(self) -> dict[str, int]:
        """Requests waiting for slots, requests running, busy and total cache slots (for servers)."""
        with self._lock:
            scheduler = self.scheduler
            return {
                "waiting": len(scheduler.waiting),
                "active": len(scheduler.active),
                "busy_slots": scheduler.num_slots - len(scheduler.free_slots),
                "slots": scheduler.num_slots,
            }

    def _has_work(self) -> bool:
        return bool(self.scheduler.has_work or self._aborts or self._stopping)

    def _loop(self) -> None:
        while True:
            with self._lock:
                idle = not self._has_work()
            if idle:  # out of work: return what the last burst's temporaries left in the heap
                trim_heap()
            with self._lock:
                while not self._has_work():
                    self._wakeup.wait()
                if self._stopping:
                    return
            try:
                self.step()
            except Exception as exc:  # fail every request in flight rather than hang its waiters
                self._fail_all(exc)

    def _fail_all(self, exc: BaseException) -> None:
        """An error no single request explains (stale weights, a batch that fails but whose requests
        each run alone): every request in flight finishes with it."""
        with self._lock:
            groups = list(self.scheduler.waiting) + list(self.scheduler.active)
        for group in groups:
            self._fail(group, exc)

    def _fail(self, group: RequestState, exc: BaseException) -> None:
        """One request failed: it finishes with `exc` (its handle raises it), its slots free up, the
        other requests go on."""
        if group.handle.done:
            return
        log.warning("request %s failed: %r", group.request.request_id or group.request_index, exc)
        with self._lock:
            self.scheduler.remove_waiting(group)
        for seq in group.sequences:
            seq.status = Status.FINISHED
            self.scheduler.release(seq)
        if group in self.scheduler.active:
            self.scheduler.retire(group)
        group.handle._finish(exc)

    def _guarded(self, run: Callable[[list], Any], items: list, group_of: Callable[[Any], RequestState]):
        """(items, run(items)); when that raises, each item is run alone, the requests whose item
        raises alone fail (`_fail`), and run goes again over the rest: (the rest, its result). `run`
        must be safe to repeat (a forward only rewrites its own cache rows). ([], None) when none is left."""
        try:
            return items, run(items)
        except Exception as exc:
            if len(items) == 1:
                self._fail(group_of(items[0]), exc)
                return [], None
        for item in items:
            if not group_of(item).handle.done:
                try:
                    run([item])
                except Exception as exc:
                    self._fail(group_of(item), exc)
        rest = [item for item in items if not group_of(item).handle.done]
        return (rest, run(rest)) if rest else ([], None)

    # ------------------------------------------------------------------ one step
    def step(self) -> int:
        """Admit, prefill, decode, retire. Returns the number of tokens run through the model."""
        with self._step_lock:
            try:
                return self._step()
            except Exception as exc:
                if self._thread is None:
                    self._fail_all(exc)
                raise

    def _apply_aborts(self) -> None:
        with self._lock:
            aborts, self._aborts = self._aborts, set()
        for handle in aborts:
            self._abort(handle.state)

    def _step(self) -> int:
        self._apply_aborts()
        with self._lock:
            admitted = self.scheduler.admit()
        for group in admitted:
            try:
                self._start(group)
            except Exception as exc:  # a stop string or chat template its text stream rejects, say
                self._fail(group, exc)
        plan = self.scheduler.plan(tokens_per_decode=2 if self.speculative else 1)
        if plan.prefill or plan.decode:
            self.runner.check_synced()
        tokens = 0
        if plan.prefill:
            tokens += self._prefill(plan.prefill)
        if plan.decode:
            if self.speculative:
                from nanoseek.engine.speculative import speculative_decode

                tokens += speculative_decode(self, plan.decode)
            else:
                tokens += self._decode(plan.decode)
        self.stats.count_step()
        return tokens

    def _start(self, group: RequestState) -> None:
        params, tok = group.params, self.tokenizer
        for seq in group.sequences:
            if not params.greedy:
                seed = params.seed + seq.index if params.seed is not None else self._rng.getrandbits(63)
                seq.generator = torch.Generator(self.model.device).manual_seed(seed)
            if tok is not None:
                seq.text = TextStream(tok, params.stop)
                if group.request.is_chat:
                    seq.splitter = ReasoningSplitter(prompt_opens_think(tok, group.prompt_ids))
        self.sampler.start(group.sequences[0].slot, group.prompt_ids)
        if params.prompt_logprobs is not None:
            group.prompt_logprobs = [None]  # the first token has nothing before it
        elif params.max_new_tokens == 0:  # nothing to compute
            for seq in group.sequences:
                self._finish(seq, "length")
            return
        self._reuse_prefix(group)

    def _reuse_prefix(self, group: RequestState) -> None:
        """Copy the longest cached prefix of the prompt into sample 0's slot; prefill starts after it.
        With speculation one token before it: the MTP layer's row at the prefix's last position
        needs the main model's hidden state there and the token after it, which the cache lacks."""
        parent, ids = group.sequences[0], group.prompt_ids
        scoring = group.params.prompt_logprobs is not None  # needs every prompt position's logits
        start = 0 if scoring else self.prefix_cache.load(ids, parent.slot)
        if start and self.speculative:
            start -= 1
        parent.num_cached = group.cached_tokens = start
        self.prefix_cache.count(start, len(ids) - start)

    def _prefill_forward(self, chunks: list[tuple[RequestState, int, int]]) -> torch.Tensor:
        """The chunks' prompt tokens through the model into their slots' cache rows: hidden (B, T, C)."""
        slots = [g.sequences[0].slot for g, _, _ in chunks]
        h = self.runner.hidden([g.prompt_ids[a:b] for g, a, b in chunks], [a for _, a, _ in chunks], slots)
        if self.speculative:  # the MTP layer's cache for these positions; the last one waits for its token
            from nanoseek.engine.speculative import prefill_mtp

            prefill_mtp(self, chunks, h)
        return h

    def _score_prompt(self, group: RequestState, h: torch.Tensor, a: int, b: int) -> None:
        """Prompt logprobs from a chunk's hidden states h (b - a, C): position p's next-token
        distribution scores prompt token p + 1 (the last prompt position scores nothing)."""
        ids = group.prompt_ids
        end = min(b, len(ids) - 1)
        if end > a:
            group.prompt_logprobs += self.runner.token_logprobs(
                h[: end - a], ids[a + 1 : end + 1], group.params.prompt_logprobs
            )
        if b == len(ids):
            group.handle._prompt_scored.set()

    def _prefill(self, chunks: list[tuple[RequestState, int, int]]) -> int:
        chunks, h = self._guarded(self._prefill_forward, chunks, lambda chunk: chunk[0])  # (B, T, C)
        parents = [g.sequences[0] for g, _, _ in chunks]
        for seq, (_, _, b) in zip(parents, chunks):
            seq.num_cached = b
        self.stats.count_prefill(sum(b - a for _, a, b in chunks))
        for i, (seq, (group, a, b)) in enumerate(zip(parents, chunks)):
            # the prompt's last MTP row is a stand-in until the first token: keep it out of the cache
            final = self.speculative and b == len(group.prompt_ids)
            self.prefix_cache.store(group.prompt_ids, seq.slot, b - 1 if final else b)
            if group.prompt_logprobs is not None:
                try:
                    self._score_prompt(group, h[i], a, b)
                except Exception as exc:
                    self._fail(group, exc)
        done = []
        for i, (g, _, b) in enumerate(chunks):
            if b < len(g.prompt_ids) or g.handle.done:
                continue
            if g.params.max_new_tokens == 0:  # scored only: nothing to generate
                for seq in g.sequences:
                    self._finish(seq, "length")
            else:
                done.append((i, g))
        if not done:
            return sum(b - a for _, a, b in chunks)
        last = torch.stack([h[i, chunks[i][2] - chunks[i][1] - 1] for i, _ in done])  # (k, C)
        logits = self.runner.logits(last)  # (k, V)
        seqs, rows = [], []
        for j, (_, group) in enumerate(done):
            parent = group.sequences[0]
            for seq in group.sequences[1:]:  # prefix sharing: copy the prompt's cache, don't recompute
                self.runner.fork(parent.slot, seq.slot, parent.num_cached)
                self.sampler.fork(parent.slot, seq.slot)
                seq.num_cached = parent.num_cached
            for seq in group.sequences:
                if seq.status is not Status.FINISHED:
                    seq.status = Status.RUNNING
                    seqs.append(seq)
                    rows.append(j)
        if seqs:
            self.sample_and_append(seqs, logits[rows])
            if self.speculative:
                from nanoseek.engine.speculative import first_drafts

                first_drafts(self, seqs, last[rows])
        return sum(b - a for _, a, b in chunks)

    def _decode(self, seqs: list[Sequence]) -> int:
        def forward(seqs: list[Sequence]) -> torch.Tensor:
            ids = [[s.output[-1]] for s in seqs]
            return self.runner.decode_logits(ids, [s.num_cached for s in seqs], [s.slot for s in seqs])[1]

        seqs, logits = self._guarded(forward, seqs, lambda seq: seq.group)
        if not seqs:
            return 0
        for seq in seqs:
            seq.num_cached += 1
        self.sample_and_append(seqs, logits[:, 0])
        return len(seqs)

    def sample_and_append(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int]:
        """Sample one token per sequence from its row of logits (B, V), each with the sequence's own
        generator and parameters, and append it (stop checks, text, streaming); returns the tokens.
        Decoding and speculation (`speculative.py`) emit every token through here. A row that cannot
        be sampled (NaN logits, parameters the sampler rejects) or appended fails its request alone
        (`_fail`); its entry is -1."""
        tokens: list[int] = [-1] * len(seqs)
        if torch.isnan(logits).any():  # one check; which rows only when there are some
            for i in torch.isnan(logits).any(-1).nonzero()[:, 0].tolist():
                self._fail(seqs[i].group, FloatingPointError("the model's next-token logits are NaN"))
        live = [i for i, s in enumerate(seqs) if s.status is not Status.FINISHED]
        sampled = self._sample(seqs, logits, live)
        sampled = [(i, t, lp) for i, t, lp in sampled if seqs[i].status is not Status.FINISHED]
        counted = [(seqs[i].slot, t) for i, t, _ in sampled if seqs[i].params.penalized]
        if counted:
            self.sampler.record([slot for slot, _ in counted], [t for _, t in counted])
        for i, token, lp in sampled:
            tokens[i] = token
            if seqs[i].status is Status.FINISHED:  # a sibling sample's failure ended its request
                continue
            try:
                self.append(seqs[i], token, lp)
            except Exception as exc:  # a stop check or the text stream raised for this sample
                self._fail(seqs[i].group, exc)
        return tokens

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor, rows: list[int]):
        """[(row, token, logprob)] for the given rows of logits, sampled together; when that raises,
        row by row, failing the requests whose row raises alone (a row whose draw was taken before
        the error draws again)."""
        if not rows:
            return []
        sample_rows = [SampleRow(seqs[i].params, seqs[i].slot, seqs[i].generator) for i in rows]
        try:
            tokens, logprobs = self.sampler.sample(
                logits if len(rows) == len(seqs) else logits[rows], sample_rows
            )
        except Exception:
            return self._sample_alone(seqs, logits, rows, sample_rows)
        return list(zip(rows, tokens, logprobs))

    def _sample_alone(self, seqs: list[Sequence], logits: torch.Tensor, rows: list[int], sample_rows):
        out = []
        for i, row in zip(rows, sample_rows):
            try:
                (token,), (lp,) = self.sampler.sample(logits[i : i + 1], [row])
            except Exception as exc:
                self._fail(seqs[i].group, exc)
                continue
            out.append((i, token, lp))
        return out

    # ------------------------------------------------------------------ tokens and endings
    def append(self, seq: Sequence, token: int, logprob: TokenLogprob | None) -> bool:
        """Add a sampled token to a sequence (the sampler has counted it): stop checks, text, streaming. Returns True
        when the sequence finished."""
        params = seq.params
        seq.output.append(token)
        if logprob is not None:
            seq.logprobs.append(logprob)
        self.stats.count_generated()
        text = ""
        reason: FinishReason | None = None
        ends = token == self.eos_id or token in self.stop_ids
        if (ends and not params.ignore_eos) or token in params.stop_token_ids:
            reason = "stop"
        elif seq.text is not None:
            text = seq.text.push(token)
            if seq.text.stopped:
                reason = "stop"
        if reason is None and (
            len(seq.output) >= params.max_new_tokens
            or len(seq.group.prompt_ids) + len(seq.output) >= self.max_len
        ):
            reason = "length"
        self._emit(seq, text, [token], [logprob] if logprob is not None else None)
        if reason is not None:
            self._finish(seq, reason)
        return reason is not None

    def _emit(self, seq: Sequence, text: str, token_ids: list[int], logprobs, reason=None) -> None:
        handle = seq.group.handle
        if handle.deltas is None and handle.on_delta is None:
            return
        reasoning = content = ""
        if seq.splitter is not None:
            reasoning, content = seq.splitter.push(text) if reason is None else seq.splitter.finish()
        delta = Delta(seq.group.request_index, seq.index, text, token_ids, logprobs, reasoning, content)
        delta.finish_reason, delta.request_id = reason, seq.group.request.request_id
        handle._emit(delta)

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        seq.status, seq.finish_reason = Status.FINISHED, reason
        tail = seq.text.finish() if seq.text is not None and reason != "abort" else ""
        if tail:  # text held back for a possible stop string or an unfinished character
            self._emit(seq, tail, [], None)
        self._emit(seq, "", [], None, reason)
        self.scheduler.release(seq)
        group = seq.group
        group.handle.completions[seq.index] = self._completion(seq)
        if all(s.status is Status.FINISHED for s in group.sequences):
            if group in self.scheduler.active:
                self.scheduler.retire(group)
            group.handle._finish()

    def _completion(self, seq: Sequence) -> Completion:
        group, params = seq.group, seq.params
        text = seq.text.text if seq.text is not None else ""
        reasoning = content = None
        if group.request.is_chat:
            opened = prompt_opens_think(self.tokenizer, group.prompt_ids)
            reasoning, content = split_completion(text, think=opened)
        return Completion(
            text=text,
            token_ids=list(seq.output),
            finish_reason=seq.finish_reason,
            prompt_tokens=len(group.prompt_ids),
            cached_tokens=group.cached_tokens,
            prompt_logprobs=list(group.prompt_logprobs) if group.prompt_logprobs is not None else None,
            logprobs=list(seq.logprobs) if (params.logprobs or params.top_logprobs) else None,
            reasoning_content=reasoning,
            content=content,
            request_index=group.request_index,
            index=seq.index,
            request_id=group.request.request_id,
        )

    def _abort(self, group: RequestState | None) -> None:
        if group is None or group.handle.done:
            return
        with self._lock:
            self.scheduler.remove_waiting(group)
        if not group.sequences:  # never admitted: no slots, no samples yet
            group.sequences = [Sequence(group, i, -1, None) for i in range(group.n)]
        for seq in group.sequences:
            if seq.status is not Status.FINISHED:
                self._finish(seq, "abort")
