"""Training the dense families: `pretrain` with model.family chosen in the recipe, `sft --init` on a
checkpoint written by transformers, and 2-process DDP / FSDP2 matching one process; every result
reloads in transformers with the same logits."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from helpers import tiny_pretrain, tokenizer_on

from nanoseek.model import DenseTransformer, from_pretrained
from nanoseek.train import load_config, train
from nanoseek.train.config import ConfigError
from nanoseek.train.report import read_metrics
from nanoseek.train.toy_data import write_task_chat

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")


def train_losses(out):
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["type"] == "train"]


def same_logits_in_transformers(model_dir, vocab_size):
    ours = from_pretrained(model_dir).eval()
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    x = torch.randint(0, vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (hf(x).logits - ours(x)).abs().max().item() < 1e-4


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_pretrain_a_dense_family_from_the_recipe(toy_shards, tmp_path, family):
    overrides = tiny_pretrain(toy_shards, "train.max_steps=12", "train.warmup_steps=2", "eval.every=0")
    cfg = load_config(None, [*overrides, f"model.family={family}", "model.kv_heads=1", f"run.out={tmp_path}"])
    s = train(cfg)
    losses = train_losses(tmp_path)
    assert len(losses) == 12 and losses[-1] < losses[0] - 0.5, losses
    model = from_pretrained(s["model_dir"])
    assert type(model) is DenseTransformer and model.config.model_type == family
    assert model.config.num_key_value_heads == 1 and model.config.tie_word_embeddings == (family == "qwen2")
    assert f"| model | {family}: 2 layers" in (tmp_path / "report.md").read_text()
    assert same_logits_in_transformers(s["model_dir"], model.config.vocab_size)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            ["model.family=llama", "model.mtp=1"],
            "model.mtp: only for deepseek_v3, but model.family is 'llama'",
        ),
        (["model.kv_heads=2"], "model.kv_heads: only for a dense family (llama, qwen2, qwen3)"),
        (["model.family=mistral"], "model.family: expected one of 'deepseek_v3', 'llama', 'qwen2', 'qwen3'"),
    ],
)
def test_family_keys_are_checked(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, override)


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_sft_from_a_transformers_checkpoint(hf_dense_builder, tmp_path, family):
    base = tmp_path / "base"
    base.mkdir()
    corpus = "What is 12 + 34? Let me add: 12 + 34 = 46. The answer is 46.\n" * 40
    tok = tokenizer_on(corpus, tmp_path, 300, out_dir=base)  # the checkpoint's tokenizer
    hf_dense_builder(
        base, family, vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id
    )
    tied = json.loads((base / "config.json").read_text()).get("tie_word_embeddings", False)
    data = write_task_chat(tmp_path / "chat.jsonl", "arithmetic", 200, seed=1)
    out = tmp_path / "sft"
    overrides = ["run.kind=sft", "run.device=cpu", "run.progress=false", "cost.peak_flops=1e10"]
    overrides += [f"run.out={out}", f"model.init={base}", f'data.train=["{data}"]', "train.seq_len=224"]
    overrides += ["train.device_batch_size=4", "train.max_steps=15", "train.warmup_steps=2", "eval.every=0"]
    overrides += ["eval.num_samples=1", "eval.sample_tokens=8"]
    s = train(load_config(None, overrides))
    losses = train_losses(out)
    assert losses[-1] < losses[0] - 0.5, losses
    model = from_pretrained(s["model_dir"])
    assert model.config.model_type == family and model.config.tie_word_embeddings == tied
    assert same_logits_in_transformers(s["model_dir"], tok.vocab_size)


def test_sft_refuses_deepseek_loss_knobs_for_a_dense_checkpoint(tiny_qwen2_dir, tmp_path):
    from nanoseek.train.inputs import build_model

    cfg = load_config(None, [f"model.init={tiny_qwen2_dir}", "model.aux_loss_alpha=0.01"])
    with pytest.raises(
        ConfigError, match="model.aux_loss_alpha: only for DeepSeek-V3, but model.init is a qwen2"
    ):
        build_model(cfg, type("Tok", (), {"vocab_size": 96})())


# ----------------------------------------------------------------------------------- data parallelism


def pretrain(shards, out, *extra, nproc=1):
    """Five steps of 8 rows (as tests/test_train_ddp.py: each row starts one toy document, so a global
    batch is the same documents however the processes split it) of a depth-2 llama; its train losses."""
    args = tiny_pretrain(shards, "model.family=llama", "train.max_steps=5", "train.warmup_steps=2")
    args += ["train.batch_tokens=256", "eval.every=0", *extra]
    launcher = (
        ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    )
    command = [sys.executable, *launcher, "-m", "nanoseek.train.cli", "pretrain", *args, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return train_losses(out)


@pytest.fixture(scope="module")
def one_process(toy_shards, tmp_path_factory):
    return pretrain(toy_shards, tmp_path_factory.mktemp("single"), "train.device_batch_size=4")


@pytest.mark.parametrize(
    "extra, parallelism",
    [(["train.device_batch_size=4"], "DDP"), (["train.device_batch_size=2", "train.fsdp=true"], "FSDP2")],
)
def test_two_processes_match_one(toy_shards, one_process, tmp_path, extra, parallelism):
    two = pretrain(toy_shards, tmp_path, *extra, nproc=2)
    assert len(two) == len(one_process) == 5
    assert max(abs(a - b) for a, b in zip(two, one_process)) < 1e-4, (two, one_process)
    assert one_process[-1] < one_process[0]
    assert f"| parallelism | {parallelism} |" in (tmp_path / "report.md").read_text()
