"""What an eval run is: the tasks, the sampling protocol, the budgets and the prices (`EvalConfig`).

    cfg = EvalConfig(tasks=["gsm8k", "arithmetic?digits=2"], k=8, max_problems=100)
    cfg.specs                          # [TaskSpec, ...]: nanoseek.tasks.parse_task_spec of each task

The defaults are DeepSeek-R1's evaluation protocol: temperature 0.6, top-p 0.95, k samples per problem,
pass@1 = mean correctness over the k samples, cons@k = majority vote (`nanoseek.eval.metrics`). Token
prices default to DeepSeek-R1's launch API prices: $0.55 per million input tokens (cache miss) and
$2.19 per million output tokens.

A task is named by a task spec (`nanoseek.tasks.spec`): "gsm8k", "gsm8k:/path/file.jsonl",
"arithmetic?digits=2&ops=+"; the whole spec string is the task's label in samples and reports.

Fields that change what is sampled or scored (`identity`) are saved in the run directory; resuming
with different ones is refused, so a resumed run can never mix samples of two protocols.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from nanoseek.tasks.spec import TaskSpec, parse_task_spec

R1_INPUT_PRICE = 0.55  # $ per million input tokens (cache miss), DeepSeek-R1 at launch (January 2025)
R1_OUTPUT_PRICE = 2.19  # $ per million output tokens (reasoning included)
R1_CACHED_INPUT_PRICE = 0.14  # $ per million input tokens on a cache hit (DeepSeek's context caching)


@dataclass
class EvalConfig:
    tasks: list[str]  # task specs (see parse_task_spec)
    k: int = 8  # samples per problem (R1: 4 to 64)
    max_problems: int | None = None  # the first N problems of each task; None: all
    split: str = "test"
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 1024  # per sample, thinking included (R1 used 32,768)
    think: bool = True  # open a think block in the prompt (R1); False: answer directly
    system: str | None = None  # R1 recommends none: all instructions in the user turn
    seed: int = 0  # base of the per-sample seeds
    pass_ks: list[int] = field(default_factory=lambda: [1])  # pass@k to report besides pass@1 and pass@n
    likelihood: bool = False  # multiple-choice tasks by log-likelihood (native checkpoints only)
    concurrency: int = 32  # samples per generate() call (in flight at once)
    input_price: float = R1_INPUT_PRICE  # $ per million prompt tokens
    output_price: float = R1_OUTPUT_PRICE  # $ per million completion tokens
    device_hour_price: float = 0.0  # $ per device-hour of a native engine (0: not charged)

    def __post_init__(self):
        if isinstance(self.tasks, str):
            self.tasks = [t for t in self.tasks.split(",") if t.strip()]
        checks = [
            (bool(self.tasks), "no tasks given"),
            (self.k >= 1, f"k must be >= 1, got {self.k}"),
            (self.max_problems is None or self.max_problems >= 1, "max_problems must be >= 1"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
            (self.concurrency >= 1, "concurrency must be >= 1"),
            (min(self.input_price, self.output_price, self.device_hour_price) >= 0, "prices must be >= 0"),
            (all(k >= 1 for k in self.pass_ks), f"pass@k needs k >= 1, got {self.pass_ks}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"eval config: {message}")
        labels = [parse_task_spec(t).label for t in self.tasks]
        if len(set(labels)) != len(labels):
            raise ValueError(f"eval config: a task is listed twice in {labels}")

    @property
    def specs(self) -> list[TaskSpec]:
        return [parse_task_spec(t) for t in self.tasks]

    @property
    def report_ks(self) -> list[int]:
        """The k of every pass@k reported: 1, the requested ones up to k, and k itself."""
        return sorted({1, self.k, *(k for k in self.pass_ks if k <= self.k)})

    def identity(self) -> dict[str, Any]:
        """The fields that decide what is sampled and how it is scored (checked on resume)."""
        keep = ("tasks", "k", "max_problems", "split", "temperature", "top_p", "max_new_tokens", "think")
        keep += ("system", "seed", "likelihood")
        d = dataclasses.asdict(self)
        return {key: d[key] for key in keep}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
