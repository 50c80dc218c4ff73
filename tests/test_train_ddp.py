"""Data parallelism: torchrun with 2 CPU processes (gloo) gives one process's per-step losses."""

import os
import subprocess
import sys

import pytest
from helpers import tiny_pretrain

from nanoseek.train.report import read_metrics


def pretrain_args(shards, out, *extra):
    # Every toy document is longer than a row (33 tokens), so each row is the start of one document
    # and a global batch holds the same documents whether one process or two draw them.
    return [
        "-m",
        "nanoseek.train.cli",
        "pretrain",
        *tiny_pretrain(
            shards,
            "train.max_steps=5",
            "train.warmup_steps=2",
            "train.batch_tokens=256",  # 8 rows per step
            "eval.every=0",
        ),
        "--out",
        str(out),
        *extra,
    ]


def run(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(out):
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["type"] == "train"]


def torchrun(nproc: int):
    return ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


@pytest.fixture(scope="module")
def single(toy_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    run(pretrain_args(toy_shards, out, "train.device_batch_size=4"))  # 2 micro-batches of 4 rows
    return losses(out)


def test_ddp_two_processes_match_one(toy_shards, single, tmp_path):
    run([*torchrun(2), *pretrain_args(toy_shards, tmp_path, "train.device_batch_size=4")])  # 2 ranks x 4 rows
    ddp = losses(tmp_path)
    assert len(ddp) == len(single) == 5
    assert max(abs(a - b) for a, b in zip(ddp, single)) < 1e-4, (ddp, single)
    assert single[-1] < single[0]
    assert (tmp_path / "checkpoints" / "step_000005" / "rank_00001.pt").is_file()


def test_fsdp2_two_processes_match_one(toy_shards, single, tmp_path):
    # 2 ranks x 2 micro-batches of 2 rows, parameters sharded with fully_shard
    run([*torchrun(2), *pretrain_args(toy_shards, tmp_path, "train.device_batch_size=2", "train.fsdp=true")])
    fsdp = losses(tmp_path)
    assert max(abs(a - b) for a, b in zip(fsdp, single)) < 1e-4, (fsdp, single)
    assert "FSDP2" in (tmp_path / "report.md").read_text()
