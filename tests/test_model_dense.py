"""The dense GQA families (llama, qwen2, qwen3): transformers parity both ways, the K/V cache, greedy
decoding against transformers' generate, loss and gradients, config and load errors.

The checkpoints are conftest.HF_DENSE's, written by transformers inside the test session: tied
embeddings, q/k/v bias, q/k norm, GQA ratios 1, 2 and 8, llama3 and linear rope scaling.
"""

import json

import pytest
import torch

from nanoseek.model import CheckpointError, DenseConfig, DenseTransformer, KVCache, account, from_pretrained
from nanoseek.model.dense import rope_frequencies

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = ["llama", "llama_tied", "qwen2", "qwen3"]


def hf_model(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def ids(batch=2, length=40, seed=0):
    return torch.randint(0, 96, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", NAMES)
def test_transformers_checkpoint_loads_in_nanoseek(hf_dense_dirs, name):
    hf, ours = hf_model(hf_dense_dirs[name]), from_pretrained(hf_dense_dirs[name]).eval()
    assert type(ours) is DenseTransformer
    assert ours.config.model_type == hf.config.model_type
    x = ids()
    with torch.no_grad():
        want, got = hf(x).logits, ours(x)
    assert want.abs().max() > 1  # unit-scale logits: a wrong model cannot pass by being near zero
    assert (got - want).abs().max() < 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_nanoseek_checkpoint_loads_in_transformers(hf_dense_dirs, name, tmp_path):
    source = from_pretrained(hf_dense_dirs[name])
    torch.manual_seed(1)
    ours = DenseTransformer(source.config).eval()  # our own init, then perturbed to unit scale
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == source.config.model_type
    assert ("lm_head.weight" in _keys(tmp_path)) == (not source.config.tie_word_embeddings)
    hf = hf_model(tmp_path)
    assert type(hf).__name__ == config["architectures"][0]
    x = ids(seed=1)
    with torch.no_grad():
        assert (hf(x).logits - ours(x)).abs().max() < 1e-4
    assert from_pretrained(tmp_path).config == ours.config  # and the config round-trips


def _keys(path):
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return set(f.keys())


def test_the_distinctive_parts_are_exercised(hf_dense_dirs):
    """Each config differs from plain Llama in what it claims to test, so parity covers it."""
    cfgs = {n: from_pretrained(hf_dense_dirs[n]).config for n in NAMES}
    assert {c.kv_groups for c in cfgs.values()} == {1, 2, 8}
    assert cfgs["llama"].rope_scaling["rope_type"] == "llama3" and cfgs["llama_tied"].tie_word_embeddings
    assert cfgs["qwen2"].qkv_bias and not cfgs["qwen2"].o_bias and cfgs["qwen3"].qk_norm
    assert cfgs["qwen3"].head_dim * cfgs["qwen3"].num_attention_heads != cfgs["qwen3"].hidden_size
    # dropping the llama3 scaling changes the logits: the parity above depends on it
    model = from_pretrained(hf_dense_dirs["llama"]).eval()
    plain = DenseTransformer(model.config.replace(rope_scaling=None)).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (model(ids()) - plain(ids())).abs().max() > 0.1


@pytest.mark.parametrize("rope_type", ["llama3", "linear"])
def test_rope_frequencies_equal_transformers(rope_type):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {"rope_type": rope_type, "factor": 8.0}
    if rope_type == "llama3":
        rope |= {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    hf_config = LlamaConfig(
        hidden_size=1024, num_attention_heads=8, rope_parameters={"rope_theta": 5e5, **rope}
    )
    want, _ = ROPE_INIT_FUNCTIONS[rope_type](hf_config, "cpu")
    got = rope_frequencies(DenseConfig.from_hf_dict(hf_config.to_dict()))
    assert torch.equal(got, want.float())
    assert not torch.equal(
        got, rope_frequencies(DenseConfig(hidden_size=1024, num_attention_heads=8, rope_theta=5e5))
    )


# ------------------------------------------------------------------------------------------ the cache


def cached_logits(model, cache, rows, slots, starts):
    """Logits of rows of new tokens (row i from position starts[i] of slot slots[i]), through the cache."""
    T = max(len(r) for r in rows)
    tokens = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
    positions = torch.tensor(starts)[:, None] + torch.arange(T)[None, :]
    return model(tokens, positions=positions, cache=cache, slots=torch.tensor(slots))


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_prefill_then_decode_through_the_cache_equals_the_full_forward(hf_dense_dirs, name):
    model = from_pretrained(hf_dense_dirs[name]).eval()
    a, b = ids(1, 30, seed=2)[0].tolist(), ids(1, 30, seed=3)[0].tolist()
    full_a, full_b = model(torch.tensor([a]))[0], model(torch.tensor([b]))[0]
    cache = model.new_cache(num_slots=4, max_len=32)
    # ragged prefill: a's first 10 tokens in slot 3 and b's first 16 in slot 1, in one batch
    out = cached_logits(model, cache, [a[:10], b[:16]], [3, 1], [0, 0])
    assert (out[0, :10] - full_a[:10]).abs().max() < 1e-5
    assert (out[1, :16] - full_b[:16]).abs().max() < 1e-5
    # then one token per step per row, each row at its own position
    for step in range(14):
        out = cached_logits(model, cache, [[a[10 + step]], [b[16 + step]]], [3, 1], [10 + step, 16 + step])
        assert (out[0, 0] - full_a[10 + step]).abs().max() < 1e-5
        assert (out[1, 0] - full_b[16 + step]).abs().max() < 1e-5
    # fork a's first 20 positions into slot 0 and continue there with b's tokens
    cache.copy_slot(3, 0, 20)
    forked = a[:20] + b[20:26]
    out = cached_logits(model, cache, [forked[20:]], [0], [20])
    assert (out[0] - model(torch.tensor([forked]))[0, 20:]).abs().max() < 1e-5


def test_cache_holds_rotated_keys_and_values_of_the_kv_heads(hf_dense_dirs):
    model = from_pretrained(hf_dense_dirs["qwen2"]).eval()
    cfg = model.config
    cache = model.new_cache(num_slots=3, max_len=16, dtype=torch.bfloat16)
    assert isinstance(cache, KVCache) and cache.num_slots == 3 and cache.max_len == 16
    width = 2 * cfg.num_key_value_heads * cfg.head_dim
    assert [tuple(t.shape) for t in cache.kv] == [(3, 16, width)] * cfg.num_hidden_layers
    assert cache.bytes_per_token == width * cfg.num_hidden_layers * 2
    assert account(cfg, dtype_bytes=2).kv_cache_bytes_per_token == cache.bytes_per_token
    with pytest.raises(ValueError, match="multi-token prediction"):
        model.new_cache(1, 4, with_mtp=True)
    # the first layer's row: [rope(k_proj(x)) | v_proj(x)] of the input's normalized embedding
    cache = model.new_cache(num_slots=1, max_len=4)
    x = torch.tensor([[5, 7]])
    with torch.no_grad():
        model(x, positions=torch.tensor([[0, 1]]), cache=cache, slots=torch.tensor([0]))
        attn = model.layers[0].self_attn
        h = model.layers[0].input_layernorm(model.embed_tokens(x))
        cos, sin = model.rotary(torch.tensor([[0, 1]]))
        _, k, v = attn.project(h, cos, sin)
    assert torch.allclose(cache.kv[0][0, :2], torch.cat([k.flatten(2), v.flatten(2)], -1)[0], atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_greedy_cached_decode_equals_transformers_generate(hf_dense_dirs, name):
    model, hf = from_pretrained(hf_dense_dirs[name]).eval(), hf_model(hf_dense_dirs[name])
    prompts = [ids(1, 7, seed=4)[0].tolist(), ids(1, 12, seed=5)[0].tolist()]
    n = 16
    want = [
        hf.generate(torch.tensor([p]), max_new_tokens=n, min_new_tokens=n, do_sample=False)[
            0, len(p) :
        ].tolist()
        for p in prompts
    ]
    # ours: both prompts in one cache (slots 0 and 1), prefilled apart, then decoded together
    cache = model.new_cache(num_slots=2, max_len=32)
    last = [cached_logits(model, cache, [p], [s], [0])[0, -1] for s, p in enumerate(prompts)]
    got = [[], []]
    for _ in range(n):
        nxt = [int(logits.argmax()) for logits in last]
        for row, t in zip(got, nxt):
            row.append(t)
        starts = [len(p) + len(row) - 1 for p, row in zip(prompts, got)]
        last = list(cached_logits(model, cache, [[t] for t in nxt], [0, 1], starts)[:, -1])
    assert got == want


# --------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3"])
def test_loss_and_gradients_match_transformers(hf_dense_dirs, name):
    """Over 160 tokens (two query blocks of the block-causal kernel), the chunked loss and every
    parameter's gradient equal transformers'; the tied head's gradient lands on the embedding."""
    hf = hf_model(hf_dense_dirs[name]).train()
    ours = from_pretrained(hf_dense_dirs[name]).train()
    x = ids(2, 160, seed=6)
    hf_loss = hf(x, labels=x).loss  # transformers shifts the labels itself
    targets = torch.cat([x[:, 1:], torch.full((2, 1), -100)], dim=1)
    loss = ours(x, targets=targets)
    assert abs(loss.lm.item() - hf_loss.item()) < 1e-5 and loss.total is loss.lm
    hf_loss.backward()
    loss.total.backward()
    hf_grads = {n.removeprefix("model."): p.grad for n, p in hf.named_parameters()}
    for n, p in ours.named_parameters():
        assert torch.allclose(p.grad, hf_grads[n], atol=1e-5, rtol=1e-4), n


def test_accounting_matches_instantiated_parameters(hf_dense_dirs):
    for name in NAMES:
        model = from_pretrained(hf_dense_dirs[name])
        acct = account(model.config, seq_len=64)
        assert acct.total_params == acct.active_params == sum(p.numel() for p in model.parameters()), name
        assert acct.embedding_params == model.embed_tokens.weight.numel()


def test_initial_loss_is_near_uniform_and_training_reduces_it():
    torch.manual_seed(0)
    for tied in (False, True):
        model = DenseTransformer(
            DenseConfig(model_type="qwen3", num_key_value_heads=2, tie_word_embeddings=tied)
        )
        x = torch.randint(0, 512, (4, 33))
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        first = model(x[:, :-1], targets=x[:, 1:]).lm
        assert abs(first.item() - torch.log(torch.tensor(512.0)).item()) < (1 if tied else 1e-4)
        for _ in range(20):
            loss = model(x[:, :-1], targets=x[:, 1:]).total
            loss.backward()
            opt.step()
            opt.zero_grad()
        assert loss.item() < first.item() - 1
        assert model.lm_head.weight is model.embed_tokens.weight or not tied


# -------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"rope_parameters": {"rope_type": "yarn", "factor": 4.0}},
            "rope_scaling: type 'yarn' is not supported; supported: default, linear, llama3",
        ),
        ({"num_key_value_heads": 3}, "num_key_value_heads: 3 does not divide num_attention_heads=4"),
        ({"mlp_bias": True}, "mlp_bias: true is not supported"),
        ({"use_sliding_window": True}, "use_sliding_window: true is not supported"),
        ({"hidden_act": "gelu"}, "hidden_act: only 'silu'"),
        ({"head_dim": "16"}, "head_dim: expected a positive integer, got '16' (a string)"),
        (
            {"rope_parameters": {"rope_type": "llama3", "factor": 8.0}},
            "rope_scaling.low_freq_factor: expected a positive number",
        ),
    ],
)
def test_bad_config_json_is_one_line_naming_the_field(hf_dense_dirs, tmp_path, change, message):
    import shutil

    shutil.copytree(hf_dense_dirs["llama"], tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match="config.json") as e:
        from_pretrained(tmp_path / "m")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unsupported_model_type_names_the_supported_ones(hf_dense_dirs, tmp_path):
    import shutil

    shutil.copytree(hf_dense_dirs["llama"], tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    with pytest.raises(
        CheckpointError, match=r"'mistral' is not supported; supported: .*llama, qwen2, qwen3"
    ):
        from_pretrained(tmp_path / "m")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_hidden_layers": 3}, "num_hidden_layers: config.json says 3, but the weights hold 2 layers"),
        (
            {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "attention_bias": None},
            r"missing model.layers.0.self_attn.k_proj.bias.*check attention_bias / model_type",
        ),
        ({"model_type": "qwen2"}, "attention_bias: qwen2 always has a bias on q/k/v"),
        ({"num_key_value_heads": 4}, "check num_key_value_heads"),
    ],
)
def test_weights_that_do_not_match_name_the_config_field(hf_dense_dirs, tmp_path, change, message):
    import shutil

    shutil.copytree(hf_dense_dirs["llama"], tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config = {k: v for k, v in {**config, **change}.items() if v is not None}
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        from_pretrained(tmp_path / "m")
