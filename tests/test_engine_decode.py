"""The fused decode path (`nanoseek.engine.decode.FastDecoder`) against the model's own cached forward:
same hidden states and cache rows for full-rank and low-rank queries, fp32 and int8, with and without
shared experts and expert groups, one row or many (ragged positions, slots in any order); and greedy
decoding through the engine equal to full recompute for those variants. Each test runs with the C
decode kernel and with torch's matmuls (the fallback)."""

import pytest
import torch
from test_engine import greedy, predictable_model, ragged_prompts, random_model, run, tiny_config

from nanoseek.engine import Engine, decode, kernels
from nanoseek.engine.decode import FastDecoder
from nanoseek.engine.naive import naive_generate
from nanoseek.engine.quant import quantize_int8

VARIANTS = {
    "lowrank-q": {},
    "fullrank-q": {"q_lora_rank": 0},
    "no-shared-one-group": {"n_shared_experts": 0, "n_group": 1, "topk_group": 1},
    "dense": {"first_k_dense_replace": 3},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["kernel", "torch"], autouse=True)
def matmuls(request):
    """Every test twice: with the decode kernel (one- and two-row fp32 matmuls in C) and with torch's
    matmuls, what runs where no C compiler is available."""
    kernels.reset(enabled=request.param == "kernel")
    if request.param == "kernel" and not kernels.available():
        pytest.skip("no C compiler for the decode kernel")
    yield request.param
    kernels.reset()


def prefilled(model, lengths, slots):
    """A cache with random prompts of the given lengths prefilled into the given slots."""
    cache = model.new_cache(8, 40)
    prompts = ragged_prompts(lengths, seed=1)
    with torch.no_grad():
        for p, s in zip(prompts, slots):
            ids = torch.tensor([p])
            model.hidden_states(ids, torch.arange(len(p))[None], cache, torch.tensor([s]))
    return cache


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize(
    "lengths, slots",
    [([7], [3]), ([5, 9, 2, 9], [4, 0, 6, 1]), ([6, 6, 6], [2, 3, 4])],
    ids=["one", "ragged", "range"],
)
def test_fast_decode_equals_the_models_cached_forward(variant, int8, lengths, slots, monkeypatch, matmuls):
    model = random_model(tiny_config(**VARIANTS[variant]), seed=2)
    if int8:
        model = quantize_int8(model)
    ref_cache, fast_cache = prefilled(model, lengths, slots), prefilled(model, lengths, slots)
    tokens = [11, 42, 7, 299][: len(lengths)]
    with torch.no_grad():
        ref, _ = model.hidden_states(
            torch.tensor(tokens)[:, None], torch.tensor(lengths)[:, None], ref_cache, torch.tensor(slots)
        )
    monkeypatch.setattr(decode, "PREFETCH_MIN_BYTES", 0)  # exercise the prefetch reads on tiny weights
    fast = FastDecoder(model, prefetch=len(lengths) != 3)
    assert fast.supports(fast_cache)
    h = fast.hidden(tokens, lengths, slots, fast_cache)
    if not int8:  # fp32 weights kept (out, in) for the kernel, else (in, out) for MKL
        assert (fast.layers[0].qkv.w is not None) == (matmuls == "kernel")
    assert (fast.step is not None) == (matmuls == "kernel")  # the whole step in one C call
    torch.testing.assert_close(h, ref[:, 0], atol=2e-4, rtol=2e-4)
    for a, b in zip(fast_cache.kv, ref_cache.kv):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def decode_steps(model, c_step, lengths, slots, steps, rows=None):
    """Hidden states (steps, N, C) and cache after `steps` decode steps (token 11 + step each time) of
    `rows` (default all) of the prompts of the given lengths prefilled into the given slots."""
    cache = prefilled(model, lengths, slots)
    rows = range(len(lengths)) if rows is None else rows
    lengths, slots = [lengths[r] for r in rows], [slots[r] for r in rows]
    fast = FastDecoder(model, c_step=c_step)
    hs = [fast.hidden([11 + i] * len(lengths), [n + i for n in lengths], slots, cache) for i in range(steps)]
    return fast, torch.stack(hs), cache


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize(
    "lengths, slots", [([1], [5]), ([3, 9, 1, 14, 2], [4, 0, 7, 1, 6])], ids=["one", "ragged"]
)
def test_c_step_equals_the_layer_by_layer_step(variant, int8, lengths, slots, matmuls):
    """The step in one C call (decode_step.c) against the same fused weights run layer by layer in
    torch, for one row and for ragged rows in any slot order, over 25 steps (attention over 2 to 39
    positions)."""
    model = random_model(tiny_config(**VARIANTS[variant]), seed=10)
    if int8:
        model = quantize_int8(model)
    fast, h_c, cache_c = decode_steps(model, True, lengths, slots, 25)
    _, h_ref, cache_ref = decode_steps(model, False, lengths, slots, 25)
    assert (fast.step is not None) == (matmuls == "kernel")
    # int8: a last-bit difference moves an activation across a 16-bit rounding step (2^-15 of its row)
    tol = 1e-4 if int8 else 1e-5
    torch.testing.assert_close(h_c, h_ref, atol=tol, rtol=tol)
    for a, b in zip(cache_c.kv, cache_ref.kv):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_c_step_rows_do_not_depend_on_the_batch(int8, matmuls):
    """A row's hidden state is the same bits decoded alone or among other rows (what makes a seeded
    request's text independent of the traffic around it)."""
    if matmuls == "torch":
        pytest.skip("the torch step makes no such promise (oneDNN's batched matmuls)")
    model = random_model(tiny_config(), seed=12)
    if int8:
        model = quantize_int8(model)
    lengths, slots = [3, 9, 1, 14, 2, 6, 6], [4, 0, 7, 1, 6, 2, 3]
    _, together, _ = decode_steps(model, True, lengths, slots, 4)
    for i in (0, 3, 6):
        _, alone, _ = decode_steps(model, True, lengths, slots, 4, rows=[i])
        assert torch.equal(alone[:, 0], together[:, i])


def test_c_step_rejects_rows_outside_the_cache(matmuls):
    """The C step writes cache rows by slot and position: out of range must be an error, not a write
    past the tensor."""
    if matmuls == "torch":
        pytest.skip("no C step without the kernels")
    model = random_model(tiny_config(), seed=13)
    cache = prefilled(model, [3], [0])  # 8 slots of 40 positions
    fast = FastDecoder(model)
    with pytest.raises(ValueError, match="outside a cache of 40 positions"):
        fast.hidden([5], [40], [0], cache)
    with pytest.raises(ValueError, match="cache of 8 slots"):
        fast.hidden([5, 6], [3, 3], [0, 8], cache)
    assert fast.hidden([5], [39], [7], cache).shape == (1, model.config.hidden_size)


@pytest.mark.parametrize("groups", [(4, 2), (1, 1)], ids=["expert-groups", "one-group"])
def test_c_step_routing_breaks_ties_like_the_torch_step(groups, matmuls):
    """A router of zeros scores every expert alike: the C routing must pick the same experts (lower
    indices first, by group and within it) as the torch step's `route_one`, or the outputs differ.
    (One row: with more, the torch step's `topk` leaves the order of ties unspecified.)"""
    n_group, topk_group = groups
    model = random_model(tiny_config(n_group=n_group, topk_group=topk_group), seed=11)
    with torch.no_grad():
        for moe in model.moe_layers():
            moe.gate.weight.zero_()
            moe.gate.e_score_correction_bias.zero_()
    _, h_c, _ = decode_steps(model, True, [3], [0], 2)
    _, h_ref, _ = decode_steps(model, False, [3], [0], 2)
    torch.testing.assert_close(h_c, h_ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # and the choice matters: favouring other experts changes the result
        for moe in model.moe_layers():
            moe.gate.e_score_correction_bias[-3:] = 1.0
    _, h_other, _ = decode_steps(model, True, [3], [0], 2)
    assert (h_other - h_ref).abs().max() > 1e-3


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_engine_greedy_equals_full_recompute_for_each_variant(variant):
    model = random_model(tiny_config(**VARIANTS[variant]), seed=3)
    prompts = ragged_prompts([5, 1, 12, 3], seed=4)
    engine = Engine(model, max_slots=4, token_budget=24, prefill_chunk=8)
    assert engine.runner.fast is not None
    assert run(engine, prompts, greedy(10)) == naive_generate(model, prompts, 10)


def test_speculation_verifies_on_the_decode_path(matmuls, monkeypatch):
    """Speculation's [pending, draft] pairs run through the decode path as two rows of one slot (the
    C step, or the torch step without the kernels): each attends up to its own position, so greedy
    output still equals full recompute, with drafts both accepted and rejected."""
    model = predictable_model(tiny_config())
    prompts = ragged_prompts([4, 11, 6], seed=2)
    engine = Engine(model, max_slots=3, speculative=True)
    slot_lists, original = [], engine.runner.fast.hidden
    monkeypatch.setattr(engine.runner.fast, "hidden", lambda *a: slot_lists.append(a[2]) or original(*a))
    assert run(engine, prompts, greedy(16)) == naive_generate(model, prompts, 16)
    assert any(len(set(slots)) < len(slots) for slots in slot_lists)  # two tokens of a slot in one step
    assert 0.5 < engine.stats["accepted"] / engine.stats["drafted"] < 1.0


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_mtp_module_on_the_c_step_equals_the_models(int8, matmuls):
    """The MTP module (the speculative drafter) with its block as a one-layer C step: the same hidden
    states and MTP cache rows as the model's own `mtp_hidden`, for a run of tokens in one slot, on
    the first call and on the cached step."""
    model = random_model(tiny_config(), seed=16)
    if int8:
        model = quantize_int8(model)
    L, C = model.config.num_hidden_layers, model.config.hidden_size
    g = torch.Generator().manual_seed(17)
    h, ids = torch.randn(1, 6, C, generator=g), torch.randint(2, 300, (1, 6), generator=g)
    ref_cache, c_cache = (model.new_cache(4, 40, with_mtp=True) for _ in range(2))
    with torch.no_grad():
        ref = model.mtp_hidden(0, h, ids, torch.arange(6)[None], ref_cache, torch.tensor([2]))[0]
    fast = FastDecoder(model)
    for _ in range(2):
        got = fast.mtp_hidden(0, h[0], ids[0].tolist(), list(range(6)), [2] * 6, c_cache)
        if matmuls == "torch":
            assert got is None  # the caller runs the model's own forward
            return
        tol = 1e-4 if int8 else 1e-5
        torch.testing.assert_close(got, ref, atol=tol, rtol=tol)
        torch.testing.assert_close(c_cache.kv[L], ref_cache.kv[L], atol=tol, rtol=tol)


def test_fast_decode_follows_in_place_weight_updates():
    model = random_model(tiny_config(), seed=5)
    engine = Engine(model, max_slots=2)
    prompts = ragged_prompts([4, 6], seed=6)
    before = run(engine, prompts, greedy(6))
    torch.manual_seed(0)
    with torch.no_grad():  # e.g. an optimizer step: same tensors, new values
        for p in model.layers.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    after = run(engine, prompts, greedy(6))
    assert after == naive_generate(model, prompts, 6) != before


def test_other_dtypes_take_the_models_path():
    model = random_model(tiny_config(), seed=7).to(torch.float64)
    engine = Engine(model, max_slots=2)
    assert engine.runner.fast is None
    prompts = ragged_prompts([4, 6], seed=8)
    assert run(engine, prompts, greedy(5)) == naive_generate(model, prompts, 5)


@pytest.mark.parametrize("rows", [2, 6], ids=["chunks-or-gemv", "packed"])
@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_fast_logits_equal_the_models_head(int8, rows, monkeypatch):
    model = random_model(tiny_config(vocab_size=304), seed=9)  # int8 head chunks of 64 rows, the last short
    if int8:
        model = quantize_int8(model)
    monkeypatch.setattr(decode, "HEAD_CHUNK", 64)
    h = torch.randn(rows // 2, 2, model.config.hidden_size)
    with torch.no_grad():
        expected = model.lm_head(model.norm(h)).float()
    fast = FastDecoder(model, prefetch=True)
    got = fast.logits(h)
    assert got.shape == (rows // 2, 2, 304)
    packed = not int8 and rows >= decode.PACKED_MIN_ROWS and decode.ONEDNN_PACK
    assert (fast.packed_head_weight is not None) == packed
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
