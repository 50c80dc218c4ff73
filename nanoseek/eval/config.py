"""What an eval run is: the tasks, the sampling protocol, the budgets and the prices (`EvalConfig`).

    cfg = EvalConfig(tasks=["gsm8k", "arithmetic?digits=2"], k=8, max_problems=100)
    cfg.specs                          # [TaskSpec, ...]: nanoseek.tasks.parse_task_spec of each task
    cfg = EvalConfig(tasks=["aime24", "math500"], **protocol_settings("r1", ["aime24", "math500"]))

The defaults are DeepSeek-R1's evaluation protocol: temperature 0.6, top-p 0.95, k samples per problem,
pass@1 = mean correctness over the k samples, cons@k = majority vote (`nanoseek.eval.metrics`). Token
prices default to DeepSeek-R1's launch API prices: $0.55 per million input tokens (cache miss) and
$2.19 per million output tokens.

A task is named by a task spec (`nanoseek.tasks.spec`): "gsm8k", "gsm8k:/path/file.jsonl",
"arithmetic?digits=2&ops=+"; the whole spec string is the task's label in samples and reports.

Fields that change what is sampled or scored (`identity`) are saved in the run directory; resuming
with different ones is refused, so a resumed run can never mix samples of two protocols.

`protocol_settings("r1", tasks)` is DeepSeek-R1's evaluation protocol as DeepSeek documents it (the R1
paper's evaluation setup and the model card's usage recommendations): temperature 0.6, top-p 0.95,
at most 32,768 new tokens, no system prompt, every question ending with "Please reason step by step,
and put your final answer within \\boxed{}." and the reply forced to start with "<think>\\n". The
number of samples: the paper generates "k responses (typically between 4 and 64, depending on the
test set size)" and the model card "64 responses per query"; we take 64 for AIME (30 problems: the
cons@64 column of the distilled models' table) and 16 for the larger sets, where the spread between
problems, not the samples per problem, dominates the error bar (`nanoseek.eval.stats`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from nanoseek.tasks.base import ANSWER_INSTRUCTION
from nanoseek.tasks.spec import TaskSpec, parse_task_spec

R1_INPUT_PRICE = 0.55  # $ per million input tokens (cache miss), DeepSeek-R1 at launch (January 2025)
R1_OUTPUT_PRICE = 2.19  # $ per million output tokens (reasoning included)
R1_CACHED_INPUT_PRICE = 0.14  # $ per million input tokens on a cache hit (DeepSeek's context caching)

R1_THINK_PREFIX = "<think>\n"  # what R1's model card tells you to force every reply to start with
R1_SAMPLES = {"aime": 64}  # task name prefix -> samples per problem under the R1 protocol
R1_DEFAULT_SAMPLES = 16  # every other task
PROTOCOLS = ("r1",)
CODE_TASKS = ("humaneval",)  # answers are code blocks: no \\boxed{} instruction is added to their prompts


def protocol_settings(name: str | None, tasks: list[str]) -> dict[str, Any]:
    """EvalConfig fields of a named protocol (see the module docstring); {} for None."""
    if name is None:
        return {}
    if name != "r1":
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    task_k = {}
    for task in tasks:
        base = parse_task_spec(task).name.partition(":")[0]
        task_k[parse_task_spec(task).label] = next(
            (k for prefix, k in R1_SAMPLES.items() if base.startswith(prefix)), R1_DEFAULT_SAMPLES
        )
    return {
        "temperature": 0.6,
        "top_p": 0.95,
        "max_new_tokens": 32768,
        "system": None,
        "think": True,
        "think_prefix": R1_THINK_PREFIX,
        "instruction": ANSWER_INSTRUCTION,
        "task_k": task_k,
        "protocol": name,
    }


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
    seeds: int = 1  # runs of k samples per problem, seeds seed, seed + 1, ... (error bars over both)
    task_k: dict[str, int] = field(default_factory=dict)  # task label -> its own k (the R1 protocol's)
    think_prefix: str = ""  # the reply is forced to start with this ("<think>\n" under R1); "": as rendered
    instruction: str = ""  # appended to a question that does not already ask for it (R1: the \\boxed{} one)
    protocol: str | None = None  # the named protocol these settings came from (reports say so)
    bootstrap: int = 2000  # bootstrap resamples of the error bars (nanoseek.eval.stats)

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
            (all(k >= 1 for k in self.task_k.values()), f"every task's k must be >= 1, got {self.task_k}"),
            (self.seeds >= 1, f"seeds must be >= 1, got {self.seeds}"),
            (self.bootstrap >= 100, f"bootstrap needs at least 100 resamples, got {self.bootstrap}"),
            (
                self.think or not self.think_prefix,
                f"think_prefix {self.think_prefix!r} opens a reply that think=False (--no-think) closes",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"eval config: {message}")
        labels = [parse_task_spec(t).label for t in self.tasks]
        if len(set(labels)) != len(labels):
            raise ValueError(f"eval config: a task is listed twice in {labels}")
        unknown = sorted(set(self.task_k) - set(labels))
        if unknown:
            raise ValueError(f"eval config: task_k names tasks that are not evaluated: {unknown}")

    @property
    def specs(self) -> list[TaskSpec]:
        return [parse_task_spec(t) for t in self.tasks]

    def k_for(self, label: str) -> int:
        """Samples per problem of one task: its own (task_k) or the run's k."""
        return self.task_k.get(label, self.k)

    def report_ks(self, label: str | None = None) -> list[int]:
        """The k of every pass@k reported for a task: 1, the requested ones up to its k, and its k."""
        k = self.k if label is None else self.k_for(label)
        return sorted({1, k, *(kk for kk in self.pass_ks if kk <= k)})

    def identity(self) -> dict[str, Any]:
        """The fields that decide what is sampled and how it is scored (checked on resume)."""
        d = dataclasses.asdict(self)
        return {key: d[key] for key in IDENTITY}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


IDENTITY = ("tasks", "k", "max_problems", "split", "temperature", "top_p", "max_new_tokens", "think")
IDENTITY += ("system", "seed", "likelihood", "seeds", "task_k", "think_prefix", "instruction")
# what a run written before a field existed had: a resume compares against these
IDENTITY_DEFAULTS = {"seeds": 1, "task_k": {}, "think_prefix": "", "instruction": ""}
