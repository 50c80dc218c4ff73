"""Synthetic reasoning corpora for the CPU toy, from `nanoseek.tasks`' generated problems and traces.

    write_task_corpus("runs/x/corpus/arithmetic.jsonl", "arithmetic", n_docs=20000)      # pretraining
    write_task_chat("runs/x/corpus/arithmetic_chat.jsonl", "arithmetic", n=4000)        # SFT
    shard_dir, tok_dir = build_toy_shards("runs/toy")                                    # tests, benches

Tasks are the synthetic ones of `nanoseek.tasks` ("arithmetic", "countdown", "linear", "sort"); a
comma-separated list mixes them ("arithmetic,linear"). Only their train split is used, so the test
split stays unseen for evaluation. Each problem becomes its question and its `solution_trace`, whose
last line is the answer line `The answer is \\boxed{...}.`:

- a pretraining document (`{"text": ...}` per line) is one problem (or `problems` of them, separated
  by blank lines): the question, a newline and the trace;
- a chat record is one problem as a conversation: the question as the user turn, the trace's
  reasoning lines as the assistant's `reasoning_content` and its answer line as `content`.
Recipes use them with `data.synthetic = "arithmetic"`.
"""

from __future__ import annotations

import json
from pathlib import Path

from nanoseek.tasks import TASKS, Problem, SyntheticTask, get_task

SYNTHETIC_TASKS = tuple(name for name, cls in TASKS.items() if issubclass(cls, SyntheticTask))


def task_problems(spec: str, n: int, seed: int = 0) -> list[tuple[SyntheticTask, Problem]]:
    """n train-split problems of the tasks named in `spec` (comma-separated), interleaved."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in names if s not in SYNTHETIC_TASKS]
    if not names or unknown:
        raise ValueError(
            f"unknown synthetic task(s) {unknown or spec!r}; choose from {', '.join(SYNTHETIC_TASKS)}"
        )
    per_task = [
        (t, t.problems("train", n=-(-n // len(names)))) for t in (get_task(s, seed=seed) for s in names)
    ]
    mixed = [
        (task, problems[i])
        for i in range(max(len(p) for _, p in per_task))
        for task, problems in per_task
        if i < len(problems)
    ]
    return mixed[:n]


def write_task_corpus(path: str | Path, spec: str, n_docs: int, seed: int = 0, problems: int = 1) -> Path:
    """A JSONL pretraining corpus of n_docs documents of `problems` worked problems each (packing
    puts several documents in a row, so one problem per document wastes nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    items = task_problems(spec, n_docs * problems, seed)
    with open(path, "w") as f:
        for i in range(0, len(items), problems):
            text = "\n\n".join(task.document(p) for task, p in items[i : i + problems])
            f.write(json.dumps({"text": text}) + "\n")
    return path


def write_task_chat(path: str | Path, spec: str, n: int, seed: int = 0) -> Path:
    """A chat JSONL of n single-turn conversations with reasoning_content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for task, p in task_problems(spec, n, seed):
            f.write(json.dumps(task.chat_record(p)) + "\n")
    return path


def build_toy_shards(
    out_dir: str | Path,
    n_docs: int = 600,
    vocab_size: int = 384,
    spec: str = "arithmetic",
    seed: int = 0,
    val_fraction: float = 0.05,
) -> tuple[Path, Path]:
    """A small synthetic corpus, a tokenizer trained on it and its token shards, in out_dir;
    returns (shard_dir, tokenizer_dir). Reuses what is already there."""
    from nanoseek.data import tokenize_corpus
    from nanoseek.tokenizer import train_tokenizer

    out_dir = Path(out_dir)
    shard_dir, tok_dir = out_dir / "shards", out_dir / "tokenizer"
    if not (shard_dir / "manifest.json").is_file():
        corpus = write_task_corpus(out_dir / "corpus.jsonl", spec, n_docs, seed=seed)
        train_tokenizer([corpus], vocab_size, tok_dir, show_progress=False)
        tokenize_corpus(
            [corpus], tok_dir, shard_dir, num_workers=1, val_fraction=val_fraction, show_progress=False
        )
    return shard_dir, tok_dir
