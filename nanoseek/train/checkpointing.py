"""Checkpoints of a training run: the exported model plus everything needed to resume exactly.

    path = resumable(run_dir, resume)           # newest COMPLETE checkpoint, None for a fresh run
    ckpt = load_checkpoint(path, env)           # .model_state(model), .trainer, .rank, .restore(...)
    save_checkpoint(run_dir, step, model, optimizer, tokenizer, trainer_state, rank_state, env)

Layout (the model directory is a plain Hugging Face checkpoint; training state lives beside it):

    run_dir/checkpoints/step_000200/
        model/                 config.json, model.safetensors, generation_config.json,
                               tokenizer.json, tokenizer_config.json (with the chat template)
        optimizer.pt           AdamW state (gathered in full under FSDP)
        adapters.safetensors   LoRA runs only: the adapters (model/ holds the merged weights)
        trainer.json           step, cost so far, ... (the loop's own counters)
        rank_00000.pt          per process: RNG states (python, numpy, torch, cuda) and data position
        COMPLETE               the completion marker, written last

Atomicity: every process writes into `checkpoints/.tmp-step_000200/`; then the main process fsyncs
every file and directory, renames the temp directory to `step_000200`, and only then writes
`COMPLETE` (itself via a temp file, fsync and rename). A checkpoint without `COMPLETE` (a crash
mid-write) is never resumed from and is cleared away by the next save. The last `keep` complete
checkpoints are kept. `run_dir/model` is a symlink to the newest checkpoint's model directory.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nanoseek.model.checkpoint import checked_state, read_weights, weight_files
from nanoseek.model.registry import family_of
from nanoseek.model.run_dirs import (
    MARKER,
    STEP_DIR,
    checkpoint_dir,
    checkpoint_step,
    complete_checkpoints,
    latest_checkpoint,
)
from nanoseek.train import lora
from nanoseek.train.config import ConfigError
from nanoseek.train.distributed import DistEnv, barrier

# ------------------------------------------------------------------------------------- RNG state


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------- state gathering


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer, env: DistEnv) -> tuple[dict, dict]:
    """(model state dict, optimizer state dict), complete and on the CPU on the main process (a
    collective under FSDP: every rank must call it; the others get empty dicts)."""
    if env.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(model, optimizer, options=options)
    return model.state_dict(), optimizer.state_dict()


def exportable(model: nn.Module, state: dict) -> nn.Module:
    """A plain model of `model`'s family holding `state` (the FSDP-sharded model itself cannot be
    saved directly)."""
    with torch.device("meta"):
        plain = family_of(model).model_cls(model.config)
    plain.load_state_dict(state, assign=True)
    return plain


# ------------------------------------------------------------------------------------- saving


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_marker(final: Path, step: int) -> None:
    tmp = final / (MARKER + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps({"step": step}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final / MARKER)
    _fsync_dir(final)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tokenizer,
    trainer_state: dict,
    rank_state: dict,
    env: DistEnv,
    keep: int = 3,
) -> Path:
    """Write checkpoint `step` atomically (a collective: every rank calls it). `model` is the unwrapped
    model (sharded in place under FSDP); `rank_state` is this process's own (data position ...);
    RNG states are added here. Returns the final directory."""
    root = Path(run_dir) / "checkpoints"
    final = checkpoint_dir(run_dir, step)
    tmp = root / f".tmp-{final.name}"
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    model_state, optim_state = full_state(model, optimizer, env)
    if env.is_main:
        plain = exportable(model, model_state) if env.fsdp else model
        if lora.lora_layers(plain):  # the adapters for --resume; model/ gets W + (alpha/r) B A
            lora.save_adapters(plain, tmp)
            plain = lora.merged_model(plain)
        plain.save_pretrained(tmp / "model")
        tokenizer.save(tmp / "model")
        torch.save(optim_state, tmp / "optimizer.pt")
        (tmp / "trainer.json").write_text(json.dumps({**trainer_state, "step": step}, indent=2) + "\n")
    torch.save(
        {**rank_state, "rng": rng_state(), "world_size": env.world_size}, tmp / f"rank_{env.rank:05d}.pt"
    )
    barrier()
    if env.is_main:
        _fsync_tree(tmp)
        if final.exists():  # a half-written one from a crashed run (no marker): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        _write_marker(final, step)
        _point_latest(Path(run_dir), final)
        prune(run_dir, keep)
    barrier()
    return final


def _point_latest(run_dir: Path, final: Path) -> None:
    """run_dir/model -> checkpoints/step_N/model (a relative symlink, swapped atomically)."""
    link = run_dir / "model"
    if link.exists() and not link.is_symlink():
        return  # never replace a real directory someone put there
    tmp = run_dir / ".model.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(final.relative_to(run_dir) / "model")
    os.replace(tmp, link)


def prune(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints, and leftovers of interrupted saves."""
    done = complete_checkpoints(run_dir)
    for old in done[: max(len(done) - keep, 0)]:
        shutil.rmtree(old, ignore_errors=True)
    root = Path(run_dir) / "checkpoints"
    newest = checkpoint_step(done[-1]) if done else -1
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if p.name.startswith(".tmp-") or (m and not (p / MARKER).exists() and int(m.group(1)) < newest):
            shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------------------------- loading


def resumable(run_dir: Path, resume: bool) -> Path | None:
    """The newest complete checkpoint of run_dir to resume from (None: start afresh); ConfigError if
    there is one and `resume` is off."""
    found = latest_checkpoint(run_dir)
    if found is not None and not resume:
        raise ConfigError(
            f"run.out: {run_dir} already has checkpoints; pass --resume or choose another --out"
        )
    return found


@dataclass
class Checkpoint:
    path: Path
    model_dir: Path
    trainer: dict  # trainer.json
    rank: dict  # this process's rank_*.pt (rng, data position, ...)

    @property
    def step(self) -> int:
        return int(self.trainer["step"])

    def model_state(self, model: nn.Module) -> dict:
        """The checkpoint's weights under our parameter names, for `model.load_state_dict`, checked
        as strictly as a model directory is loaded (CheckpointError names the file and the field)."""
        if lora.lora_layers(model):  # model/ is merged: the base is model.init's, the adapters are beside
            return lora.resume_state(model, self.path)
        files = weight_files(self.model_dir)
        return checked_state(model, read_weights(files), files[0] if len(files) == 1 else self.model_dir)

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, meter, env: DistEnv) -> None:
        """The optimizer, this process's RNG and the cost meter as they were saved (the weights are
        `model_state`'s)."""
        state = torch.load(self.path / "optimizer.pt", map_location="cpu", weights_only=False)
        if env.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(state)
        set_rng_state(self.rank["rng"])
        meter.load_state_dict(self.trainer["cost"])


def load_checkpoint(path: str | Path, env: DistEnv) -> Checkpoint:
    path = Path(path)
    if not (path / MARKER).is_file():
        raise FileNotFoundError(f"{path}: incomplete checkpoint (no {MARKER} marker); it cannot be resumed")
    rank_file = path / f"rank_{env.rank:05d}.pt"
    if not rank_file.is_file():
        raise RuntimeError(
            f"{path}: has no state for rank {env.rank}; resume with the same number of processes"
        )
    rank = torch.load(rank_file, map_location="cpu", weights_only=False)
    if rank.get("world_size") != env.world_size:
        raise RuntimeError(
            f"{path} was written by {rank.get('world_size')} process(es); resume it with the same number "
            f"(this run has {env.world_size})"
        )
    trainer = json.loads((path / "trainer.json").read_text())
    return Checkpoint(path, path / "model", trainer, rank)
