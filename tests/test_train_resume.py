"""Exact resume: a run SIGKILLed after a checkpoint and resumed ends bit-identical to an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

from helpers import tiny_pretrain
from safetensors.torch import load_file

from nanoseek.train.checkpointing import latest_checkpoint
from nanoseek.train.report import read_metrics

MAX_STEPS = 24


def command(shards, *extra):
    return [
        sys.executable,
        "-m",
        "nanoseek.train.cli",
        "pretrain",
        *tiny_pretrain(
            shards,
            "train.device_batch_size=4",
            "train.batch_tokens=256",  # 2 micro-batches per step: accumulation is resumed mid-schedule too
            f"train.max_steps={MAX_STEPS}",
            "train.warmup_steps=3",
            "eval.every=8",
            "checkpoint.every=4",
            "checkpoint.keep=10",
        ),
        *extra,
    ]


def run(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, **kw)


def test_sigkill_then_resume_is_bit_identical(toy_shards, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = run(command(toy_shards, "--out", str(straight)))
    assert done.returncode == 0, done.stderr

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        command(toy_shards, "--out", str(killed)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    marker = killed / "checkpoints" / "step_000004" / "COMPLETE"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed mid-training"
    interrupted_at = latest_checkpoint(killed)
    assert interrupted_at is not None and interrupted_at.name != f"step_{MAX_STEPS:06d}"

    resumed = run(command(toy_shards, "--out", str(killed), "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {interrupted_at}" in resumed.stderr

    a = load_file(str(latest_checkpoint(straight) / "model" / "model.safetensors"))
    b = load_file(str(latest_checkpoint(killed) / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    different = [
        k for k in a if not (a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].equal(b[k]))
    ]
    assert not different, f"weights differ after resume: {different[:5]}"

    def losses(path):
        return [(r["step"], r["loss"]) for r in read_metrics(path / "metrics.jsonl") if r["type"] == "train"]

    assert losses(straight) == losses(killed)  # metrics.jsonl reads as one run, and the same one
