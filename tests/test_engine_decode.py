"""The fast decode path (`nanoseek.engine.decode.FastDecoder`, the C step) against the model's own
cached forward and against the torch specification (`nanoseek.engine.reference`): same hidden states
and cache rows for full-rank and low-rank queries, fp32 and int8, with and without shared experts and
expert groups, one row or many (ragged positions, slots in any order); `supports` refusing what it
cannot run, with its reason; and greedy decoding through the engine equal to full recompute for those
variants, with the C step and without it (no C compiler: the model's own forward)."""

import logging

import pytest
import torch
from helpers import greedy, predictable_model, ragged_prompts, random_model, run, tiny_config
from torch import nn

from nanoseek.engine import Engine, decode, kernels
from nanoseek.engine.decode import FastDecoder, LayerWeights
from nanoseek.engine.naive import naive_generate
from nanoseek.engine.quant import quantize_int8
from nanoseek.engine.reference import reference_step, route

VARIANTS = {
    "lowrank-q": {},
    "fullrank-q": {"q_lora_rank": 0},
    "no-shared-one-group": {"n_shared_experts": 0, "n_group": 1, "topk_group": 1},
    "dense": {"first_k_dense_replace": 3},
}
pytestmark = pytest.mark.usefixtures("one_thread")


def prefilled(model, lengths, slots):
    """A cache with random prompts of the given lengths prefilled into the given slots."""
    cache = model.new_cache(8, 40)
    prompts = ragged_prompts(lengths, seed=1)
    with torch.no_grad():
        for p, s in zip(prompts, slots):
            ids = torch.tensor([p])
            model.hidden_states(ids, torch.arange(len(p))[None], cache, torch.tensor([s]))
    return cache


def maybe_int8(model, int8: bool):
    return quantize_int8(model) if int8 else model


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize(
    "lengths, slots",
    [([7], [3]), ([5, 9, 2, 9], [4, 0, 6, 1]), ([6, 6, 6], [2, 3, 4])],
    ids=["one", "ragged", "range"],
)
def test_fast_decode_equals_the_models_cached_forward(variant, int8, lengths, slots, c_step):
    model = maybe_int8(random_model(tiny_config(**VARIANTS[variant]), seed=2), int8)
    ref_cache, fast_cache = prefilled(model, lengths, slots), prefilled(model, lengths, slots)
    tokens = [11, 42, 7, 299][: len(lengths)]
    with torch.no_grad():
        ref, _ = model.hidden_states(
            torch.tensor(tokens)[:, None], torch.tensor(lengths)[:, None], ref_cache, torch.tensor(slots)
        )
    assert FastDecoder.supports(model, fast_cache) is None
    h = FastDecoder(model).hidden(tokens, lengths, slots, fast_cache)
    torch.testing.assert_close(h, ref[:, 0], atol=2e-4, rtol=2e-4)
    for a, b in zip(fast_cache.kv, ref_cache.kv):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def reference_steps(model, lengths, slots, steps, layers=None):
    """Hidden states (steps, N, C) and cache after `steps` decode steps (token 11 + step each time)
    of the prompts prefilled into the given slots, through the torch reference on the fused weights."""
    cache = prefilled(model, lengths, slots)
    layers = layers or [LayerWeights.of(block) for block in model.layers]
    hs = []
    for i in range(steps):
        positions = [n + i for n in lengths]
        cos, sin = model.rotary(torch.tensor(positions))
        h = model.embed_tokens(torch.tensor([11 + i] * len(lengths))).detach()
        hs.append(reference_step(layers, h, positions, slots, cache.kv, cos, sin))
    return torch.stack(hs), cache


def c_steps(model, lengths, slots, steps, rows=None):
    """As `reference_steps`, through the C step, for `rows` (default all) of the prompts."""
    cache = prefilled(model, lengths, slots)
    rows = range(len(lengths)) if rows is None else rows
    lengths, slots = [lengths[r] for r in rows], [slots[r] for r in rows]
    fast = FastDecoder(model)
    hs = [fast.hidden([11 + i] * len(lengths), [n + i for n in lengths], slots, cache) for i in range(steps)]
    return torch.stack(hs), cache


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_reference_step_equals_the_models_cached_forward(variant, int8, matmuls):
    """The specification is the model's math: the torch reference on the fused weights (rows
    reordered, rope halves, absorbed attention, host routing) gives the model's hidden states and
    cache rows, over 3 steps of ragged rows in any slot order."""
    model = maybe_int8(random_model(tiny_config(**VARIANTS[variant]), seed=14), int8)
    lengths, slots = [5, 9, 2], [4, 0, 6]
    h_ref, cache_ref = reference_steps(model, lengths, slots, 3)
    cache = prefilled(model, lengths, slots)
    with torch.no_grad():
        for i in range(3):
            positions = torch.tensor([n + i for n in lengths])[:, None]
            h, _ = model.hidden_states(torch.full((3, 1), 11 + i), positions, cache, torch.tensor(slots))
            torch.testing.assert_close(h_ref[i], h[:, 0], atol=2e-4, rtol=2e-4)
    tol = 1e-4 if int8 else 1e-5  # int8: activations rounded to 16 bits per row, over 3 steps
    for a, b in zip(cache_ref.kv, cache.kv):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize(
    "lengths, slots", [([1], [5]), ([3, 9, 1, 14, 2], [4, 0, 7, 1, 6])], ids=["one", "ragged"]
)
def test_c_step_equals_the_reference_step(variant, int8, lengths, slots, c_step):
    """The step in one C call (decode_step.c) against its specification in torch on the same fused
    weights, for one row and for ragged rows in any slot order, over 25 steps (attention over 2 to 39
    positions)."""
    model = maybe_int8(random_model(tiny_config(**VARIANTS[variant]), seed=10), int8)
    h_c, cache_c = c_steps(model, lengths, slots, 25)
    h_ref, cache_ref = reference_steps(model, lengths, slots, 25)
    # int8: a last-bit difference moves an activation across a 16-bit rounding step (2^-15 of its row)
    tol = 1e-4 if int8 else 1e-5
    torch.testing.assert_close(h_c, h_ref, atol=tol, rtol=tol)
    for a, b in zip(cache_c.kv, cache_ref.kv):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_c_step_rows_do_not_depend_on_the_batch(int8, c_step):
    """A row's hidden state is the same bits decoded alone or among other rows (what makes a seeded
    request's text independent of the traffic around it)."""
    model = maybe_int8(random_model(tiny_config(), seed=12), int8)
    lengths, slots = [3, 9, 1, 14, 2, 6, 6], [4, 0, 7, 1, 6, 2, 3]
    together, _ = c_steps(model, lengths, slots, 4)
    for i in (0, 3, 6):
        alone, _ = c_steps(model, lengths, slots, 4, rows=[i])
        assert torch.equal(alone[:, 0], together[:, i])


def test_c_step_rejects_rows_outside_the_cache(c_step):
    """The C step writes cache rows by slot and position: out of range must be an error, not a write
    past the tensor."""
    model = random_model(tiny_config(), seed=13)
    cache = prefilled(model, [3], [0])  # 8 slots of 40 positions
    fast = FastDecoder(model)
    with pytest.raises(ValueError, match="outside a cache of 40 positions"):
        fast.hidden([5], [40], [0], cache)
    with pytest.raises(ValueError, match="cache of 8 slots"):
        fast.hidden([5, 6], [3, 3], [0, 8], cache)
    assert fast.hidden([5], [39], [7], cache).shape == (1, model.config.hidden_size)


@pytest.mark.parametrize("groups", [(4, 2), (1, 1)], ids=["expert-groups", "one-group"])
def test_c_step_routing_breaks_ties_like_the_reference(groups, c_step):
    """A router of zeros scores every expert alike: the C routing must pick the experts the reference
    `route` picks (lower indices first, by group and within it), or the outputs differ."""
    n_group, topk_group = groups
    model = random_model(tiny_config(n_group=n_group, topk_group=topk_group), seed=11)
    with torch.no_grad():
        for moe in model.moe_layers():
            moe.gate.weight.zero_()
            moe.gate.e_score_correction_bias.zero_()
    lw = LayerWeights.of(model.layers[1])
    E, K = lw.routing[:2]
    first = [e for e, _ in route(lw, torch.zeros(E))]
    assert first == (list(range(K)) if n_group == 1 else [0, 1, 2])  # groups of 2: groups 0, 1 win
    h_c, _ = c_steps(model, [3], [0], 2)
    h_ref, _ = reference_steps(model, [3], [0], 2)
    torch.testing.assert_close(h_c, h_ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # and the choice matters: favouring other experts changes the result
        for moe in model.moe_layers():
            moe.gate.e_score_correction_bias[-3:] = 1.0
    h_other, _ = c_steps(model, [3], [0], 2)
    assert (h_other - h_ref).abs().max() > 1e-3


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_engine_greedy_equals_full_recompute_for_each_variant(variant, matmuls):
    model = random_model(tiny_config(**VARIANTS[variant]), seed=3)
    prompts = ragged_prompts([5, 1, 12, 3], seed=4)
    engine = Engine(model, max_slots=4, token_budget=24, prefill_chunk=8)
    assert (engine.runner.fast is not None) == (matmuls == "kernel")
    assert run(engine, prompts, greedy(10)) == naive_generate(model, prompts, 10)


def test_speculation_verifies_on_the_decode_path(matmuls, monkeypatch):
    """Speculation's [pending, draft] pairs run through the decode path as two rows of one slot (the
    C step, or the model's forward without the kernels): each attends up to its own position, so
    greedy output still equals full recompute, with drafts both accepted and rejected."""
    model = predictable_model(tiny_config())
    prompts = ragged_prompts([4, 11, 6], seed=2)
    engine = Engine(model, max_slots=3, speculative=True)
    slot_lists = []
    if matmuls == "kernel":
        original = engine.runner.fast.forward
        monkeypatch.setattr(engine.runner.fast, "forward", lambda *a: slot_lists.append(a[2]) or original(*a))
    assert run(engine, prompts, greedy(16)) == naive_generate(model, prompts, 16)
    if matmuls == "kernel":
        assert any(len(set(slots)) < len(slots) for slots in slot_lists)  # two tokens of a slot in one step
    assert 0.5 < engine.stats.acceptance < 1.0


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_mtp_module_on_the_c_step_equals_the_models(int8, c_step):
    """The MTP module (the speculative drafter) with its block as a one-layer C step: the same hidden
    states, MTP cache rows and draft logits as the model's own `mtp_hidden` / `mtp_logits`, for a run
    of tokens in one slot, on the first call and on the cached step."""
    model = maybe_int8(random_model(tiny_config(), seed=16), int8)
    L, C = model.config.num_hidden_layers, model.config.hidden_size
    g = torch.Generator().manual_seed(17)
    h, ids = torch.randn(1, 6, C, generator=g), torch.randint(2, 300, (1, 6), generator=g)
    ref_cache, c_cache = (model.new_cache(4, 40, with_mtp=True) for _ in range(2))
    with torch.no_grad():
        ref = model.mtp_hidden(0, h, ids, torch.arange(6)[None], ref_cache, torch.tensor([2]))[0]
        ref_logits = model.mtp_logits(0, ref).float()
    fast = FastDecoder(model)
    tol = 1e-4 if int8 else 1e-5
    for _ in range(2):
        got = fast.mtp_hidden(0, h[0], ids[0].tolist(), list(range(6)), [2] * 6, c_cache)
        torch.testing.assert_close(got, ref, atol=tol, rtol=tol)
        torch.testing.assert_close(c_cache.kv[L], ref_cache.kv[L], atol=tol, rtol=tol)
    torch.testing.assert_close(fast.mtp_logits(0, ref), ref_logits, atol=tol, rtol=tol)
    # the drafts in the same C call: each row's most likely token of those logits
    _, drafts = fast.mtp_hidden(0, h[0], ids[0].tolist(), list(range(6)), [2] * 6, c_cache, argmax=True)
    top2 = ref_logits.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-3  # rows whose best token float noise cannot change
    assert clear.sum() >= 4
    assert [d for d, c in zip(drafts, clear) if c] == ref_logits.argmax(-1)[clear].tolist()


@pytest.mark.parametrize("rows", [1, 2, 6], ids=["one", "kernel", "packed"])
@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_fast_forward_gives_the_models_hidden_states_and_logits(int8, rows, c_step):
    """One call from token ids to logits (the embedding, the layers, the final norm and the head in
    C where the decode kernel runs the head) gives the model's own cached forward and head."""
    model = maybe_int8(random_model(tiny_config(vocab_size=304), seed=5), int8)
    lengths, slots = [3, 8, 5, 2, 6, 4][:rows], [1, 0, 2, 5, 4, 3][:rows]
    ref_cache, fast_cache = prefilled(model, lengths, slots), prefilled(model, lengths, slots)
    tokens = [7, 250, 11, 3, 99, 301][:rows]
    with torch.no_grad():
        ref, _ = model.hidden_states(
            torch.tensor(tokens)[:, None], torch.tensor(lengths)[:, None], ref_cache, torch.tensor(slots)
        )
        ref_logits = model.lm_head(model.norm(ref[:, 0])).float()
    h, logits = FastDecoder(model).forward(tokens, lengths, slots, fast_cache)
    tol, cache_tol = 2e-4, 1e-4 if int8 else 1e-5
    torch.testing.assert_close(h, ref[:, 0], atol=tol, rtol=tol)
    torch.testing.assert_close(logits, ref_logits, atol=tol, rtol=tol)
    for a, b in zip(fast_cache.kv, ref_cache.kv):
        torch.testing.assert_close(a, b, atol=cache_tol, rtol=cache_tol)


def test_c_step_refuses_bad_ids_and_rope_tables(c_step):
    """A token id outside the vocabulary, or rope tables that do not fit the layers, raise a clear
    ValueError before the C code reads out of bounds."""
    model = random_model(tiny_config(), seed=3)
    cache = model.new_cache(2, 16)
    fast = FastDecoder(model)
    for bad in (-1, model.config.vocab_size):
        with pytest.raises(ValueError, match="outside the vocabulary"):
            fast.hidden([5, bad], [0, 0], [0, 1], cache)
    cos2, sin2 = fast._rope(cache)
    with pytest.raises(ValueError, match="rope tables"):
        fast.step.run([5], [0], [0], cache.kv, (cos2[:, :-2].contiguous(), sin2[:, :-2].contiguous()))
    with pytest.raises(ValueError, match="rope tables"):
        fast.step.run([5], [0], [0], cache.kv, (cos2[:4].contiguous(), sin2[:4].contiguous()))


@pytest.mark.parametrize("rows", [2, 6], ids=["kernel", "packed"])
@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_fast_logits_equal_the_models_head(int8, rows, c_step):
    model = maybe_int8(random_model(tiny_config(vocab_size=304), seed=9), int8)
    h = torch.randn(rows // 2, 2, model.config.hidden_size)
    with torch.no_grad():
        expected = model.lm_head(model.norm(h)).float()
    fast = FastDecoder(model)
    got = fast.logits(h)
    assert got.shape == (rows // 2, 2, 304)
    packed = not int8 and decode.packed_head(rows) and decode.ONEDNN_PACK  # never with AVX2 blocks
    assert (fast.head._packed is not None) == packed
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


class LoRALinear(nn.Module):
    """A stand-in for an adapter-wrapped projection (issue 17): a layer the C step cannot read."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features

    def forward(self, x):
        return self.base(x)


class NotDeepSeek(nn.Module):
    """A model of another family, with the engine-facing interface."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config = model, model.config
        self.norm, self.lm_head, self.embed_tokens = model.norm, model.lm_head, model.embed_tokens

    def hidden_states(self, *args):
        return self.inner.hidden_states(*args)

    def new_cache(self, *args, **kwargs):
        return self.inner.new_cache(*args, **kwargs)

    def forward(self, ids):
        return self.inner(ids)

    @property
    def device(self):
        return self.inner.device


def refusal(model, cache_dtype=None) -> str | None:
    return FastDecoder.supports(model, model.new_cache(1, 8, dtype=cache_dtype))


def test_supports_refuses_what_the_c_step_cannot_run_with_its_reason(c_step):
    model = random_model(tiny_config(), seed=7)
    assert refusal(model) is None and refusal(quantize_int8(random_model(tiny_config(), seed=7))) is None
    assert "is not DeepSeek-V3" in refusal(NotDeepSeek(model))
    assert "float64" in refusal(random_model(tiny_config(), seed=7).double())
    assert "bfloat16 on cpu" in refusal(model, cache_dtype=torch.bfloat16)
    wrapped = random_model(tiny_config(), seed=7)
    wrapped.layers[2].self_attn.o_proj = LoRALinear(wrapped.layers[2].self_attn.o_proj)
    assert refusal(wrapped) == (
        "layers.2.self_attn.o_proj is LoRALinear; the C step reads bias-free nn.Linear or Int8Linear layers"
    )
    with pytest.raises(ValueError, match="cannot run this model: .*LoRALinear"):
        FastDecoder(wrapped)
    kernels.reset(enabled=False)
    try:
        assert "kernels are not built" in refusal(model)
    finally:
        kernels.reset()


@pytest.mark.parametrize(
    "make",
    [
        lambda: random_model(tiny_config(), seed=7).to(torch.float64),
        lambda: NotDeepSeek(random_model(tiny_config(), seed=7)),
    ],
    ids=["float64", "other-family"],
)
def test_refused_models_decode_on_their_own_forward_and_say_why_once(make, caplog, matmuls):
    model = make()
    prompts = ragged_prompts([4, 6], seed=8)
    with caplog.at_level(logging.INFO, logger="nanoseek.engine.runner"):
        engines = [Engine(model, max_slots=2) for _ in range(2)]
    assert all(e.runner.fast is None and e.runner.fast_decode_off for e in engines)
    reason = engines[0].runner.fast_decode_off
    assert sum(reason in r.getMessage() for r in caplog.records) <= 1  # logged once per process
    assert run(engines[0], prompts, greedy(5)) == naive_generate(model, prompts, 5)
