"""The task registry and task specs: one string names a task and its constructor arguments.

    task = get_task("countdown", num_numbers=4)           # a registered task by name
    spec = parse_task_spec("arithmetic?digits=2&ops=+")   # TaskSpec("arithmetic", {"digits": 2, "ops": "+"})
    task = spec.build()                                    # nanoseek.tasks.get_task(name, **kwargs)

A spec is a task name for `get_task` ("gsm8k", "gsm8k:/path/file.jsonl"), optionally followed by
`?key=value&key=value` constructor arguments (values are read as JSON when they parse, else as
strings). The whole spec string is the task's label in samples and reports. Used by `nanoseek eval`,
`grpo`, `distill`, `arena headless` and the speedrun.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nanoseek.tasks.arithmetic import ArithmeticTask
from nanoseek.tasks.base import Task
from nanoseek.tasks.countdown import CountdownTask
from nanoseek.tasks.files import FileTask
from nanoseek.tasks.humaneval import HumanEval
from nanoseek.tasks.linear import LinearEquationTask
from nanoseek.tasks.math_bench import AIME24, AMC23, GSM8K, MATH500
from nanoseek.tasks.mmlu import MultipleChoiceTask
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
}


def get_task(name: str, **kwargs) -> Task:
    """The task called `name` ("gsm8k", or "gsm8k:/path/to/file.jsonl"), built with `kwargs`."""
    name, _, path = name.partition(":")
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    if path:
        if not issubclass(TASKS[name], FileTask):
            raise ValueError(f"task {name!r} is generated, it does not read a file")
        kwargs["path"] = path
    return TASKS[name](**kwargs)


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
