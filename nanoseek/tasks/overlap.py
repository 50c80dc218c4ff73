"""Train/eval overlap: does a run evaluate on problems it trains on?

    overlap = train_eval_overlap(task, "train", "test", train_problems, eval_problems)
    if overlap:                      # the same source, or any shared problem text
        raise SomeError(overlap.describe())

Two checks, both cheap: the splits come from the same source (`task.split_source`: the same file,
resolved, or the same Hub split; a held-out split of one file is its own source, so `holdout=` passes),
and the evaluation problems whose prompt text is also a training prompt (`prompt_key`: sha256 of the
prompt, whitespace collapsed), which catches copies, renamed files and benchmark questions pasted into
a training file. `nanoseek grpo` refuses such a run unless `task.allow_train_on_eval = true`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nanoseek.tasks.base import Problem, Task, prompt_key


@dataclass
class Overlap:
    train_source: str
    eval_source: str
    same_source: bool
    shared: int  # evaluation problems whose prompt is a training prompt
    eval_problems: int
    examples: list[str] = field(default_factory=list)  # ids of a few shared evaluation problems

    def __bool__(self) -> bool:
        return self.same_source or self.shared > 0

    def describe(self) -> str:
        """One sentence: which sources, how many problems."""
        if self.same_source:
            where = f"train and eval read the same data ({self.train_source})"
        else:
            where = f"train reads {self.train_source}, eval reads {self.eval_source}"
        some = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        return (
            f"{where}; {self.shared} of the {self.eval_problems} evaluation problems are also training "
            f"problems (identical prompts){some}"
        )


def train_eval_overlap(
    task: Task,
    train_split: str,
    eval_split: str,
    train_problems: Sequence[Problem],
    eval_problems: Sequence[Problem],
) -> Overlap:
    """How the training and evaluation problems of a run overlap (module docstring)."""
    train_source, eval_source = task.split_source(train_split), task.split_source(eval_split)
    trained = {prompt_key(p) for p in train_problems}
    shared = [p.id for p in eval_problems if prompt_key(p) in trained]
    same = train_source == eval_source
    return Overlap(train_source, eval_source, same, len(shared), len(eval_problems), shared[:3])
