"""Optimizer and schedules: AdamW groups (no decay on norms/embeddings, router biases not params), lr curves."""

import math

import pytest
import torch

from nanoseek.model import DeepSeekV3, config_for_depth
from nanoseek.train.config import TrainSection
from nanoseek.train.optim import build_optimizer, lr_multiplier, param_groups


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DeepSeekV3(config_for_depth(2, vocab_size=300))


def test_groups_cover_every_parameter_once(model):
    decay, no_decay = param_groups(model, 0.1)
    ids = [id(p) for p in decay["params"] + no_decay["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert "embed_tokens.weight" in no_decay_names
    assert all(
        n.endswith(("norm.weight", "layernorm.weight")) for n in no_decay_names - {"embed_tokens.weight"}
    )
    assert "lm_head.weight" in decay_names and "layers.1.mlp.experts.gate_proj" in decay_names
    assert "layers.1.mlp.gate.weight" in decay_names  # the router's matrix decays ...
    all_names = {n for n, _ in model.named_parameters()}
    assert not any("e_score_correction_bias" in n for n in all_names)  # ... its bias is a buffer
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)


def test_weight_decay_is_decoupled_and_skips_embeddings(model):
    m = DeepSeekV3(model.config)
    m.load_state_dict(model.state_dict())
    cfg = TrainSection(lr=0.1, weight_decay=0.5)
    opt = build_optimizer(m, cfg)
    before_head = m.lm_head.weight.detach().clone()
    m.embed_tokens.weight.data.fill_(1.0)
    m.lm_head.weight.data.fill_(1.0)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: only decay can move a weight
    opt.step()
    assert torch.allclose(m.lm_head.weight, torch.full_like(before_head, 1 - 0.1 * 0.5))  # p *= 1 - lr * wd
    assert torch.equal(m.embed_tokens.weight, torch.ones_like(m.embed_tokens.weight))
    assert torch.equal(m.norm.weight, model.norm.weight)


def curve(**kw):
    cfg = TrainSection(**{"max_steps": 100, "warmup_steps": 10, "min_lr_ratio": 0.1, **kw})
    return [lr_multiplier(s, cfg) for s in range(cfg.max_steps)]


def test_warmup_then_cosine():
    c = curve(schedule="cosine")
    assert c[0] == pytest.approx(0.1) and c[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(c[:10], c[1:10]))  # linear warmup
    assert all(a >= b for a, b in zip(c[10:], c[11:]))  # then monotone down ...
    assert c[-1] == pytest.approx(0.1)  # ... to min_lr_ratio at the last step
    mid = 10 + (99 - 10) // 2
    assert c[mid] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (mid - 10) / 89)))


def test_wsd_is_flat_then_decays_linearly():
    c = curve(schedule="wsd", decay_fraction=0.2)
    assert all(x == 1.0 for x in c[10:80])
    assert c[80] < 1.0 and c[-1] == pytest.approx(0.1)
    steps = [c[i] - c[i + 1] for i in range(80, 99)]
    assert max(steps) - min(steps) < 1e-9  # linear


def test_constant_and_no_warmup():
    assert curve(schedule="constant")[10:] == [1.0] * 90
    assert curve(schedule="cosine", warmup_steps=0)[0] == 1.0
