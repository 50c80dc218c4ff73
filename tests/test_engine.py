"""Native engine: greedy equals full recompute (batch 1, ragged batch 8, int8, MTP speculation),
continuous batching, prefix sharing, per-request seeds, aborts, threads, the latent cache's size.
"""

import threading

import pytest
import torch
from helpers import greedy, predictable_model, ragged_prompts, random_model, run, tiny_config

from nanoseek.engine import Engine, GenerationRequest, SamplingParams, kernels
from nanoseek.engine.naive import greedy_generate, naive_generate, perplexity
from nanoseek.engine.quant import Int8Linear, quantize_int8, weight_bytes

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_config())


@pytest.fixture(scope="module")
def prompts():
    return ragged_prompts([5, 1, 23, 9, 14, 2, 31, 7])


@pytest.fixture(scope="module")
def reference(model, prompts):
    return naive_generate(model, prompts, 10)


@pytest.mark.parametrize("speculative", [False, True], ids=["plain", "mtp"])
def test_greedy_equals_full_recompute_batch_1_and_ragged_batch_8(model, prompts, reference, speculative):
    # small budget and chunk: prompts are prefilled in pieces while other rows decode
    engine = Engine(model, max_slots=8, token_budget=24, prefill_chunk=8, speculative=speculative)
    assert run(engine, prompts[2:3], greedy(10)) == reference[2:3]
    assert run(engine, prompts, greedy(10)) == reference


@pytest.fixture(params=["kernel", "torch-int8"])
def int8_matmuls(request):
    """nanoseek's int8 kernel, or torch's where no C compiler is available."""
    kernels.reset(enabled=request.param == "kernel")
    if request.param == "kernel" and not kernels.available():
        pytest.skip("no C compiler for the decode kernels")
    yield
    kernels.reset()


@pytest.mark.parametrize("speculative", [False, True], ids=["plain", "mtp"])
def test_int8_greedy_equals_int8_full_recompute(prompts, speculative, int8_matmuls):
    model = quantize_int8(random_model(tiny_config(), seed=4))
    assert isinstance(model.lm_head, Int8Linear) and model.lm_head.qweight.dtype == torch.int8
    reference = naive_generate(model, prompts, 8)
    engine = Engine(model, max_slots=8, token_budget=40, speculative=speculative)
    assert run(engine, prompts[:1], greedy(8)) == reference[:1]
    assert run(engine, prompts, greedy(8)) == reference


def test_greedy_generate_sees_the_last_max_position_embeddings_tokens():
    """The one no-cache greedy decode (training's samples, the tests' reference): past the model's
    context it keeps the last max_position_embeddings tokens, as training's sampler always did."""
    model = random_model(tiny_config(max_position_embeddings=16), seed=9)
    ids = ragged_prompts([20], seed=9)[0]
    out = greedy_generate(model, ids, 3, eos_id=-1)
    seq = list(ids)
    with torch.no_grad():
        for _ in range(3):
            seq.append(int(model(torch.tensor([seq[-16:]]))[0, -1].argmax()))
    assert out == seq[20:] and naive_generate(model, [ids], 3) == [out]


def test_int8_is_close_to_fp32_and_a_quarter_of_the_bytes():
    fp32 = random_model(tiny_config(), seed=5, std=0.05)
    ids = torch.randint(2, 300, (4, 32))
    ppl = perplexity(fp32, ids)
    linear_bytes = sum(m.weight.numel() * 4 for m in fp32.modules() if isinstance(m, torch.nn.Linear))
    int8 = quantize_int8(random_model(tiny_config(), seed=5, std=0.05))
    int8_linear_bytes = sum(m.qweight.numel() for m in int8.modules() if isinstance(m, Int8Linear))
    assert int8_linear_bytes < 0.27 * linear_bytes and weight_bytes(int8) < 0.45 * weight_bytes(fp32)
    assert abs(perplexity(int8, ids) / ppl - 1) < 0.02


def test_speculation_accepts_drafts_and_still_equals_greedy():
    cfg = tiny_config()
    model = predictable_model(cfg)
    prompts = ragged_prompts([4, 11, 6], seed=2)
    reference = naive_generate(model, prompts, 16)
    engine = Engine(model, max_slots=3, speculative=True)
    assert run(engine, prompts, greedy(16)) == reference
    acceptance = engine.stats["accepted"] / engine.stats["drafted"]
    assert 0.5 < acceptance < 1.0  # both paths exercised: accepted drafts and rejected ones
    assert engine.stats["steps"] < 16  # more than one token per step


def test_continuous_batching_more_requests_than_slots(model, prompts, reference):
    engine = Engine(model, max_slots=3, token_budget=10, prefill_chunk=4)
    cache = engine.runner.cache
    before = [(t.data_ptr(), t.shape) for t in cache.kv]
    handles = [engine.submit(GenerationRequest(prompt=p, params=greedy(10))) for p in prompts]
    max_running = 0
    while not all(h.done for h in handles):
        engine.step()
        running = sum(len(g.sequences) for g in engine.scheduler.active)
        max_running = max(max_running, running)
    assert [h.result()[0].token_ids for h in handles] == reference
    assert max_running == 3 and len(engine.scheduler.free_slots) == 3
    assert [(t.data_ptr(), t.shape) for t in cache.kv] == before  # memory is fixed up front


def test_requests_join_a_running_batch(model, prompts, reference):
    engine = Engine(model, max_slots=4)
    first = engine.submit(GenerationRequest(prompt=prompts[0], params=greedy(10)))
    for _ in range(3):
        engine.step()
    second = engine.submit(GenerationRequest(prompt=prompts[3], params=greedy(10)))
    engine.step()
    assert not first.done and len(first.state.sequences[0].output) == 4
    assert len(second.state.sequences[0].output) == 1  # admitted, prefilled, first token sampled
    while not (first.done and second.done):
        engine.step()
    assert first.result()[0].token_ids == reference[0] and second.result()[0].token_ids == reference[3]


def test_cache_holds_latent_and_rope_key_per_token(model):
    cfg = model.config
    per_layer = (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 4  # fp32
    assert Engine(model, max_slots=2).runner.cache_bytes_per_token == per_layer * cfg.num_hidden_layers
    spec = Engine(model, max_slots=2, speculative=True)
    assert spec.runner.cache_bytes_per_token == per_layer * (cfg.num_hidden_layers + 1)  # + MTP layer


def test_n_samples_prefill_once_and_match_single_runs_with_their_seeds(model, prompts):
    engine = Engine(model, max_slots=4)
    params = SamplingParams(temperature=1.0, max_new_tokens=8, seed=11, n=4, ignore_eos=True)
    outs = engine.generate([GenerationRequest(prompt=prompts[6], params=params)])
    assert [c.index for c in outs] == [0, 1, 2, 3]
    assert engine.stats["prefill_tokens"] == len(prompts[6])  # one prefill, three forks
    assert len({tuple(c.token_ids) for c in outs}) > 1
    for j, c in enumerate(outs):
        alone = SamplingParams(temperature=1.0, max_new_tokens=8, seed=11 + j, ignore_eos=True)
        assert run(Engine(model, max_slots=1), [prompts[6]], alone) == [c.token_ids]


@pytest.mark.parametrize("speculative", [False, True], ids=["plain", "mtp"])
def test_same_seed_same_text_alone_or_in_a_busy_batch(model, prompts, speculative):
    params = SamplingParams(
        temperature=0.9,
        top_p=0.9,
        top_k=50,
        repetition_penalty=1.2,
        seed=5,
        max_new_tokens=12,
        ignore_eos=True,
    )
    alone = run(Engine(model, max_slots=1), [prompts[4]], params)[0]
    engine = Engine(model, max_slots=6, token_budget=20, prefill_chunk=6, speculative=speculative)
    noise = SamplingParams(temperature=1.0, max_new_tokens=12, ignore_eos=True)  # unseeded neighbours
    early = [engine.submit(GenerationRequest(prompt=p, params=noise)) for p in prompts[:3]]
    engine.step()
    engine.step()
    target = engine.submit(GenerationRequest(prompt=prompts[4], params=params))
    late = [engine.submit(GenerationRequest(prompt=p, params=noise)) for p in prompts[5:]]
    while not all(h.done for h in [*early, target, *late]):
        engine.step()
    assert target.result()[0].token_ids == alone


def test_logits_do_not_depend_on_batch_composition(model, prompts):
    """Float noise only: far below the gaps that decide a sample."""
    engine = Engine(model, max_slots=8)
    runner = engine.runner
    for slot, p in enumerate(prompts):
        runner.hidden([p], [0], [slot])
    alone = runner.logits(runner.hidden([[7]], [len(prompts[3])], [3])[:, 0])
    batch = runner.logits(runner.hidden([[7]] * 8, [len(p) for p in prompts], list(range(8)))[:, 0])
    assert (alone[0] - batch[3]).abs().max() < 1e-4


def test_stops_lengths_and_eos(model, prompts, reference):
    engine = Engine(model, max_slots=4)
    k = 4
    stop_token = reference[0][k]
    out = engine.generate(
        [GenerationRequest(prompt=prompts[0], params=greedy(10, stop_token_ids=[stop_token]))]
    )
    expected = reference[0][: reference[0].index(stop_token) + 1]
    assert out[0].token_ids == expected and out[0].finish_reason == "stop"  # the stop token is kept
    out = engine.generate([GenerationRequest(prompt=prompts[0], params=greedy(3))])[0]
    assert out.token_ids == reference[0][:3] and out.finish_reason == "length"
    eos_engine = Engine(model, max_slots=4)
    eos_engine.eos_id = stop_token  # the model's EOS: generation stops there unless ignore_eos
    out = eos_engine.generate([GenerationRequest(prompt=prompts[0], params=SamplingParams(temperature=0))])[0]
    assert out.token_ids == expected and out.finish_reason == "stop"
    short = Engine(model, max_slots=1, max_len=len(prompts[0]) + 3)
    out = short.generate([GenerationRequest(prompt=prompts[0], params=greedy(10))])[0]
    assert out.token_ids == reference[0][:3] and out.finish_reason == "length"  # the cache is full
    with pytest.raises(ValueError, match="does not fit"):
        short.generate([GenerationRequest(prompt=list(range(2, 40)), params=greedy(1))])


def test_abort_frees_the_slot_for_waiting_requests(model, prompts, reference):
    engine = Engine(model, max_slots=1)
    long = engine.submit(GenerationRequest(prompt=prompts[0], params=greedy(50)))
    waiting = engine.submit(GenerationRequest(prompt=prompts[3], params=greedy(10)))
    engine.step()
    engine.step()
    assert not waiting.state.sequences  # no free slot yet
    long.abort()
    while not waiting.done:
        engine.step()
    aborted = long.result()[0]
    assert aborted.finish_reason == "abort" and 1 <= len(aborted.token_ids) < 50
    assert waiting.result()[0].token_ids == reference[3]
    queued = engine.submit(GenerationRequest(prompt=prompts[1], params=greedy(5)))
    queued.abort()  # aborted before it ever ran
    engine.step()
    assert queued.result()[0].finish_reason == "abort" and len(engine.scheduler.free_slots) == 1


def test_background_loop_serves_concurrent_threads(model, prompts, reference):
    engine = Engine(model, max_slots=4).start()
    results = {}

    def client(i):
        results[i] = engine.generate([GenerationRequest(prompt=prompts[i], params=greedy(10))])[0].token_ids

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    handle = engine.submit(GenerationRequest(prompt=prompts[2], params=greedy(10)), stream=True)
    streamed = [t for delta in handle for t in delta.token_ids]
    for t in threads:
        t.join(timeout=60)
    engine.stop()
    assert [results[i] for i in range(len(prompts))] == reference
    assert streamed == reference[2]


def test_logprobs_are_the_models(model, prompts):
    engine = Engine(model, max_slots=2)
    params = SamplingParams(
        temperature=0.8, seed=3, max_new_tokens=5, logprobs=True, top_logprobs=3, ignore_eos=True
    )
    c = engine.generate([GenerationRequest(prompt=prompts[0], params=params)])[0]
    with torch.no_grad():
        full = model(torch.tensor([prompts[0] + c.token_ids])).log_softmax(-1)[0]
    P = len(prompts[0])
    for i, lp in enumerate(c.logprobs):
        expected = full[P - 1 + i]
        assert lp.token_id == c.token_ids[i]
        assert lp.logprob == pytest.approx(expected[lp.token_id].item(), abs=1e-4)
        assert [t for t, _ in lp.top] == expected.topk(3).indices.tolist()


def sgd_step(model, prompt):
    """One optimizer update of the model in train mode (as a GRPO trainer makes)."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ids = torch.tensor([prompt[:5]])
    model(ids, targets=torch.roll(ids, -1, 1)).total.backward()
    opt.step()


@pytest.mark.parametrize("speculative", [False, True], ids=["plain", "mtp"])
def test_generating_on_unsynced_weights_raises_and_a_sync_takes_the_update(prompts, speculative):
    """The weight-sync contract: after an optimizer step the engine refuses to decode until
    sync_weights(model); then it decodes exactly as a fresh engine built on the updated model."""
    model = random_model(tiny_config(), seed=6)
    engine = Engine(model, max_slots=2, speculative=speculative)
    before = run(engine, prompts[:2], greedy(6))
    sgd_step(model, prompts[0])
    with pytest.raises(RuntimeError, match=r"call engine.sync_weights\(model\) after each update"):
        run(engine, prompts[:2], greedy(6))
    handle = engine.submit(GenerationRequest(prompt=prompts[0], params=greedy(6)))  # the server's path
    with pytest.raises(RuntimeError, match="weights changed since the last sync_weights"):
        engine.step()
    assert handle.done and engine.load()["busy_slots"] == 0  # the request failed, its slot is free
    engine.sync_weights(model)
    after = run(engine, prompts[:2], greedy(6))
    assert model.training  # the engine restored the mode it found
    model.eval()
    assert after == run(Engine(model, max_slots=2), prompts[:2], greedy(6)) != before
    assert after == naive_generate(model, prompts[:2], 6)


def test_sync_weights_from_another_model_loads_its_state_dict(prompts):
    model, trained = random_model(tiny_config(), seed=6), random_model(tiny_config(), seed=7)
    engine = Engine(model, max_slots=2)
    engine.sync_weights(trained)
    assert run(engine, prompts[:2], greedy(6)) == naive_generate(trained, prompts[:2], 6)
    assert torch.equal(model.lm_head.weight, trained.lm_head.weight)  # copied into the engine's model
    with pytest.raises(ValueError, match="do not fit the engine's model"):
        engine.sync_weights(random_model(tiny_config(hidden_size=32), seed=8))


def test_the_engine_leaves_the_model_as_it_found_it(model, prompts):
    """The engine wraps the model: no class swapped, no tensor written (a trainer's model stays its own)."""
    classes = [type(m) for m in model.modules()]
    versions = [t._version for t in model.state_dict(keep_vars=True).values()]
    for speculative in (False, True):
        run(Engine(model, max_slots=2, speculative=speculative), prompts[:2], greedy(4))
    assert [type(m) for m in model.modules()] == classes
    assert [t._version for t in model.state_dict(keep_vars=True).values()] == versions


def test_stats_count_through_methods_and_read_as_a_mapping(model, prompts):
    engine = Engine(model, max_slots=2)
    run(engine, prompts[:2], greedy(3))
    stats = engine.stats
    assert stats.generated_tokens == stats["generated_tokens"] == 6
    assert stats["prefill_tokens"] == len(prompts[0]) + len(prompts[1]) and "steps" in stats
    assert set(dict(stats)) == {"steps", "prefill_tokens", "generated_tokens", "drafted", "accepted"}
    with pytest.raises(TypeError):
        stats["steps"] = 0  # read-only as a mapping
    with pytest.raises(KeyError):
        stats["count_step"]


def test_closing_a_stream_aborts_its_requests_and_frees_the_slots(model, prompts):
    engine = Engine(model, max_slots=2)
    stream = engine.stream([GenerationRequest(prompt=p, params=greedy(40)) for p in prompts[:2]])
    assert next(stream).token_ids
    assert engine.load() == {"waiting": 0, "active": 2, "busy_slots": 2, "slots": 2}
    stream.close()  # e.g. the HTTP client went away
    assert engine.load() == {"waiting": 0, "active": 0, "busy_slots": 0, "slots": 2}
