"""DeepSeek-V3 model: transformers parity both ways, MLA forms, latent cache, routing, balancing, MTP."""

import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import random_model
from helpers import tiny_config as engine_tiny_config

from nanoseek.model import (
    DeepSeekV3,
    ModelConfig,
    account,
    config_for_depth,
    from_pretrained,
    get_family,
    preset,
)
from nanoseek.model.moe import MoE, RoutedExperts

YARN = {
    "type": "yarn",
    "factor": 4.0,
    "original_max_position_embeddings": 16,
    "beta_fast": 32,
    "beta_slow": 1,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
}


def tiny_config(**overrides) -> ModelConfig:
    """The engine tests' tiny MoE (expert groups, low-rank queries, MTP) with YaRN and a routed scale:
    every feature the parity test must cover."""
    return engine_tiny_config(**{"routed_scaling_factor": 2.5, "rope_scaling": YARN, **overrides})


@pytest.fixture(scope="module")
def transformers_cls():
    transformers = pytest.importorskip("transformers")
    return transformers.DeepseekV3ForCausalLM


def test_nanoseek_checkpoint_loads_in_transformers(tmp_path, transformers_cls):
    model = random_model(tiny_config())
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "deepseek_v3" and config["architectures"] == ["DeepseekV3ForCausalLM"]
    assert config["scoring_func"] == "sigmoid" and config["topk_method"] == "noaux_tc"
    hf = transformers_cls.from_pretrained(tmp_path, dtype=torch.float32).eval()
    x = torch.randint(0, 300, (2, 24))  # longer than original_max_position_embeddings: YaRN matters
    with torch.no_grad():
        assert (model(x) - hf(x).logits).abs().max() < 1e-4


def test_transformers_checkpoint_loads_in_nanoseek(tmp_path, transformers_cls):
    from transformers import DeepseekV3Config

    cfg = tiny_config(num_nextn_predict_layers=0)
    hf_config = DeepseekV3Config(**{k: v for k, v in cfg.to_hf_dict().items() if k != "rope_scaling"})
    hf_config.rope_parameters = {"rope_type": "yarn", "rope_theta": 10000.0, **cfg.rope_scaling}
    hf_config.rope_parameters.pop("type")
    torch.manual_seed(1)
    hf = transformers_cls(hf_config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.1)
        for name, buf in hf.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.normal_(0, 0.1)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path).eval()  # the registry, by config.json's model_type
    assert type(ours) is DeepSeekV3
    assert ours.config.rope_scaling["type"] == "yarn" and ours.config.n_group == 4
    x = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max() < 1e-4


def test_deepseek_style_config_json_loads(tmp_path):
    """DeepSeek's own config.json: rope_scaling with yarn, q_lora_rank, extra fields we keep verbatim."""
    model = random_model(tiny_config())
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_scaling"] = {**config["rope_scaling"], "type": "yarn"}
    config["quantization_config"] = {"quant_method": "fp8"}  # unknown to us: survives a round trip
    config["num_key_value_heads"] = 4
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = DeepSeekV3.from_pretrained(tmp_path)
    assert loaded.config.extra["quantization_config"] == {"quant_method": "fp8"}
    assert loaded.config.softmax_scale == pytest.approx(24**-0.5 * (0.1 * math.log(4.0) + 1) ** 2)
    x = torch.randint(0, 300, (1, 10))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_missing_mtp_weights_load_with_a_clear_message(tmp_path, caplog):
    model = random_model(tiny_config(num_nextn_predict_layers=0))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_nextn_predict_layers"] = 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        loaded = DeepSeekV3.from_pretrained(tmp_path)
    assert loaded.config.num_nextn_predict_layers == 0
    assert "MTP" in caplog.text and "model.layers.3" in caplog.text


def test_mismatched_weights_name_the_tensor(tmp_path):
    random_model(tiny_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["kv_lora_rank"] = 40
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"self_attn\.kv_a.*has shape \(32,?\).*config.json implies"):
        DeepSeekV3.from_pretrained(tmp_path)


@pytest.mark.parametrize("q_lora_rank", [0, 24])
def test_absorbed_attention_equals_naive(q_lora_rank):
    model = random_model(tiny_config(q_lora_rank=q_lora_rank), seed=2)
    attn = model.layers[0].self_attn
    B, T = 3, 17
    x = torch.randn(B, T, 64, dtype=torch.float64)
    attn.double()
    positions = torch.arange(T).expand(B, T)
    cos, sin = (t.double() for t in model.rotary(positions))
    q_nope, q_rope, latent, k_rope = attn.project(x, cos, sin)
    naive = attn.naive(q_nope, q_rope, latent, k_rope)
    causal = torch.ones(T, T, dtype=torch.bool).tril().expand(B, T, T)
    absorbed = attn.absorbed(q_nope, q_rope, latent, k_rope, causal)
    assert (naive - absorbed).abs().max() < 1e-5
    attn.float()
    x = x.float()
    cos, sin = model.rotary(positions)
    q_nope, q_rope, latent, k_rope = attn.project(x, cos, sin)
    naive, absorbed = (
        attn.naive(q_nope, q_rope, latent, k_rope),
        attn.absorbed(q_nope, q_rope, latent, k_rope, causal),
    )
    assert (naive - absorbed).abs().max() < 1e-5


def test_incremental_decoding_over_the_latent_cache_equals_full_recompute():
    model = random_model(tiny_config())
    B, P, N = 2, 7, 9
    ids = torch.randint(0, 300, (B, P + N))
    with torch.no_grad():
        full = model(ids)  # (B, P+N, V)
        cache = model.new_cache(num_slots=4, max_len=32)
        slots = torch.tensor([3, 1])  # any rows of the cache
        step_logits = [model(ids[:, :P], positions=torch.arange(P).expand(B, P), cache=cache, slots=slots)]
        for t in range(P, P + N):
            step_logits.append(
                model(ids[:, t : t + 1], positions=torch.full((B, 1), t), cache=cache, slots=slots)
            )
    incremental = torch.cat(step_logits, dim=1)
    assert (incremental - full).abs().max() < 1e-4


def test_cache_holds_only_latent_and_rope_key():
    cfg = tiny_config()
    cache = DeepSeekV3(cfg).new_cache(num_slots=2, max_len=16)
    expected = (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * cfg.num_hidden_layers * 4  # fp32
    assert cache.bytes_per_token == expected == account(cfg, dtype_bytes=4).mla_cache_bytes_per_token
    mha = cfg.num_attention_heads * (cfg.qk_head_dim + cfg.v_head_dim) * cfg.num_hidden_layers * 2
    assert account(cfg).mha_cache_bytes_per_token == mha


def test_router_uses_bias_for_selection_only_and_masks_groups():
    cfg = tiny_config(
        n_routed_experts=8, n_group=4, topk_group=1, num_experts_per_tok=2, routed_scaling_factor=2.0
    )
    moe = MoE(cfg)
    torch.nn.init.normal_(moe.gate.weight)
    x = torch.randn(64, cfg.hidden_size)
    bias = torch.zeros(8)
    bias[6] = 10.0  # expert 6 (group 3) becomes everyone's choice, its group the only one allowed
    moe.gate.e_score_correction_bias.copy_(bias)
    scores, ids, weights = moe.gate(x)
    assert (ids == 6).any(-1).all()
    assert ((ids // 2) == 3).all()  # topk_group=1: both experts come from group 3 (experts 6, 7)
    unbiased = torch.sigmoid(x @ moe.gate.weight.T).gather(1, ids)
    assert torch.allclose(weights, 2.0 * unbiased / unbiased.sum(-1, keepdim=True), atol=1e-6)


def test_group_limited_routing_matches_brute_force():
    cfg = tiny_config(n_routed_experts=8, n_group=4, topk_group=2, num_experts_per_tok=3)
    moe = MoE(cfg)
    torch.nn.init.normal_(moe.gate.weight)
    moe.gate.e_score_correction_bias.normal_()
    x = torch.randn(32, cfg.hidden_size)
    _, ids, _ = moe.gate(x)
    s = torch.sigmoid(x @ moe.gate.weight.T) + moe.gate.e_score_correction_bias
    for n in range(32):
        groups = s[n].view(4, 2).sort(-1, descending=True).values[:, :2].sum(-1).topk(2).indices.tolist()
        allowed = [e for e in range(8) if e // 2 in groups]
        best = sorted(allowed, key=lambda e: -s[n, e])[:3]
        assert sorted(ids[n].tolist()) == sorted(best)


def through_each_expert(experts: RoutedExperts, x, ids, w) -> torch.Tensor:
    """The routed experts' output by the definition: token by token, the weighted sum of its experts."""
    return torch.stack(
        [
            sum(
                w[n, k]
                * (F.silu(x[n] @ experts.gate_proj[e]) * (x[n] @ experts.up_proj[e]))
                @ experts.down_proj[e]
                for k, e in enumerate(ids[n].tolist())
            )
            for n in range(len(x))
        ]
    )


def test_expert_dispatch_equals_every_token_through_its_experts():
    cfg = tiny_config()
    experts = RoutedExperts(cfg)
    for p in experts.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(40, cfg.hidden_size)
    ids = torch.stack([torch.randperm(8)[:3] for _ in range(40)])
    w = torch.rand(40, 3)
    out = experts(x, ids, w)
    ref = through_each_expert(experts, x, ids, w)
    assert (out - ref).abs().max() < 1e-5
    # the hand-written backward (one gradient buffer for all experts) against autograd through the loop
    x.requires_grad_(True)
    w.requires_grad_(True)
    upstream = torch.randn(40, cfg.hidden_size)
    ids[:, 0] = 0  # expert 7 may go unused: its gradient must come back zero
    ids[ids == 7] = 6
    grads = torch.autograd.grad((experts(x, ids, w) * upstream).sum(), [x, w, *experts.parameters()])
    ref = through_each_expert(experts, x, ids, w)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), [x, w, *experts.parameters()])
    for got, want in zip(grads, ref_grads):
        assert (got - want).abs().max() < 1e-5
    assert experts.down_proj.shape[0] == 8 and grads[-1][7].abs().max() == 0


def test_experts_without_autograd_concatenate_only_the_experts_in_use(monkeypatch):
    # generation needs no backward: no (E, C, 2I) copy of every expert's [gate | up], the same result
    cfg = tiny_config()
    experts = RoutedExperts(cfg)
    for p in experts.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, ids, w = torch.randn(1, cfg.hidden_size), torch.tensor([[2, 5, 7]]), torch.rand(1, 3)
    training = experts(x, ids, w)
    concatenated, cat = [], torch.cat

    def counting_cat(tensors, *args, **kwargs):
        concatenated.append(sum(t.numel() for t in tensors))
        return cat(tensors, *args, **kwargs)

    monkeypatch.setattr(torch, "cat", counting_cat)
    with torch.no_grad():
        generating = experts(x, ids, w)
    assert torch.equal(generating, training.detach())
    assert sum(concatenated) == 3 * cfg.hidden_size * 2 * cfg.moe_intermediate_size  # the 3 in use


def test_block_causal_attention_equals_sdpa():
    from nanoseek.model.kernels import causal_attention

    q, k = torch.randn(2, 3, 300, 24, requires_grad=True), torch.randn(2, 3, 300, 24, requires_grad=True)
    v = torch.randn(2, 3, 300, 16, requires_grad=True)  # 300 rows: two full blocks of 128 and a partial one
    upstream = torch.randn(2, 3, 300, 16)
    out = causal_attention(q, k, v, scale=0.2)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.2)
    assert (out - ref).abs().max() < 1e-5
    grads = torch.autograd.grad((out * upstream).sum(), [q, k, v])
    ref_grads = torch.autograd.grad((ref * upstream).sum(), [q, k, v])
    for got, want in zip(grads, ref_grads):
        assert (got - want).abs().max() < 1e-5


def test_chunked_linear_cross_entropy_equals_plain():
    from nanoseek.model.kernels import linear_cross_entropy

    h = torch.randn(50, 16, requires_grad=True)
    weight = torch.randn(70, 16, requires_grad=True)
    targets = torch.randint(0, 70, (50,))
    targets[::4] = -100
    loss = linear_cross_entropy(h, weight, targets, chunk_elems=70 * 8)  # 7 chunks, the last one short
    ref = F.cross_entropy(h @ weight.T, targets, ignore_index=-100)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    grads = torch.autograd.grad(2.5 * loss, [h, weight])
    ref_grads = torch.autograd.grad(2.5 * ref, [h, weight])
    for got, want in zip(grads, ref_grads):
        assert (got - want).abs().max() < 1e-6
    ignored = torch.full((50,), -100)
    assert linear_cross_entropy(h, weight, ignored).item() == 0.0  # nothing counted: 0, not NaN


def test_training_gradients_match_transformers(tmp_path, transformers_cls):
    """Loss and every parameter's gradient agree with transformers over 160 tokens (the block-causal
    attention path), which covers the fused projections, the expert backward and the chunked loss."""
    cfg = tiny_config(num_nextn_predict_layers=0)
    model = random_model(cfg).train()
    model.save_pretrained(tmp_path)
    hf = transformers_cls.from_pretrained(tmp_path, dtype=torch.float32).train()
    ids = torch.randint(0, 300, (2, 160))
    targets = torch.roll(ids, -1, dims=1)
    targets[:, -1] = -100
    loss = model(ids, targets=targets).lm
    hf_loss = hf(ids, labels=ids).loss  # transformers shifts the labels itself
    assert loss.item() == pytest.approx(hf_loss.item(), rel=1e-5)
    loss.backward()
    hf_loss.backward()
    hf_grads = get_family("deepseek_v3").from_hf(cfg, {n: p.grad for n, p in hf.named_parameters()})
    for name, p in model.named_parameters():
        want = hf_grads[name]
        assert (p.grad - want).abs().max() <= 1e-4 * max(1.0, want.abs().max().item()), name


def test_bias_updates_balance_a_skewed_router():
    """Aux-loss-free balancing: a router that prefers a few experts gets balanced by the bias alone,
    at the default gamma = 0.001, with a fresh batch of tokens every step."""
    torch.manual_seed(0)
    cfg = tiny_config(n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=2, hidden_size=32)
    moe = MoE(cfg).train()
    with torch.no_grad():
        moe.gate.weight.normal_(0, 32**-0.5)
        moe.gate.weight[:3] += 0.3  # experts 0-2 (and their groups) win for most tokens

    def batch() -> torch.Tensor:
        return torch.randn(4096, cfg.hidden_size) + 0.3

    def imbalance() -> float:
        _, ids, _ = moe.gate(batch())
        load = torch.bincount(ids.flatten(), minlength=16).float()
        return (load.max() / load.mean()).item()

    before = imbalance()
    for _ in range(300):
        with torch.no_grad():
            moe(batch().view(1, 4096, -1))
        moe.update_bias(gamma=cfg.bias_update_speed)
    assert before > 3.0
    assert imbalance() < 1.3


def test_sequence_balance_loss_formula():
    cfg = tiny_config(aux_loss_alpha=0.1)
    moe = MoE(cfg).train()
    scores = torch.rand(2, 5, 8)
    ids = scores.topk(3, dim=-1).indices
    loss = moe.sequence_balance_loss(scores, ids)
    expected = 0.0
    for b in range(2):
        f = [sum(int(e in ids[b, t].tolist()) for t in range(5)) * 8 / (3 * 5) for e in range(8)]
        p = [(scores[b, :, e] / scores[b].sum(-1)).mean().item() for e in range(8)]
        expected += 0.1 * sum(fi * pi for fi, pi in zip(f, p)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_mtp_loss_predicts_two_ahead_and_is_weighted():
    cfg = tiny_config(mtp_loss_weight=0.5)
    model = random_model(cfg)
    ids = torch.randint(0, 300, (2, 12))
    targets = torch.roll(ids, -1, dims=1)
    targets[:, -1] = -100
    losses = model(ids, targets=targets)
    h, _ = model.hidden_states(ids)
    positions = torch.arange(11).expand(2, 11)
    h1 = model.mtp_hidden(0, h[:, :11], ids[:, 1:], positions)
    manual = F.cross_entropy(
        model.mtp_logits(0, h1).flatten(0, 1), targets[:, 1:].flatten(), ignore_index=-100
    )
    assert losses.mtp.item() == pytest.approx(manual.item(), rel=1e-5)
    assert losses.total.item() == pytest.approx(
        (losses.lm + 0.5 * losses.mtp + losses.balance).item(), rel=1e-6
    )
    losses.total.backward()
    assert model.mtp[0].eh_proj.weight.grad.abs().sum() > 0


def test_dense_model_is_the_same_class(tmp_path):
    cfg = tiny_config(n_routed_experts=0, num_nextn_predict_layers=0)
    model = random_model(cfg)
    assert not model.moe_layers()
    model.save_pretrained(tmp_path)
    x = torch.randint(0, 300, (1, 8))
    with torch.no_grad():
        assert torch.equal(DeepSeekV3.from_pretrained(tmp_path)(x), model(x))


def test_accounting_matches_instantiated_parameters():
    for cfg in (tiny_config(), config_for_depth(4, vocab_size=1000), tiny_config(n_routed_experts=0)):
        model = DeepSeekV3(cfg)
        acct = account(cfg, seq_len=128)
        mtp = sum(p.numel() for p in model.mtp.parameters())
        assert acct.total_params == sum(p.numel() for p in model.parameters()) - mtp
        assert acct.mtp_params == mtp
        if cfg.is_moe:
            idle = (
                (cfg.n_routed_experts - cfg.num_experts_per_tok)
                * 3
                * cfg.hidden_size
                * cfg.moe_intermediate_size
            )
            assert acct.active_params == acct.total_params - idle * (
                cfg.num_hidden_layers - cfg.first_k_dense_replace
            )


def test_v3_preset_has_deepseeks_published_size():
    acct = account(preset("v3-671b"))
    assert 665e9 < acct.total_params < 675e9  # "671B total parameters"
    assert 36e9 < acct.active_params < 38e9  # "37B activated for each token"
    assert acct.mla_cache_bytes_per_token == (512 + 64) * 61 * 2


def test_initial_loss_is_uniform_and_training_reduces_it():
    cfg = preset("d2")
    torch.manual_seed(0)
    model = DeepSeekV3(cfg)
    ids = torch.randint(0, cfg.vocab_size, (4, 32))
    targets = torch.roll(ids, -1, 1)
    assert model(ids, targets=targets).lm.item() == pytest.approx(math.log(cfg.vocab_size), rel=1e-4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        loss = model(ids, targets=targets).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_router_biases()
    assert model(ids, targets=targets).lm.item() < 0.6 * math.log(cfg.vocab_size)


def test_training_step_runs_under_bf16_autocast_and_in_bf16():
    """The hand-written expert, norm and loss backwards follow autocast's dtype (and a bf16 model's)."""
    model = random_model(tiny_config()).train()
    ids = torch.randint(0, 300, (2, 140))
    targets = torch.roll(ids, -1, dims=1)
    fp32 = model(ids, targets=targets).total.item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(ids, targets=targets)
    losses.total.backward()
    assert losses.total.item() == pytest.approx(fp32, rel=0.05)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    bf16 = random_model(tiny_config()).to(torch.bfloat16).train()
    bf16(ids, targets=targets).total.backward()
    assert all(p.grad.dtype == torch.bfloat16 for p in bf16.parameters() if p.grad is not None)
