"""The engine gaps the server used to work around (issue 19, item 3): prompt logprobs from the engine's
own prefill, per-request abort, one bad request never failing its batch.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_engine_gaps.py
"""

import copy
import os
import subprocess
import sys
import time

import pytest
import torch
from helpers import greedy, ragged_prompts, random_model, tiny_config

from nanoseek.engine import Engine, GenerationRequest, SamplingParams

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ragged_prompts([21, 9, 14, 30], seed=5)


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_config())


def full_forward_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log_softmax of the model's plain forward over the whole prompt: (T, V)."""
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids]))[0].float(), -1)


def requests(prompts, params) -> list[GenerationRequest]:
    return [GenerationRequest(prompt=p, params=params) for p in prompts]


# ------------------------------------------------------------------------------------ prompt logprobs


@pytest.mark.parametrize("chunk", [None, 4], ids=["one-chunk", "chunked"])
def test_prompt_logprobs_equal_the_full_forward(model, chunk):
    """Each prompt token's logprob (and top 3) from the engine's prefill, chunked or not, in a batch
    with other prompts, equals the model's full forward; the first token has none; n samples share it."""
    engine = Engine(model, max_slots=6, prefill_chunk=chunk, prefix_cache_mb=0)
    params = greedy(3, prompt_logprobs=3, n=2)
    out = engine.generate(requests(PROMPTS[:3], params))
    for r, ids in enumerate(PROMPTS[:3]):
        expected = full_forward_logprobs(model, ids)
        for c in out[2 * r : 2 * r + 2]:
            scored = c.prompt_logprobs
            assert len(scored) == len(ids) and scored[0] is None
            for i in range(1, len(ids)):
                assert scored[i].token_id == ids[i]
                assert scored[i].logprob == pytest.approx(expected[i - 1, ids[i]].item(), abs=1e-4)
                assert [t for t, _ in scored[i].top] == expected[i - 1].topk(3).indices.tolist()
    plain = engine.generate(requests(PROMPTS[:3], greedy(3)))
    assert [c.token_ids for c in out[::2]] == [c.token_ids for c in plain]  # scoring changes nothing
    assert all(c.prompt_logprobs is None for c in plain)


def test_a_prompt_only_scored_fills_the_context_and_generates_nothing(model):
    """max_new_tokens 0 with prompt_logprobs: prefill only (the prompt may take every position)."""
    engine = Engine(model, max_slots=2, max_len=30, prefix_cache_mb=0)
    ids = PROMPTS[3]  # 30 tokens: all of max_len
    c = engine.generate(requests([ids], SamplingParams(max_new_tokens=0, prompt_logprobs=0)))[0]
    assert c.token_ids == [] and c.finish_reason == "length" and engine.stats.prefill_tokens == 30
    expected = full_forward_logprobs(model, ids)
    assert [lp.logprob for lp in c.prompt_logprobs[1:]] == pytest.approx(
        [expected[i - 1, ids[i]].item() for i in range(1, 30)], abs=1e-4
    )
    assert engine.load()["busy_slots"] == 0


def test_prompt_logprobs_are_computed_even_when_the_prefix_is_cached(model):
    """The prefix cache would skip the cached blocks' prefill, and with it their logprobs: a request
    asking for them prefills the whole prompt (no hit), and later plain requests still hit."""
    engine = Engine(model, max_slots=2, prefix_cache_mb=1, prefix_cache_block=8)
    ids = PROMPTS[3]
    assert engine.generate(requests([ids], greedy(2)))[0].cached_tokens == 0
    scored = engine.generate(requests([ids], greedy(2, prompt_logprobs=0)))[0]
    assert scored.cached_tokens == 0
    expected = full_forward_logprobs(model, ids)
    assert [lp.logprob for lp in scored.prompt_logprobs[1:]] == pytest.approx(
        [expected[i - 1, ids[i]].item() for i in range(1, len(ids))], abs=1e-4
    )
    assert engine.generate(requests([ids], greedy(2)))[0].cached_tokens == 24


def test_the_server_scores_echoed_prompts_with_the_engine(http, engine):
    """/v1/completions echo + logprobs: the prompt goes through the engine's prefill (no forward of
    its own beside the engine), even with max_tokens 0."""
    ids = engine.tokenizer.encode("Once upon a time there was a dog")
    before = engine.stats.prefill_tokens
    body = {"model": "demo", "prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 1}
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    lps = r.json()["choices"][0]["logprobs"]
    assert engine.stats.prefill_tokens - before == len(ids)
    expected = full_forward_logprobs(engine.model, ids)
    assert lps["token_logprobs"][0] is None
    assert lps["token_logprobs"][1:] == pytest.approx(
        [expected[i - 1, ids[i]].item() for i in range(1, len(ids))], abs=1e-4
    )


# ------------------------------------------------------------------------------------------- abort


def mixed_params() -> list[SamplingParams]:
    """Greedy, seeded sampling and a penalty (per-slot counts): what a freed slot must not carry over."""
    return [
        greedy(12),
        SamplingParams(temperature=0.9, seed=3, max_new_tokens=12, ignore_eos=True),
        greedy(12, repetition_penalty=1.3),
        SamplingParams(temperature=1.1, top_p=0.9, seed=8, max_new_tokens=12, ignore_eos=True),
    ]


def test_aborting_one_request_mid_decode_leaves_the_others_as_without_it(model):
    batch = [GenerationRequest(prompt=p, params=s) for p, s in zip(PROMPTS, mixed_params())]
    late = GenerationRequest(prompt=PROMPTS[1], params=greedy(8, frequency_penalty=0.7))
    reference = Engine(model, max_slots=4, prefix_cache_mb=0).generate([*batch, late])

    engine = Engine(model, max_slots=4, prefix_cache_mb=0)
    handles = [engine.submit(r, request_index=i) for i, r in enumerate(batch)]
    engine.step()  # admitted, prefilled
    while len(handles[1].state.sequences[0].output) < 4:  # everyone is decoding
        engine.step()
    handles[1].abort()  # no step running: its slot is free at once
    assert handles[1].done and engine.load()["busy_slots"] == 3
    aborted = handles[1].result()[0]
    assert aborted.finish_reason == "abort" and aborted.token_ids == reference[1].token_ids[:4]
    queued = engine.submit(late, request_index=4)  # takes the freed slot
    results = [h.result()[0] for h in handles] + queued.result()
    for i in (0, 2, 3, 4):
        assert results[i].token_ids == reference[i].token_ids
    assert engine.load() == {"waiting": 0, "active": 0, "busy_slots": 0, "slots": 4}


def test_aborting_a_queued_request_takes_it_out_of_the_queue_at_once(model):
    """Even while a step runs (the step lock held), a request still waiting for slots leaves the
    queue (and a server's count of waiting samples) when it is aborted."""
    engine = Engine(model, max_slots=1, prefix_cache_mb=0)
    running = engine.submit(GenerationRequest(prompt=PROMPTS[0], params=greedy(6)))
    engine.step()
    waiting = engine.submit(GenerationRequest(prompt=PROMPTS[1], params=greedy(6, n=1)))
    assert engine.load()["waiting"] == 1
    with engine._step_lock:  # a step in progress on the engine's thread
        waiting.abort()
        assert engine.load()["waiting"] == 0 and engine.scheduler.waiting.samples == 0
        assert waiting.done and waiting.result()[0].finish_reason == "abort"
    assert (
        running.result()[0].token_ids
        == Engine(model, max_slots=1, prefix_cache_mb=0)
        .generate([GenerationRequest(prompt=PROMPTS[0], params=greedy(6))])[0]
        .token_ids
    )


def test_abort_from_another_thread_with_the_background_loop(model):
    engine = Engine(model, max_slots=2, prefix_cache_mb=0).start()
    try:
        long = engine.submit(GenerationRequest(prompt=PROMPTS[0], params=greedy(40)), stream=True)
        other = engine.submit(GenerationRequest(prompt=PROMPTS[2], params=greedy(10)))
        first = next(iter(long))  # it is decoding
        assert first.token_ids
        long.abort()
        assert long.result(timeout=30)[0].finish_reason == "abort"
        assert other.result(timeout=30)[0].finish_reason == "length"
        assert engine.load()["busy_slots"] == 0
    finally:
        engine.stop()


# ------------------------------------------------------------------------------- one bad request


def poisoned_model(model, token: int):
    """The model with a NaN embedding for `token`: every logit of a request whose prompt holds it is NaN."""
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.embed_tokens.weight[token] = float("nan")
    return bad


def unused_token(completions, prompts) -> int:
    """A token id (not 0, the pad) that no prompt holds and no completion generated."""
    used = {t for c in completions for t in c.token_ids} | {t for p in prompts for t in p}
    return min(set(range(1, 300)) - used)


def inject(kind: str, engine: Engine, request: GenerationRequest, poison: int) -> None:
    """Make `request` fail in the given way inside the engine (past SamplingParams' validation)."""
    if kind == "nan":
        request.prompt = [*request.prompt, poison]
    elif kind == "sampler":  # a value that slipped past validation: the sampler's tensor code raises
        request.params.temperature = "hot"
    elif kind == "stop":  # raises in the stop check of every token it samples
        request.params.stop_token_ids = None
    elif kind == "forward":  # its rows make the decode forward raise (a kernel refusing them, say)
        decode = engine.runner.decode_logits

        def failing(ids, starts, slots):
            if request_slot(engine, request) in slots:
                raise RuntimeError("injected: this request's rows cannot be decoded")
            return decode(ids, starts, slots)

        engine.runner.decode_logits = failing
    elif kind == "prefill":  # its prompt makes the batched prefill raise
        hidden = engine.runner.hidden

        def failing_prefill(ids, starts, slots):
            if request_slot(engine, request) in slots:
                raise RuntimeError("injected: this request's prompt cannot be prefilled")
            return hidden(ids, starts, slots)

        engine.runner.hidden = failing_prefill


def request_slot(engine: Engine, request: GenerationRequest) -> int | None:
    for group in engine.scheduler.active:
        if group.request is request:
            return group.sequences[0].slot
    return None


@pytest.mark.parametrize("kind", ["nan", "sampler", "stop", "forward", "prefill"])
def test_one_bad_request_fails_alone_and_the_batch_goes_on(model, kind):
    """Four requests decode together on the engine's background loop (as in the server); one of them
    fails (NaN logits, the sampler raising on its parameters, its stop check raising, the decode or
    the prefill forward raising on its rows): its handle raises, its slot frees, the other three finish exactly as
    without it, and the engine serves the next request."""
    params = mixed_params()
    good = [0, 2, 3]
    reference = Engine(model, max_slots=4, prefix_cache_mb=0).generate(
        [GenerationRequest(prompt=PROMPTS[i], params=params[i]) for i in good]
    )
    poison = unused_token(reference, [PROMPTS[i] for i in good])
    engine = Engine(poisoned_model(model, poison) if kind == "nan" else model, max_slots=4, prefix_cache_mb=0)
    batch = [GenerationRequest(prompt=list(p), params=copy.copy(s)) for p, s in zip(PROMPTS, params)]
    inject(kind, engine, batch[1], poison)
    engine.start()
    try:
        handles = [engine.submit(r, request_index=i) for i, r in enumerate(batch)]
        with pytest.raises(RuntimeError, match="engine failed"):
            handles[1].result(timeout=60)
        assert handles[1].error is not None
        assert [handles[i].result(timeout=60)[0].token_ids for i in good] == [c.token_ids for c in reference]
        assert engine.load()["busy_slots"] == 0
        again = engine.submit(GenerationRequest(prompt=PROMPTS[0], params=params[0]))
        assert again.result(timeout=60)[0].token_ids == reference[0].token_ids
    finally:
        engine.stop()


def test_one_bad_request_fails_alone_when_the_caller_steps_the_engine(model):
    """Without a background loop (generate, stream, a caller stepping): the bad request holds the
    error, every other request of the batch finishes normally."""
    engine = Engine(model, max_slots=4, prefix_cache_mb=0)
    batch = [GenerationRequest(prompt=p, params=s) for p, s in zip(PROMPTS, mixed_params())]
    batch[2].params.stop_token_ids = None
    handles = [engine.submit(r, request_index=i) for i, r in enumerate(batch)]
    while not all(h.done for h in handles):
        engine.step()
    assert isinstance(handles[2].error, TypeError)
    assert all(
        h.error is None and h.result()[0].finish_reason == "length" for i, h in enumerate(handles) if i != 2
    )


def test_an_error_no_request_explains_still_fails_the_batch(model):
    """A batched forward that raises although every request runs alone (an out-of-memory, say)
    fails every request in flight rather than hanging them."""
    engine = Engine(model, max_slots=4, prefix_cache_mb=0)
    decode = engine.runner.decode_logits

    def fails_in_batches(ids, starts, slots):
        if len(slots) > 1:
            raise MemoryError("injected: no memory for a batch")
        return decode(ids, starts, slots)

    engine.runner.decode_logits = fails_in_batches
    handles = [engine.submit(r) for r in requests(PROMPTS[:3], greedy(6))]
    with pytest.raises(MemoryError):
        while not all(h.done for h in handles):
            engine.step()
    assert all(isinstance(h.error, MemoryError) for h in handles)
    assert engine.load()["busy_slots"] == 0


# ------------------------------------------------------------------------- memory of compiled shapes


def test_importing_the_engine_bounds_onednns_caches_of_compiled_shapes():
    """oneDNN compiles a kernel per input shape of an fp32 matmul and keeps it in two LRU caches whose
    size it reads from the environment when it first runs (1024 entries each by default, ~0.5 MB an
    entry). Importing the engine sets a small bound before any matmul; a user's own setting wins."""
    from nanoseek.engine.runner import SHAPE_CACHE_ENTRIES, SHAPE_CACHE_VARS

    env = {k: v for k, v in os.environ.items() if k not in SHAPE_CACHE_VARS}
    env[SHAPE_CACHE_VARS[0]] = "7"  # the user's
    code = f"import os, nanoseek.engine; print(*(os.environ[v] for v in {SHAPE_CACHE_VARS!r}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["7", str(SHAPE_CACHE_ENTRIES)]


def test_the_loop_returns_freed_heap_memory_when_it_runs_out_of_work(model, monkeypatch):
    """glibc keeps the holes prefill temporaries of new sizes leave; the loop trims the heap when it
    runs out of work (once per idle period, never between the steps of a burst)."""
    from nanoseek.engine import engine as engine_module

    trims = []
    monkeypatch.setattr(engine_module, "trim_heap", lambda: trims.append(1))
    engine = Engine(model, max_slots=2, prefix_cache_mb=0).start()
    try:
        wait_for(lambda: trims)  # idle from the start
        before, steps = len(trims), engine.stats.steps
        engine.generate(requests(PROMPTS[:2], greedy(20)))
        wait_for(lambda: len(trims) > before)
        assert engine.stats.steps - steps >= 20 and len(trims) - before <= 2
    finally:
        engine.stop()


def wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
