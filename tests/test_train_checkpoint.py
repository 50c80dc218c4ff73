"""Checkpoints: HF export + training state beside it, atomic completion marker, resume, keep-last-K."""

import json
import random
import shutil

import numpy as np
import pytest
import torch
from helpers import tiny_pretrain

from nanoseek.model import DeepSeekV3
from nanoseek.model.run_dirs import resolve_model_dir
from nanoseek.tokenizer import Tokenizer
from nanoseek.train import checkpointing as ck
from nanoseek.train.config import ConfigError, load_config
from nanoseek.train.distributed import setup
from nanoseek.train.loop import Trainer, train
from nanoseek.train.report import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(out, shards, *overrides):
    return load_config(
        None,
        tiny_pretrain(
            shards,
            f"run.out={out}",
            "train.device_batch_size=4",
            "train.max_steps=10",
            "train.warmup_steps=2",
            "eval.every=5",
            "checkpoint.every=5",
            *overrides,
        ),
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory, toy_shards):
    out = tmp_path_factory.mktemp("run")
    summary = train(tiny(out, toy_shards))
    return out, summary


def test_checkpoint_is_an_hf_model_dir_with_state_beside_it(run):
    out, summary = run
    assert [p.name for p in ck.complete_checkpoints(out)] == ["step_000005", "step_000010"]
    last = out / "checkpoints" / "step_000010"
    assert sorted(p.name for p in last.iterdir()) == [
        "COMPLETE",
        "model",
        "optimizer.pt",
        "rank_00000.pt",
        "trainer.json",
    ]
    model_files = {p.name for p in (last / "model").iterdir()}
    assert model_files == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert "chat_template" in json.loads((last / "model" / "tokenizer_config.json").read_text())
    assert (out / "model").resolve() == (last / "model").resolve()  # run_dir/model -> newest
    model = DeepSeekV3.from_pretrained(out / "model")
    Tokenizer.from_dir(out / "model")
    assert model.config.num_nextn_predict_layers == 1
    biases = [m.gate.e_score_correction_bias for m in model.moe_layers()]
    assert biases and all(b.abs().sum() > 0 for b in biases)  # balancing moved the router biases
    assert json.loads((last / "trainer.json").read_text())["step"] == 10
    assert summary["model_dir"] == str(last / "model")
    for name in ("config.toml", "metrics.jsonl", "report.md", "loss.png", "lr.png"):
        assert (out / name).is_file(), name


def test_half_written_checkpoint_is_never_resumed(run, toy_shards, tmp_path):
    src, _ = run
    out = tmp_path / "run"
    shutil.copytree(src, out, symlinks=True)
    (out / "checkpoints" / "step_000010" / "COMPLETE").unlink()  # crashed between rename and marker
    (out / "checkpoints" / ".tmp-step_000015" / "model").mkdir(parents=True)  # crashed mid-write
    assert ck.latest_checkpoint(out).name == "step_000005"
    cfg = tiny(out, toy_shards)
    trainer = Trainer(cfg, setup("cpu"), resume=True)
    assert trainer.step == 5
    assert max(r["step"] for r in read_metrics(out / "metrics.jsonl")) == 5  # the redone part is dropped
    trainer.run()
    assert [p.name for p in ck.complete_checkpoints(out)] == ["step_000005", "step_000010"]
    assert not (out / "checkpoints" / ".tmp-step_000015").exists()
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["type"] == "train"]
    assert steps == list(range(1, 11))
    with pytest.raises(FileNotFoundError, match="incomplete checkpoint"):
        (out / "checkpoints" / "step_000010" / "COMPLETE").unlink()
        ck.load_checkpoint(out / "checkpoints" / "step_000010", setup("cpu"))


def test_resume_without_complete_checkpoint_starts_over(run, toy_shards, tmp_path):
    src, _ = run
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(src / "checkpoints" / "step_000005", out / "checkpoints" / "step_000005")
    (out / "checkpoints" / "step_000005" / "COMPLETE").unlink()
    assert Trainer(tiny(out, toy_shards), setup("cpu"), resume=True).step == 0


def test_fresh_run_refuses_a_dir_with_checkpoints(run, toy_shards):
    out, _ = run
    with pytest.raises(ConfigError, match="pass --resume"):
        Trainer(tiny(out, toy_shards), setup("cpu"))


def test_keeps_the_last_k(toy_shards, tmp_path):
    train(
        tiny(
            tmp_path,
            toy_shards,
            "checkpoint.every=2",
            "checkpoint.keep=2",
            "eval.every=0",
            "train.max_steps=7",
        )
    )
    assert [p.name for p in ck.complete_checkpoints(tmp_path)] == ["step_000006", "step_000007"]
    newest = tmp_path / "checkpoints" / "step_000007" / "model"
    assert resolve_model_dir(tmp_path).resolve() == newest.resolve()  # via the run_dir/model link


def test_rng_state_round_trips():
    state = ck.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    ck.set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[:2] == b[:2] and torch.equal(a[2], b[2])
