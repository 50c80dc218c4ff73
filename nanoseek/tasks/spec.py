"""The task registry and task specs: one string names a task and its constructor arguments.

    task = get_task("countdown", num_numbers=4)           # a registered task by name
    spec = parse_task_spec("arithmetic?digits=2&ops=+")   # TaskSpec("arithmetic", {"digits": 2, "ops": "+"})
    task = spec.build()                                    # nanoseek.tasks.get_task(name, **kwargs)

A spec is a task name for `get_task` ("gsm8k", "gsm8k:/path/file.jsonl"), optionally followed by
`?key=value&key=value` constructor arguments (values are read as JSON when they parse, else as
strings). The whole spec string is the task's label in samples and reports. Used by `nanoseek eval`,
`grpo`, `distill`, `arena headless` and the speedrun.

Problem files (`files.py`; a path may not contain "?" or "&"):
    gsm8k:test.jsonl                          the test split from a file (no train split)
    gsm8k?train=a.jsonl&test=b.jsonl          each split from its own file
    problems:all.jsonl?holdout=0.1&seed=0     one file, a seeded 10% held out as the test split
    gsm8k?holdout=0.05                        the default train data, 5% of it held out
    problems?train=a.csv&test=b.csv&question_field=q&answer_field=a   your own problems (`problems.py`)
    countdown?train=a.parquet&test=b.parquet  TinyZero's Countdown files (`countdown.py`)
A task that is generated ("countdown") reads files through its file-backed variant (`FILE_TASKS`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nanoseek.tasks.arithmetic import ArithmeticTask
from nanoseek.tasks.base import Task
from nanoseek.tasks.countdown import CountdownFile, CountdownTask
from nanoseek.tasks.files import FileTask
from nanoseek.tasks.humaneval import HumanEval
from nanoseek.tasks.linear import LinearEquationTask
from nanoseek.tasks.math_bench import AIME24, AMC23, GSM8K, MATH500
from nanoseek.tasks.mmlu import MultipleChoiceTask
from nanoseek.tasks.problems import ProblemFile
from nanoseek.tasks.sort import SortTask

TASKS: dict[str, type[Task]] = {
    "arithmetic": ArithmeticTask,
    "countdown": CountdownTask,
    "linear": LinearEquationTask,
    "sort": SortTask,
    "gsm8k": GSM8K,
    "math500": MATH500,
    "aime24": AIME24,
    "amc23": AMC23,
    "mmlu": MultipleChoiceTask,
    "humaneval": HumanEval,
    "problems": ProblemFile,
}
FILE_TASKS: dict[str, type[FileTask]] = {"countdown": CountdownFile}  # generated tasks read from files
FILE_ARGUMENTS = ("train", "test")  # with a path, the arguments that make a task read files


def get_task(name: str, **kwargs) -> Task:
    """The task called `name` ("gsm8k", or "gsm8k:/path/to/file.jsonl"), built with `kwargs`."""
    name, _, path = name.partition(":")
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    cls = TASKS[name]
    if path:
        kwargs["path"] = path
    if (path or any(k in kwargs for k in FILE_ARGUMENTS)) and not issubclass(cls, FileTask):
        if name not in FILE_TASKS:
            readers = ", ".join(n for n, c in TASKS.items() if issubclass(c, FileTask) or n in FILE_TASKS)
            raise ValueError(
                f"task {name!r} is generated, it does not read a file (tasks that do: {readers})"
            )
        cls = FILE_TASKS[name]
    return cls(**kwargs)


@dataclass(frozen=True)
class TaskSpec:
    name: str  # for get_task: "gsm8k" or "gsm8k:/path/to/file.jsonl"
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # the spec as written

    def build(self) -> Task:
        """The task; a clear error for an unknown name, a missing file or a bad argument."""
        try:
            return get_task(self.name, **self.kwargs)
        except TypeError as e:
            raise ValueError(f"task {self.label or self.name!r}: bad arguments {self.kwargs}: {e}") from None


def parse_task_spec(spec: str) -> TaskSpec:
    """'name[:path][?key=value&...]' -> TaskSpec."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty task name")
    name, _, query = spec.partition("?")
    kwargs: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"task {spec!r}: expected key=value after '?', got {item!r}")
        try:
            kwargs[key] = json.loads(text)
        except json.JSONDecodeError:
            kwargs[key] = text
    return TaskSpec(name, kwargs, spec)
