"""Your own problems: a question/answer file as a task, graded by math-verify or by exact match.

    task = get_task("problems?train=mine_train.jsonl&test=mine_test.jsonl")
    task = get_task("problems:mine.jsonl?holdout=0.1&seed=0")                  # one file, 10% held out
    task = get_task("problems:mine.csv?question_field=q&answer_field=a&grader=exact")

    nanoseek grpo recipes/grpo_r1_zero.toml --init runs/base --out runs/mine \\
        --task "problems?train=mine_train.jsonl&test=mine_test.jsonl"

Each row has a question and an answer; which fields they are is configurable:
    question_field  default: the first of "question", "problem", "prompt" present
    answer_field    default: the first of "answer", "final_answer" present; a string or a number
    id_field        optional: the problem's id (default: the row's number in its file)
The reference is read from the answer as GSM8K writes it (what follows "####"), else the last
\\boxed{} in it, else the whole answer; numbers are normalized ("1,000" -> "1000", 27.0 -> "27").

`grader`:
    "math"   (default) as the math benchmarks: math-verify equivalence ("\\frac{1}{2}" = "0.5"), units
             after a numeric answer dropped ("18 apples" -> "18"); numbers are settled without math-verify
    "exact"  the normalized answer equals the normalized reference (`normalize_answer`): for words,
             names, letters
The prompt is the question followed by `instruction` (R1's "... put your final answer within \\boxed{}.";
`instruction=` with nothing after it for none). Splits: train=, test=, holdout=, seed= (`files.py`).
"""

from collections.abc import Sequence
from typing import Any

from nanoseek.tasks.base import Problem, Task
from nanoseek.tasks.files import DataError, Where, get_field
from nanoseek.tasks.math_bench import MathBenchmark
from nanoseek.verify import extract_answer, last_boxed, normalize_number

GRADERS = ("math", "exact")


def reference_of(answer: str | int | float) -> str:
    """The final answer in an answer field: after "####", else the last \\boxed{}, else all of it."""
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    text = str(answer).strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip()
    else:
        text = last_boxed(text) or text
    return normalize_number(text) or text


class ProblemFile(MathBenchmark):
    """Question/answer rows from the user's own files (module docstring)."""

    name = "problems"

    def __init__(
        self,
        path: str | None = None,
        question_field: str | None = None,
        answer_field: str | None = None,
        id_field: str | None = None,
        grader: str = "math",
        **kwargs,
    ):
        super().__init__(path, **kwargs)
        if grader not in GRADERS:
            raise ValueError(f"problems: grader={grader!r}; choose one of {', '.join(GRADERS)}")
        self.question_fields = (question_field,) if question_field else ("question", "problem", "prompt")
        self.answer_fields = (answer_field,) if answer_field else ("answer", "final_answer")
        self.id_fields = (id_field,) if id_field else ()
        self.grader = grader

    def reference(self, row: dict[str, Any], where: Where) -> str:
        answer = get_field(row, self.answer_fields, where, (str, int, float))
        reference = reference_of(answer)
        if not reference:
            raise DataError(where, None, self.answer_fields[0], f"has no final answer: {answer!r:.80}")
        return reference

    def parse_row(self, row: dict[str, Any], where: Where) -> Problem:
        if self.id_fields and self.id_fields[0] not in row:
            raise DataError(where, None, self.id_fields[0], f"missing (id_field={self.id_fields[0]!r})")
        return super().parse_row(row, where)

    def extract(self, problem: Problem, answer: str) -> tuple[str | None, str]:
        if self.grader == "exact":
            return extract_answer(answer)
        return super().extract(problem, answer)

    def check_batch(self, problems: Sequence[Problem], answers: Sequence[str | None]) -> list[bool]:
        if self.grader == "exact":
            return Task.check_batch(self, problems, answers)
        return super().check_batch(problems, answers)
