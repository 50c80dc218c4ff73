"""The MTP module through training: DeepSeek-V3's lambda schedule and the speedrun's use of it.

OMP_NUM_THREADS=1 python -m pytest -q tests/test_mtp.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import build_checkpoint, random_model, tiny_config, tiny_pretrain
from safetensors.torch import load_file

from nanoseek.speedrun.config import load_speedrun_config
from nanoseek.speedrun.stages import Context, pretrain_overrides
from nanoseek.tokenizer import Tokenizer
from nanoseek.train import load_config, train
from nanoseek.train.config import ConfigError
from nanoseek.train.mtp_align import align_mtp
from nanoseek.train.optim import mtp_weight

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mtp_weight_switches_at_the_fraction_of_steps():
    assert [mtp_weight(s, 0.3, 0.1, 0.7, 10) for s in range(10)] == [0.3] * 7 + [0.1] * 3
    assert [mtp_weight(s, 0.3, None, 0.7, 10) for s in range(10)] == [0.3] * 10  # no late value: no switch
    assert mtp_weight(0, 0.3, 0.1, 0.0, 10) == 0.1  # switch at 0: late from the start


def test_mtp_switch_out_of_range_is_a_clear_error():
    with pytest.raises(ConfigError, match="model.mtp_switch"):
        load_config(None, ["model.mtp_switch=1.5"])


def test_pretraining_follows_the_lambda_schedule(toy_shards, tmp_path):
    """Four steps with lambda 0.3 for the first half, then 0.1: the metrics log the lambda each step
    trained with, and the MTP loss is really computed (a model with one MTP depth)."""
    overrides = tiny_pretrain(
        toy_shards,
        f"run.out={tmp_path}",
        "model.mtp=1",
        "model.mtp_loss_weight=0.3",
        "model.mtp_loss_weight_late=0.1",
        "model.mtp_switch=0.5",
        "train.max_steps=4",
        "train.device_batch_size=2",
        "train.warmup_steps=1",
        "eval.every=0",
    )
    train(load_config(None, overrides))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["type"] == "train"]
    assert [r["mtp_lambda"] for r in steps] == [0.3, 0.3, 0.1, 0.1]
    assert all(r["mtp_loss"] > 0 for r in steps)


def test_speedrun_pretrains_with_one_mtp_depth_and_the_v3_schedule():
    cfg = load_speedrun_config()
    assert cfg.model.mtp == 1
    overrides = pretrain_overrides(Context(cfg, Path("/tmp/unused")), Path("/tmp/init"))
    train_cfg = load_config(None, overrides)
    m = train_cfg.model
    assert (m.mtp_loss_weight, m.mtp_loss_weight_late, m.mtp_switch) == (0.3, 0.1, 0.7)


def test_mtp_rows_limits_the_mtp_loss_to_the_first_rows():
    model = random_model(tiny_config(), seed=2)
    x = torch.randint(2, 300, (4, 12), generator=torch.Generator().manual_seed(0))
    y = torch.roll(x, -1, 1)
    full, part = model(x, targets=y), model(x, targets=y, mtp_rows=2)
    assert torch.allclose(part.lm, full.lm)
    assert torch.allclose(part.mtp, model(x[:2], targets=y[:2]).mtp, atol=1e-5)
    assert not torch.allclose(part.mtp, full.mtp)


def test_align_mtp_trains_only_the_draft_head(tmp_path):
    """The GRPO stage's last step: the MTP module learns the model's own greedy answers; every other
    weight is the same afterwards, and the figures say what changed."""
    path = build_checkpoint(tmp_path / "m", seed=0)
    tok = Tokenizer.from_dir(path)
    ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id}
    random_model(tiny_config(vocab_size=tok.vocab_size, max_position_embeddings=128, **ids)).save_pretrained(
        path
    )
    before = load_file(path / "model.safetensors")
    prompts = [f"What is {i} + {i + 1}?" for i in range(16)]
    stats = align_mtp(path, prompts, steps=4, batch_size=4, max_new_tokens=16, concurrency=8)
    after = load_file(path / "model.safetensors")
    assert stats["answers"] == 14 and stats["held_back"] == 2 and stats["steps"] == 4
    assert 0 <= stats["acceptance_before"] <= 1 and 0 <= stats["acceptance_after"] <= 1
    assert stats["saved"] == (stats["acceptance_after"] >= stats["acceptance_before"])
    mtp_keys = {k for k in before if k.startswith(f"model.layers.{tiny_config().num_hidden_layers}.")}
    assert mtp_keys and all(torch.equal(before[k], after[k]) for k in before if k not in mtp_keys)
    if stats["saved"]:
        assert any(not torch.equal(before[k], after[k]) for k in mtp_keys)
