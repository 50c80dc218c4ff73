"""Tasks: problems with a prompt and a reference, and a scorer that turns a completion into a reward.

    from nanoseek.tasks import get_task
    task = get_task("countdown", num_numbers=4)          # synthetic, seeded, with solution traces
    task = get_task("gsm8k:/data/gsm8k_test.jsonl")      # a benchmark from a local JSONL file
    task = get_task("problems?train=a.jsonl&test=b.jsonl")   # your own problems, one file per split
    problems = task.problems("test", n=100)
    reward, details = task.score(problems[0], completion)

Names: synthetic "arithmetic", "countdown", "linear", "sort"; benchmarks "gsm8k", "math500", "aime24",
"amc23", "mmlu", "humaneval"; "problems" (your own question/answer files). "name:/path/to/file.jsonl"
reads a benchmark's test split from that file, `train=` / `test=` / `holdout=` name the files of each
split (`files.py`; Countdown reads TinyZero's files); keyword arguments go to the task's constructor
(difficulty knobs, seed, instruction, ...). A task spec string names both at once:
`parse_task_spec("arithmetic?digits=2&ops=+").build()` (`spec.py`). `overlap.py` finds problems a run
would both train and evaluate on.

Answer format convention: every prompt asks for the final answer in `\\boxed{}` (R1's convention,
which math-verify reads), and every synthetic `solution_trace` ends with the line
`The answer is \\boxed{ANSWER}.`. Scoring also accepts "The answer is X", "#### X" and, for numeric
tasks, a last number, and reports which one it found in `details["format"]`.
"""

from nanoseek.tasks.arithmetic import ArithmeticTask
from nanoseek.tasks.base import ANSWER_INSTRUCTION, Problem, Task, prompt_key
from nanoseek.tasks.countdown import CountdownFile, CountdownTask
from nanoseek.tasks.files import DataError, FileTask
from nanoseek.tasks.humaneval import HumanEval
from nanoseek.tasks.linear import LinearEquationTask
from nanoseek.tasks.math_bench import AIME24, AMC23, GSM8K, MATH500
from nanoseek.tasks.mmlu import MultipleChoiceTask
from nanoseek.tasks.overlap import Overlap, train_eval_overlap
from nanoseek.tasks.problems import ProblemFile
from nanoseek.tasks.sort import SortTask
from nanoseek.tasks.spec import TASKS, TaskSpec, get_task, parse_task_spec
from nanoseek.tasks.synthetic import SyntheticTask

__all__ = [
    "ANSWER_INSTRUCTION",
    "AIME24",
    "AMC23",
    "ArithmeticTask",
    "CountdownFile",
    "CountdownTask",
    "DataError",
    "FileTask",
    "GSM8K",
    "HumanEval",
    "LinearEquationTask",
    "MATH500",
    "MultipleChoiceTask",
    "Overlap",
    "Problem",
    "ProblemFile",
    "SortTask",
    "SyntheticTask",
    "TASKS",
    "Task",
    "TaskSpec",
    "get_task",
    "parse_task_spec",
    "prompt_key",
    "train_eval_overlap",
]
