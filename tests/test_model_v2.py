"""DeepSeek-V2 and V2-Lite (issue 17): the deepseek_v2 family against transformers' DeepseekV2ForCausalLM.

Checkpoints written by transformers load in nanoseek and ours load in transformers, logits within 1e-4
in fp32, for V2's shape (low-rank queries, group_limited_greedy routing, routed_scaling_factor 2.5,
YaRN) and V2-Lite's (q_lora_rank null, greedy routing); V2's router and balance loss against
hand-written formulas; the engine generates what transformers' `generate` does.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_model_v2.py
"""

import json

import pytest
import torch
from helpers import greedy, ragged_prompts, run

from nanoseek.engine import Engine
from nanoseek.engine.decode import FastDecoder
from nanoseek.model import CheckpointError, DeepSeekV3, ModelConfig, account, from_pretrained
from nanoseek.model.moe import MoE

pytestmark = pytest.mark.usefixtures("one_thread")

transformers = pytest.importorskip("transformers")

YARN = {
    "factor": 4.0,
    "original_max_position_embeddings": 16,
    "beta_fast": 32,
    "beta_slow": 1,
    "mscale": 0.707,
    "mscale_all_dim": 0.707,
}

# transformers' DeepseekV2Config keyword arguments, as a user's config.json states them
SHAPES = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=48,
    moe_intermediate_size=16,
    num_hidden_layers=3,
    num_attention_heads=4,
    kv_lora_rank=16,
    qk_nope_head_dim=8,
    qk_rope_head_dim=4,
    v_head_dim=8,
    n_routed_experts=8,
    n_shared_experts=2,
    num_experts_per_tok=2,
    first_k_dense_replace=1,
    max_position_embeddings=64,
    bos_token_id=0,
    eos_token_id=1,
)
VARIANTS = {
    # DeepSeek-V2: low-rank queries, 8 experts in 4 groups of which the best 2, scaled routing, YaRN
    "v2": dict(
        q_lora_rank=12,
        topk_method="group_limited_greedy",
        n_group=4,
        topk_group=2,
        routed_scaling_factor=2.5,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, **YARN},
    ),
    # DeepSeek-V2-Lite: a direct q_proj, greedy routing over all experts, no scaling
    "v2-lite": dict(
        q_lora_rank=None, topk_method="greedy", n_group=1, topk_group=1, routed_scaling_factor=1.0
    ),
}


def hf_config(variant: str):
    return transformers.DeepseekV2Config(**SHAPES, **VARIANTS[variant])


def our_config(variant: str, **overrides) -> ModelConfig:
    """The same model as `hf_config(variant)`, written in nanoseek's field names."""
    fields = {**SHAPES, **VARIANTS[variant], **overrides}
    rope = fields.pop("rope_parameters", None)
    if rope:
        fields["rope_scaling"] = {"type": "yarn", **YARN}
    return ModelConfig(model_type="deepseek_v2", **fields)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every weight N(0, 0.1), routers N(0, 1) so that expert choices are far from ties."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 1.0 if name.endswith("mlp.gate.weight") else 0.1)
    return model.eval()


def hf_logits(hf, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(x).logits


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_transformers_checkpoint_loads_in_nanoseek(tmp_path, variant):
    hf = randomize(transformers.DeepseekV2ForCausalLM(hf_config(variant)), seed=1)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path).eval()  # the registry, by config.json's model_type
    assert type(ours) is DeepSeekV3 and ours.config.model_type == "deepseek_v2"
    assert (ours.config.scoring_func, ours.config.norm_topk_prob) == ("softmax", False)
    assert ours.config.topk_method == VARIANTS[variant]["topk_method"]
    assert all(m.gate.e_score_correction_bias is None for m in ours.moe_layers())
    x = torch.randint(0, 96, (2, 24))  # longer than YaRN's original 16 positions
    with torch.no_grad():
        assert (ours(x) - hf_logits(hf, x)).abs().max() < 1e-4


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_nanoseek_checkpoint_loads_in_transformers(tmp_path, variant):
    ours = randomize(DeepSeekV3(our_config(variant)), seed=2)
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "deepseek_v2" and config["architectures"] == ["DeepseekV2ForCausalLM"]
    assert config["scoring_func"] == "softmax" and config["norm_topk_prob"] is False
    hf, info = transformers.DeepseekV2ForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]  # no e_score_correction_bias
    assert hf.config.topk_method == VARIANTS[variant]["topk_method"]
    x = torch.randint(0, 96, (2, 24))
    with torch.no_grad():
        assert (ours(x) - hf_logits(hf.eval(), x)).abs().max() < 1e-4


def test_engine_greedy_equals_transformers_generate(tmp_path):
    model = randomize(DeepSeekV3(our_config("v2")), seed=3)
    assert "softmax" in FastDecoder.supports(model)  # the C step is V3's router: V2 takes its own forward
    model.save_pretrained(tmp_path)
    hf = transformers.DeepseekV2ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    prompts = ragged_prompts([5, 1, 13], vocab=96, seed=3)
    engine = Engine(model, tokenizer=None, max_slots=3, prefill_chunk=4)  # prompts prefilled in pieces
    ours = run(engine, prompts, greedy(12))
    for prompt, tokens in zip(prompts, ours):
        with torch.no_grad():
            out = hf.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=12,
                min_new_tokens=12,  # our greedy() ignores EOS
                do_sample=False,
                pad_token_id=0,
            )
        assert tokens == out[0, len(prompt) :].tolist()


def test_int8_greedy_equals_the_int8_models_full_recompute():
    """quantize_int8 on DeepSeek-V2 (low-rank q, MLA, softmax-routed experts): the projections (but
    kv_b_proj, absorbed into attention), the shared and routed experts and the head become int8, and the
    engine's cached decode equals the int8 model's full recompute."""
    from nanoseek.engine.naive import naive_generate
    from nanoseek.engine.quant import Int8Experts, Int8Linear, quantize_int8

    model = quantize_int8(randomize(DeepSeekV3(our_config("v2")), seed=3))
    attn, moe = model.layers[1].self_attn, model.layers[1].mlp
    projections = (attn.q_a_proj, attn.q_b_proj, attn.kv_a_proj_with_mqa, attn.o_proj, model.lm_head)
    assert all(type(m) is Int8Linear for m in projections)
    assert isinstance(moe, MoE) and type(moe.shared_experts.down_proj) is Int8Linear
    assert any(type(m) is Int8Experts for m in moe.modules())
    prompts = ragged_prompts([5, 1, 13], vocab=96, seed=3)
    engine = Engine(model, tokenizer=None, max_slots=3, prefill_chunk=4)
    assert run(engine, prompts, greedy(10)) == naive_generate(model, prompts, 10)


# ------------------------------------------------------------------------------ V2's router and loss
def test_group_limited_greedy_routing_matches_brute_force():
    cfg = our_config("v2", num_experts_per_tok=3)
    moe = MoE(cfg)
    torch.nn.init.normal_(moe.gate.weight)
    x = 0.3 * torch.randn(256, cfg.hidden_size)  # affinities spread enough that max and sum rank apart
    _, ids, weights = moe.gate(x)
    s = torch.softmax(x @ moe.gate.weight.T, dim=-1)
    for n in range(256):
        group_best = [max(s[n, 2 * g : 2 * g + 2].tolist()) for g in range(4)]  # a group's best expert
        groups = sorted(range(4), key=lambda g: -group_best[g])[:2]
        allowed = [e for e in range(8) if e // 2 in groups]
        best = sorted(allowed, key=lambda e: -s[n, e])[:3]
        assert sorted(ids[n].tolist()) == sorted(best)
        # V2's weights: the softmax affinities, unnormalized, times routed_scaling_factor
        assert weights[n].tolist() == pytest.approx([2.5 * s[n, e].item() for e in ids[n].tolist()], abs=1e-6)


def test_greedy_routing_ignores_groups():
    cfg = our_config("v2-lite", n_group=4, topk_group=1, num_experts_per_tok=3)
    moe = MoE(cfg)
    torch.nn.init.normal_(moe.gate.weight)
    x = torch.randn(16, cfg.hidden_size)
    _, ids, _ = moe.gate(x)
    s = torch.softmax(x @ moe.gate.weight.T, dim=-1)
    assert torch.equal(ids.sort(-1).values, s.topk(3, dim=-1).indices.sort(-1).values)


def balance_reference(scores: list, chosen: list, E: int, K: int, alpha: float) -> float:
    """DeepSeek-V2's MoEGate aux loss for one batch, scores[b][t][e] and chosen[b][t] (K ids) given per
    sequence: alpha * mean_b sum_e f_e P_e with f_e = E / (K T) * #{t: e chosen} and P_e = mean_t s_e."""
    total = 0.0
    for seq_scores, seq_chosen in zip(scores, chosen):
        T = len(seq_scores)
        f = [E / (K * T) * sum(e in ids for ids in seq_chosen) for e in range(E)]
        p = [sum(s[e] for s in seq_scores) / T for e in range(E)]
        total += sum(fe * pe for fe, pe in zip(f, p))
    return alpha * total / len(scores)


@pytest.mark.parametrize("seq_aux", [True, False])
def test_balance_loss_is_deepseek_v2s_formula(seq_aux):
    cfg = our_config("v2", aux_loss_alpha=0.01, seq_aux=seq_aux, num_hidden_layers=4)
    model = randomize(DeepSeekV3(cfg), seed=5).train()
    inputs = {}
    for i, moe in enumerate(model.moe_layers()):
        moe.register_forward_hook(lambda m, args, out, i=i: inputs.__setitem__(i, args[0].detach()))
    ids = torch.randint(0, 96, (3, 10))
    losses = model(ids, targets=torch.roll(ids, -1, dims=1))
    expected = 0.0
    for i, moe in enumerate(model.moe_layers()):
        x = inputs[i]  # (3, 10, C): this layer's input
        scores = torch.softmax(x @ moe.gate.weight.T, dim=-1)
        _, chosen, _ = moe.gate(x.flatten(0, 1))
        scores, chosen = scores.tolist(), chosen.view(3, 10, -1).tolist()
        if not seq_aux:  # the whole batch as one sequence
            scores, chosen = [sum(scores, [])], [sum(chosen, [])]
        expected += balance_reference(scores, chosen, E=8, K=2, alpha=0.01)
    assert len(inputs) == 3 and losses.balance.item() == pytest.approx(expected, rel=1e-5)
    assert losses.total.item() == pytest.approx((losses.lm + losses.balance).item(), rel=1e-6)
    losses.balance.backward()
    assert model.layers[1].mlp.gate.weight.grad.abs().sum() > 0  # it trains the router
    model.update_router_biases()  # V2's router has no bias: the counts reset, nothing else
    assert all(m.expert_load.sum() == 0 for m in model.moe_layers())


def test_balance_loss_is_off_in_eval_and_at_alpha_zero():
    ids = torch.randint(0, 96, (2, 8))
    for alpha, train in ((0.01, False), (0.0, True)):
        model = randomize(DeepSeekV3(our_config("v2-lite", aux_loss_alpha=alpha)), seed=0).train(train)
        assert model(ids, targets=ids).balance.item() == 0.0


# ------------------------------------------------------------------------------ config and loading
def test_moe_layer_freq_places_moe_layers_and_is_counted():
    cfg = our_config("v2-lite", num_hidden_layers=6, first_k_dense_replace=1, moe_layer_freq=2)
    model = DeepSeekV3(cfg)
    assert [isinstance(b.mlp, MoE) for b in model.layers] == [False, False, True, False, True, False]
    assert account(cfg).total_params == sum(p.numel() for p in model.parameters())


def test_config_round_trips_and_defaults_follow_model_type():
    cfg = our_config("v2", aux_loss_alpha=0.001)
    again = ModelConfig.from_hf_dict(json.loads(json.dumps(cfg.to_hf_dict())))
    assert again == cfg
    lite = ModelConfig(model_type="deepseek_v2")  # V2's router unless said otherwise
    assert (lite.scoring_func, lite.topk_method, lite.norm_topk_prob) == ("softmax", "greedy", False)
    assert (ModelConfig().scoring_func, ModelConfig().topk_method) == ("sigmoid", "noaux_tc")
    assert "rope_interleave" not in cfg.to_hf_dict() and ModelConfig().to_hf_dict()["rope_interleave"]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"model_type": "deepseek_v2", "scoring_func": "sigmoid"}, r"scoring_func: deepseek_v2 .*'softmax'"),
        ({"model_type": "deepseek_v2", "topk_method": "noaux_tc"}, r"topk_method: deepseek_v2 .*'greedy'"),
        ({"model_type": "deepseek_v2", "norm_topk_prob": True}, r"norm_topk_prob: expected false"),
        ({"model_type": "deepseek_v2", "num_nextn_predict_layers": 1}, r"num_nextn_predict_layers: "),
        ({"topk_method": "greedy"}, r"topk_method: deepseek_v3 routes with 'noaux_tc'"),
        ({"scoring_func": "softmax"}, r"scoring_func: deepseek_v3 .*'sigmoid'"),
        ({"model_type": "mixtral"}, r"model_type: expected one of deepseek_v3, deepseek_v2"),
        ({"model_type": "deepseek_v2", "moe_layer_freq": 0}, r"moe_layer_freq: expected a positive integer"),
    ],
)
def test_inconsistent_routing_is_refused_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**fields)


def test_v3_weights_labelled_v2_name_the_model_type(tmp_path):
    v3 = ModelConfig(**{k: v for k, v in SHAPES.items()}, q_lora_rank=12, n_group=4, topk_group=2)
    DeepSeekV3(v3).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(model_type="deepseek_v2", scoring_func="softmax", topk_method="group_limited_greedy")
    config["norm_topk_prob"] = False
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"unexpected .*e_score_correction_bias.*check model_type"):
        from_pretrained(tmp_path)


# DeepSeek-V2-Lite's config.json as published (deepseek-ai/DeepSeek-V2-Lite), read by its remote code
V2_LITE_JSON = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV2Config"},
    "model_type": "deepseek_v2",
    "vocab_size": 102400,
    "hidden_size": 2048,
    "intermediate_size": 10944,
    "moe_intermediate_size": 1408,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "num_experts_per_tok": 6,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "kv_lora_rank": 512,
    "q_lora_rank": None,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "n_group": 1,
    "topk_group": 1,
    "topk_method": "greedy",
    "scoring_func": "softmax",
    "norm_topk_prob": False,
    "routed_scaling_factor": 1.0,
    "aux_loss_alpha": 0.001,
    "seq_aux": True,
    "ep_size": 1,
    "max_position_embeddings": 163840,
    "rope_theta": 10000,
    "rope_scaling": {
        "type": "yarn",
        "factor": 40,
        "original_max_position_embeddings": 4096,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 0.707,
        "mscale_all_dim": 0.707,
    },
    "hidden_act": "silu",
    "attention_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 100000,
    "eos_token_id": 100001,
    "torch_dtype": "bfloat16",
}


def test_deepseeks_published_v2_configs_read_with_their_published_sizes():
    lite = ModelConfig.from_hf_dict(V2_LITE_JSON)
    assert (lite.model_type, lite.q_lora_rank, lite.aux_loss_alpha) == ("deepseek_v2", 0, 0.001)
    assert lite.extra == {"auto_map": V2_LITE_JSON["auto_map"]}  # kept for the round trip (ep_size: written)
    acct = account(lite)
    assert 15.6e9 < acct.total_params < 15.8e9  # "15.7B total parameters"
    assert 2.3e9 < acct.active_params - acct.embedding_params < 2.5e9  # "2.4B activated" (head included)
    # DeepSeek-V2: low-rank queries, 160 experts in 8 groups (best 3 kept), routed_scaling_factor 16
    v2 = ModelConfig.from_hf_dict(
        {
            **V2_LITE_JSON,
            **dict(hidden_size=5120, intermediate_size=12288, moe_intermediate_size=1536),
            **dict(num_hidden_layers=60, num_attention_heads=128, num_key_value_heads=128),
            **dict(n_routed_experts=160, q_lora_rank=1536, n_group=8, topk_group=3),
            **dict(topk_method="group_limited_greedy", routed_scaling_factor=16.0),
        }
    )
    acct = account(v2)
    assert 235e9 < acct.total_params < 237e9  # "236B total parameters"
    assert 21e9 < acct.active_params < 22e9  # "21B activated for each token"
