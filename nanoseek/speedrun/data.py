"""The speedrun's data: a synthetic reasoning corpus for pretraining and a small cold-start chat set.

    counts = write_pretrain_corpus(task, "runs/speedrun/data/pretrain.jsonl", shortcut_share=0.3)
    counts = write_cold_start(task, "runs/speedrun/data/cold_start.jsonl", n=400, shortcut_share=0.25)

Both come from the task's TRAIN split only (the test split is the held-out evaluation). Every problem
has two ways to be written down (the idea of `nanoseek.rl.micro`; `SyntheticTask.document` and
`chat_record` write them):
- worked: the task's whole `solution_trace` ("The smallest of 7, 9, 2, 2 is 2." ... "Sorted: 2, 2, 7, 9.");
- shortcut: only the trace's conclusion ("Sorted: 2, 2, 7, 9."), the answer without the work.
The pretraining corpus holds every train problem as `question \\n trace`, a share of them shortcuts.
The cold-start SFT set (DeepSeek-R1's "small amount of long-CoT data") is a few hundred conversations
in THE chat format, the reasoning in `reasoning_content` and the answer line as `content`, a share of
them shortcuts. Trained briefly, the SFT model learns the format but not yet to solve the task
reliably, with or without the steps; GRPO then has something to find: writing the steps correctly
earns the reward.
"""

from __future__ import annotations

import random
from pathlib import Path

from nanoseek.data import write_jsonl
from nanoseek.tasks import SyntheticTask


def write_pretrain_corpus(
    task: SyntheticTask, path: str | Path, shortcut_share: float, copies: int = 1, seed: int = 0
) -> dict[str, int]:
    """`copies` documents per train problem, each worked or (with probability `shortcut_share`) a
    shortcut, shuffled, as JSONL `{"text": ...}`. Returns the counts."""
    rng = random.Random(seed)
    docs, shortcuts = [], 0
    for problem in task.problems("train", 10**9):  # the whole split
        for _ in range(copies):
            short = rng.random() < shortcut_share
            shortcuts += short
            docs.append({"text": task.document(problem, short)})
    rng.shuffle(docs)
    write_jsonl(path, docs)
    return {"documents": len(docs), "shortcuts": shortcuts}


def write_cold_start(
    task: SyntheticTask, path: str | Path, n: int, shortcut_share: float, seed: int = 0
) -> dict[str, int]:
    """n chat conversations from train problems (a seeded sample), a `shortcut_share` of them with the
    shortcut as reasoning. Returns the counts."""
    rng = random.Random(f"cold-start/{seed}")
    problems = task.problems("train", 10**9)
    rows, shortcuts = [], 0
    for problem in rng.sample(problems, min(n, len(problems))):
        short = rng.random() < shortcut_share
        shortcuts += short
        rows.append(task.chat_record(problem, short))
    write_jsonl(path, rows)
    return {"conversations": len(rows), "shortcuts": shortcuts}
