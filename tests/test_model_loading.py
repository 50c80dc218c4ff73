"""Loading a model directory is strict, and every way it can fail is one CheckpointError line naming the
file, the config field and what was expected (issue 15, items 11 and 12): a config.json that disagrees
with the weights, broken weights files, config fields of the wrong type or range, configs too large for
the machine. The happy path loads the same bits as before."""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from nanoseek.model import CheckpointError, DeepSeekV3, ModelConfig
from nanoseek.model import checkpoint as ckpt
from nanoseek.train.checkpointing import Checkpoint


def tiny(**overrides) -> ModelConfig:
    """2 layers (dense, then MoE with 8 experts), low-rank queries: every kind of tensor."""
    return ModelConfig(**{"vocab_size": 300, "q_lora_rank": 16, **overrides})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = DeepSeekV3(tiny())
    model.save_pretrained(d)
    return d, model


def variant(src, dst, **config_changes):
    """A copy of the model directory `src` with config.json fields changed."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, **config_changes}))
    return dst


def load_error(path) -> CheckpointError:
    with pytest.raises(CheckpointError) as caught:
        DeepSeekV3.from_pretrained(path)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 700, message  # one line, however many tensors
    return caught.value


def test_a_good_directory_loads_to_the_same_bits(saved, tmp_path):
    d, model = saved
    loaded = DeepSeekV3.from_pretrained(d)
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    mtp = DeepSeekV3(tiny(num_nextn_predict_layers=1))
    mtp.save_pretrained(tmp_path / "mtp")
    assert torch.equal(
        DeepSeekV3.from_pretrained(tmp_path / "mtp").mtp[0].eh_proj.weight, mtp.mtp[0].eh_proj.weight
    )


@pytest.mark.parametrize(
    "changes, field, pattern",
    [
        # the case: 173,696 of 282,208 parameters loaded and the rest silently ignored
        (
            {"num_hidden_layers": 1},
            "num_hidden_layers",
            r"num_hidden_layers: config.json says 1, but the weights hold 2 layers \(model.layers.0..1\): "
            r"unexpected model\.layers\.1\.\S+, .* and \d+ more$",
        ),
        ({"num_hidden_layers": 3}, "num_hidden_layers", r"no tensors for model\.layers\.2$"),
        ({"num_attention_heads": 8}, "num_attention_heads", r"has shape \(\d+, \d+\) in the weights; config"),
        (
            {"kv_lora_rank": 40},
            "kv_lora_rank",
            r"kv_a_layernorm\.weight has shape \(32,\) .* implies \(40,\)",
        ),
        (
            {"q_lora_rank": 24},
            "q_lora_rank",
            r"q_a_layernorm\.weight has shape \(16,\) .*dim 0 is q_lora_rank",
        ),
        ({"q_lora_rank": None}, "q_lora_rank", r"missing model\.layers\.0\.self_attn\.q_proj.*unexpected"),
        (
            {"n_routed_experts": 4},
            "n_routed_experts",
            r"experts\.\*\.down_proj\.weight has shape \(8, 64, 32\)",
        ),
        ({"first_k_dense_replace": 0}, "n_routed_experts / first_k_dense_replace", r"missing .*experts"),
        ({"n_routed_experts": 0}, "n_routed_experts / first_k_dense_replace", r"unexpected .*experts"),
        ({"n_shared_experts": 2}, "n_shared_experts / moe_intermediate_size", r"shared_experts"),
        ({"moe_intermediate_size": 8}, "moe_intermediate_size", r"dim 2 is moe_intermediate_size"),
        ({"vocab_size": 301}, "vocab_size", r"embed_tokens\.weight has shape \(300, 64\)"),
        ({"hidden_size": 48}, "hidden_size", r"has shape"),
    ],
)
def test_a_config_that_disagrees_with_the_weights_names_the_field(saved, tmp_path, changes, field, pattern):
    d, _ = saved
    error = load_error(variant(d, tmp_path / "m", **changes))
    assert error.field == field
    assert error.path == str(tmp_path / "m" / "model.safetensors")
    assert re.search(pattern, str(error)), str(error)


def test_every_tensor_in_the_files_is_used(saved, tmp_path):
    d, _ = saved
    # MTP weights the config does not ask for used to be dropped silently
    DeepSeekV3(tiny(num_nextn_predict_layers=1)).save_pretrained(tmp_path / "mtp")
    config = json.loads((tmp_path / "mtp" / "config.json").read_text())
    (tmp_path / "mtp" / "config.json").write_text(json.dumps({**config, "num_nextn_predict_layers": 0}))
    error = load_error(tmp_path / "mtp")
    assert error.field == "num_nextn_predict_layers" and "1 MTP layer(s) (model.layers.2)" in str(error)
    # a stray tensor
    shutil.copytree(d, tmp_path / "extra")
    weights = load_file(tmp_path / "extra" / "model.safetensors")
    weights["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    save_file(weights, tmp_path / "extra" / "model.safetensors")
    assert "unexpected model.layers.0.self_attn.rotary_emb.inv_freq" in str(load_error(tmp_path / "extra"))
    # a missing expert
    del weights["model.layers.0.self_attn.rotary_emb.inv_freq"]
    for p in ("gate", "up", "down"):
        del weights[f"model.layers.1.mlp.experts.3.{p}_proj.weight"]
    save_file(weights, tmp_path / "extra" / "model.safetensors")
    assert "experts.3.down_proj.weight: missing" in str(load_error(tmp_path / "extra"))


@pytest.mark.parametrize("damage", ["empty", "truncated", "header only", "garbage"])
def test_a_broken_weights_file_is_named(saved, tmp_path, damage):
    d, _ = saved
    shutil.copytree(d, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    data = weights.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    broken = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "header only": data[: header + 10],
        "garbage": bytes(range(256)) * 20,
    }[damage]
    weights.write_bytes(broken)
    error = load_error(tmp_path / "m")
    assert error.path == str(weights) and "not a readable safetensors file" in str(error)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"hidden_size": "big"}, "hidden_size: expected a positive integer, got 'big' (a string)"),
        ({"hidden_size": 1e9}, "hidden_size: expected a positive integer, got 1000000000.0 (a number)"),
        ({"hidden_size": True}, "hidden_size: expected a positive integer, got True (a boolean)"),
        ({"num_hidden_layers": -1}, "num_hidden_layers: expected a positive integer, got -1"),
        ({"num_hidden_layers": 0}, "num_hidden_layers: expected a positive integer, got 0"),
        ({"n_routed_experts": -8}, "n_routed_experts: expected an integer >= 0, got -8"),
        ({"rms_norm_eps": 0}, "rms_norm_eps: expected a positive number, got 0"),
        ({"rope_theta": "1e4"}, "rope_theta: expected a positive number, got '1e4' (a string)"),
        ({"tie_word_embeddings": "no"}, "tie_word_embeddings: expected true or false, got 'no' (a string)"),
        ({"qk_rope_head_dim": 7}, "qk_rope_head_dim: expected an even number"),
        ({"rope_scaling": "yarn"}, "rope_scaling: expected an object (or null), got 'yarn' (a string)"),
        ({"rope_scaling": {"type": "yarn", "factor": 4}}, "rope_scaling.original_max_position_embeddings"),
        ({"n_group": 3}, "n_group: 3 groups do not divide n_routed_experts=8"),
        ({"eos_token_id": []}, "eos_token_id: expected an integer or a non-empty list"),
    ],
)
def test_config_fields_are_checked_by_type_and_range(saved, tmp_path, changes, message):
    d, _ = saved
    error = load_error(variant(d, tmp_path / "m", **changes))
    assert str(error).startswith(f"{tmp_path / 'm' / 'config.json'}: {message}"), str(error)
    assert error.field == message.split(":")[0]


def test_a_config_that_is_not_a_json_object_is_named(saved, tmp_path):
    d, _ = saved
    shutil.copytree(d, tmp_path / "m")
    config = tmp_path / "m" / "config.json"
    config.write_text('{"hidden_size": 64,')
    assert str(load_error(tmp_path / "m")).startswith(f"{config}: not JSON (")
    config.write_text("[1, 2]")
    assert "expected a JSON object of config fields, got [1, 2] (a list)" in str(load_error(tmp_path / "m"))
    config.write_bytes(b"\xff\xfe{")
    assert "not UTF-8 text" in str(load_error(tmp_path / "m"))


def test_missing_pieces_are_named(saved, tmp_path):
    d, _ = saved
    assert str(load_error(tmp_path / "nowhere")) == f"{tmp_path / 'nowhere'}: no such model directory"
    (tmp_path / "empty").mkdir()
    assert "no config.json" in str(load_error(tmp_path / "empty"))
    shutil.copy(d / "config.json", tmp_path / "empty" / "config.json")
    assert "no *.safetensors weights" in str(load_error(tmp_path / "empty"))


def test_a_config_too_large_for_the_machine_is_refused_before_allocating(saved, tmp_path, monkeypatch):
    d, _ = saved
    # 1e9 hidden: ~9 TiB in float32 -- more than any test machine has; allocating would raise RuntimeError
    error = load_error(variant(d, tmp_path / "huge", hidden_size=10**9))
    assert error.field == "hidden_size" and re.search(r"needs [\d,.]+ TiB .* but this \w+'s", str(error))
    error = load_error(variant(d, tmp_path / "deep", num_hidden_layers=10**15))  # counted in closed form
    assert error.field == "num_hidden_layers"
    # the bound is what the model takes: refused when the memory reported is one byte short of it
    need = ckpt.build_bytes(tiny())
    monkeypatch.setattr(ckpt, "memory_size", lambda device=None: (need - 1, "this machine's RAM"))
    assert "needs" in str(load_error(d))
    monkeypatch.setattr(ckpt, "memory_size", lambda device=None: (need, "this machine's RAM"))
    DeepSeekV3.from_pretrained(d)


def test_on_cuda_the_bound_is_the_gpus_memory(monkeypatch):
    # no GPU needed: the device's size is what torch.cuda reports for it
    gpu = type("Props", (), {"total_memory": 2**30})
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: gpu)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ckpt.memory_size("cuda") == (2**30, "GPU 0") and ckpt.memory_size("cuda:1") == (2**30, "GPU 1")
    ckpt.check_memory(tiny(), "m/config.json", "cuda")
    with pytest.raises(CheckpointError, match=r"needs 1\.\d GiB .* but GPU 0 is 1\.0 GiB; vocab_size"):
        ckpt.check_memory(tiny(vocab_size=2_500_000), "m/config.json", "cuda")


def test_the_memory_estimate_is_the_models_size():
    for cfg in (tiny(), tiny(num_nextn_predict_layers=2, n_routed_experts=0), tiny(tie_word_embeddings=True)):
        model = DeepSeekV3(cfg)
        actual = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        assert 0.98 * actual <= ckpt.build_bytes(cfg) <= actual  # a few small buffers aside
    size = ckpt.memory_size("cpu")
    assert size is None or size[0] > 2**28  # RAM, or the container's limit


def test_a_resumed_checkpoint_is_checked_like_a_model_directory(saved, tmp_path):
    d, model = saved
    shutil.copytree(d, tmp_path / "model")
    checkpoint = Checkpoint(tmp_path, tmp_path / "model", {}, {})
    state = checkpoint.model_state(model)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    (tmp_path / "model" / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        checkpoint.model_state(model)


def test_the_exception_is_a_value_error_with_its_parts():
    error = CheckpointError(
        "m/config.json", "hidden_size: expected a positive integer, got -1", "hidden_size"
    )
    assert isinstance(error, ValueError)
    assert (error.path, error.field) == ("m/config.json", "hidden_size")
    assert str(error) == "m/config.json: hidden_size: expected a positive integer, got -1"
    with pytest.raises(ValueError, match="^num_attention_heads: expected a positive integer, got 0$"):
        ModelConfig(num_attention_heads=0)
