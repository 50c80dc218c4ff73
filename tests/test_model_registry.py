"""The model registry (issue 16, item 6): config.json's model_type picks the family that loads it, an
unsupported one is one CheckpointError line naming the supported ones, a second family loads through
the same strict path, and every cache has the shape the engine relies on. Also the speed kernels'
contract (item 4): only an exact bias-free nn.Linear takes the kernel route."""

import json
from dataclasses import asdict, dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nanoseek.model import (
    CheckpointError,
    DeepSeekV3,
    LatentCache,
    ModelConfig,
    families,
    from_pretrained,
    get_family,
    register,
    registry,
)
from nanoseek.model.accounting import account, account_of
from nanoseek.model.checkpoint import save_model
from nanoseek.model.kernels import fused_linear, linear
from nanoseek.train.checkpointing import exportable


def tiny() -> ModelConfig:
    return ModelConfig(vocab_size=300, q_lora_rank=16, num_nextn_predict_layers=1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model, d = DeepSeekV3(tiny()), tmp_path_factory.mktemp("model")
    model.save_pretrained(d)
    return d, model


def with_model_type(src, dst, model_type):
    """A copy of the model directory `src` whose config.json says `model_type` (None: no such key)."""
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    config = json.loads((dst / "config.json").read_text())
    config.pop("model_type")
    if model_type is not None:
        config["model_type"] = model_type
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_deepseek_v3_is_registered_with_its_classes():
    family = get_family("deepseek_v3")
    assert "deepseek_v3" in families()
    assert (family.model_cls, family.config_cls, family.cache_cls) == (DeepSeekV3, ModelConfig, LatentCache)
    assert ModelConfig.model_type == "deepseek_v3" == tiny().to_hf_dict()["model_type"]


def test_from_pretrained_loads_by_model_type(saved):
    d, model = saved
    loaded = from_pretrained(d)
    assert type(loaded) is DeepSeekV3
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("model_type, said", [("mistral", "'mistral' is not supported"), (None, "missing")])
def test_an_unsupported_model_type_is_one_line_naming_the_supported_ones(saved, tmp_path, model_type, said):
    d, _ = saved
    m = with_model_type(d, tmp_path / "m", model_type)
    for load in (from_pretrained, DeepSeekV3.from_pretrained):
        with pytest.raises(CheckpointError) as caught:
            load(m)
        error = caught.value
        assert str(error) == f"{m / 'config.json'}: model_type: {said}; supported: {', '.join(families())}"
        assert error.field == "model_type"


@dataclass
class ToyConfig:
    """A second family: an embedding and a head, HF names `tok.weight` and `out.weight`."""

    model_type: ClassVar[str] = "toy"
    vocab_size: int = 10
    hidden_size: int = 4
    bos_token_id: int = 0
    eos_token_id: int = 1

    @classmethod
    def from_hf_dict(cls, d):
        return cls(vocab_size=d["vocab_size"], hidden_size=d["hidden_size"])

    def to_hf_dict(self):
        return {**asdict(self), "model_type": self.model_type}


class Toy(nn.Module):
    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)


def toy_family() -> registry.Family:
    return registry.Family(
        model_type="toy",
        model_cls=Toy,
        config_cls=ToyConfig,
        cache_cls=LatentCache,
        to_hf=lambda model: {"tok.weight": model.embed_tokens.weight, "out.weight": model.lm_head.weight},
        from_hf=lambda cfg, hf: {
            {"tok.weight": "embed_tokens.weight", "out.weight": "lm_head.weight"}.get(k, k): t
            for k, t in hf.items()
        },
    )


def test_a_second_family_loads_through_the_same_strict_path(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))  # undone after the test
    before = families()
    register(toy_family())
    assert families() == sorted([*before, "toy"])
    toy = Toy(ToyConfig())
    save_model(toy, tmp_path / "toy")  # the generic saver: config.json and the family's HF names
    assert json.loads((tmp_path / "toy" / "config.json").read_text())["model_type"] == "toy"
    loaded = from_pretrained(tmp_path / "toy")
    assert type(loaded) is Toy and torch.equal(loaded.lm_head.weight, toy.lm_head.weight)
    with pytest.raises(CheckpointError, match=r"model_type: 'toy' is a Toy, not a DeepSeekV3"):
        DeepSeekV3.from_pretrained(tmp_path / "toy")
    # strict for every family: a shape the config does not explain is named
    config = json.loads((tmp_path / "toy" / "config.json").read_text())
    (tmp_path / "toy" / "config.json").write_text(json.dumps({**config, "hidden_size": 6}))
    with pytest.raises(CheckpointError, match=r"embed_tokens\.weight has shape \(10, 4\) in the weights"):
        from_pretrained(tmp_path / "toy")


def test_a_second_family_exports_and_is_counted(monkeypatch):
    """Saving a sharded model builds a plain one of its own family; accounting counts a family without
    DeepSeek-V3's config as dense (every parameter active)."""
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))  # undone after the test
    register(toy_family())
    toy = Toy(ToyConfig())
    plain = exportable(toy, toy.state_dict())
    assert type(plain) is Toy and torch.equal(plain.lm_head.weight, toy.lm_head.weight)
    acct = account_of(toy, 16)
    assert acct.total_params == acct.active_params == 2 * 10 * 4 and acct.embedding_params == 10 * 4
    assert acct.forward_flops_per_token == 2 * 10 * 4 and acct.train_flops_per_token == 3 * 2 * 10 * 4
    deepseek = DeepSeekV3(tiny())
    assert account_of(deepseek, 16) == account(deepseek.config, 16)


@pytest.mark.parametrize("with_mtp", [False, True])
def test_the_cache_has_one_row_per_token_per_layer(with_mtp):
    cfg = tiny()
    model = DeepSeekV3(cfg)
    cache = model.new_cache(num_slots=3, max_len=16, with_mtp=with_mtp, dtype=torch.bfloat16)
    assert isinstance(cache, get_family("deepseek_v3").cache_cls)
    layers = cfg.num_hidden_layers + (cfg.num_nextn_predict_layers if with_mtp else 0)
    width = cfg.kv_lora_rank + cfg.qk_rope_head_dim
    assert [tuple(t.shape) for t in cache.kv] == [(3, 16, width)] * layers
    assert all(t.dtype == torch.bfloat16 for t in cache.kv)
    assert (cache.num_slots, cache.max_len) == (3, 16)
    assert cache.bytes_per_token == width * layers * 2
    cache.kv[0][1, :5] = 1.0
    cache.copy_slot(1, 2, 4)
    assert cache.kv[0][2, :4].eq(1).all() and cache.kv[0][2, 4:].eq(0).all()


class Doubled(nn.Linear):
    """An nn.Linear subclass with its own forward (as a wrapped or adapted layer would have)."""

    def forward(self, x):
        return 2 * F.linear(x, self.weight)


def test_fused_linear_copies_no_weights_without_autograd(monkeypatch):
    """Training concatenates the weights into one matmul (one backward for all); without autograd
    (no_grad, inference_mode: the engine's forward) each layer runs on its own weight, with no
    per-call copy, and both give the separate layers' results."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8)
    layers = [nn.Linear(8, n, bias=False) for n in (4, 2, 2)]
    want = [layer(x) for layer in layers]
    cats = []
    real_cat = torch.cat
    monkeypatch.setattr(torch, "cat", lambda *a, **k: cats.append(1) or real_cat(*a, **k))
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            got = fused_linear(x, *layers)
        assert not cats, mode
        assert all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got, want))
    for layer in layers:  # frozen weights and an x without grad: nothing to record either
        layer.weight.requires_grad_(False)
    fused_linear(x, *layers)
    assert not cats
    for layer in layers:
        layer.weight.requires_grad_(True)
    got = fused_linear(x, *layers)  # training: one concatenated matmul, gradients as the layers'
    assert len(cats) == 1
    sum(g.square().sum() for g in got).backward()
    grads = [layer.weight.grad.clone() for layer in layers]
    for layer in layers:
        layer.weight.grad = None
    sum(layer(x).square().sum() for layer in layers).backward()
    assert all(torch.allclose(g, layer.weight.grad, atol=1e-5) for g, layer in zip(grads, layers))


def test_only_an_exact_linear_takes_the_kernel_route():
    torch.manual_seed(0)
    x = torch.randn(5, 8, requires_grad=True)
    plain, doubled = nn.Linear(8, 3, bias=False), Doubled(8, 3, bias=False)
    doubled.weight.data.copy_(plain.weight.data)
    for grad in (True, False):  # training used to take the kernel for any nn.Linear subclass
        with torch.set_grad_enabled(grad):
            assert torch.allclose(linear(x, doubled), 2 * linear(x, plain), atol=1e-6)
            a, b = fused_linear(x, plain, doubled)
            assert torch.allclose(b, 2 * a, atol=1e-6)
    biased = nn.Linear(8, 3)
    assert torch.allclose(linear(x, biased), biased(x), atol=1e-6)
    # and the chunked head loss: a head of another class is asked for its logits
    model = DeepSeekV3(ModelConfig(vocab_size=50))
    torch.nn.init.normal_(model.lm_head.weight)
    model.lm_head.__class__ = Doubled
    h, targets = torch.randn(2, 3, model.config.hidden_size), torch.randint(0, 50, (2, 3))
    want = F.cross_entropy(2 * (h @ model.lm_head.weight.T).flatten(0, 1), targets.flatten())
    assert model.head_loss(h, targets).item() == pytest.approx(want.item(), rel=1e-5)
