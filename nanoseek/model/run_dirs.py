"""Where a model lives on disk: a model directory, a checkpoint directory or a run directory.

    model_dir = resolve_model_dir("runs/sft")    # runs/sft/checkpoints/step_000200/model
    path = latest_checkpoint("runs/sft")         # runs/sft/checkpoints/step_000200, or None

A run directory (what `nanoseek pretrain / sft / grpo` write) holds `checkpoints/step_NNNNNN/`, each
with a Hugging Face `model/` directory beside the training state and a `COMPLETE` marker written
last; a checkpoint without the marker (a crash mid-write) does not count. Writing checkpoints is
`nanoseek.train.checkpointing`; reading where a model is lives here, below every stage that loads one.
"""

from __future__ import annotations

import re
from pathlib import Path

MARKER = "COMPLETE"
STEP_DIR = re.compile(r"step_(\d+)$")


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}"


def checkpoint_step(path: str | Path) -> int:
    """The step of a checkpoint directory `step_NNNNNN`."""
    return int(STEP_DIR.match(Path(path).name).group(1))


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / MARKER).is_file()]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def resolve_model_dir(path: str | Path) -> Path:
    """A model directory from a model dir, a checkpoint dir or a run dir (its newest checkpoint); a GGUF
    file (or a directory holding one GGUF and no config.json) is returned as the file itself, which
    `from_pretrained` and `nanoseek.engine.model_tokenizer` read like a directory."""
    from nanoseek.model.formats.gguf import find_gguf

    path = Path(path)
    if (path / "config.json").is_file():
        return path
    if (path / "model" / "config.json").is_file():
        return path / "model"
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest / "model"
    gguf = find_gguf(path)
    if gguf is not None and gguf.is_file():
        return gguf
    raise FileNotFoundError(
        f"{path}: not a model directory, checkpoint, run directory with a checkpoint or GGUF file"
    )
