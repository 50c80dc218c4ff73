"""Math benchmarks from JSONL files: GSM8K, MATH-500, AIME 2024, AMC 2023.

    task = get_task("gsm8k:/data/gsm8k_test.jsonl")   # a test file; or get_task("math500"), see files.py
    task = get_task("gsm8k")                          # train: gsm8k_train.jsonl, test: gsm8k_test.jsonl
    problems = task.problems("test")
    results = task.score_batch(problems, completions)  # math-verify, in parallel worker processes

File formats, one JSON object per line (where two names are listed, the first present is used):
    gsm8k    question, answer ("...\\n#### 72": the reference is what follows ####)
    math500  problem, answer (LaTeX), and optionally unique_id, subject, level, solution
    aime24   problem | question, answer ("025" or 25), and optionally id, solution, url
    amc23    problem | question, answer (27.0 or "27"), and optionally id, url
Numeric references are normalized ("1,000" -> "1000", "025" -> "25", 27.0 -> "27", "90^\\circ" -> "90");
against one, units after the answer are dropped (`strip_units`: "18 apples" -> "18"). Answers are
compared with `nanoseek.verify.verify_math` (gold first). The prompt is the question followed by R1's
"Please reason step by step, and put your final answer within \\boxed{}."

GSM8K has both splits: with no file given, its train split is `gsm8k_train.jsonl` (7,473 problems) and
its test split `gsm8k_test.jsonl` (1,319), found as `files.py` says (../shared/data/train/ beside
../shared/data/benchmarks/ here), else the Hub's openai/gsm8k. Every task here also takes `train=`,
`test=`, `holdout=` and `seed=` (files.py).
"""

from collections.abc import Sequence
from typing import Any

from nanoseek.tasks.base import ANSWER_INSTRUCTION, Problem
from nanoseek.tasks.files import DataError, FileTask, Where, get_field
from nanoseek.verify import extract_answer, normalize_number, strip_units, verify_math_batch

META_FIELDS = ("solution", "subject", "level", "url", "type")


class MathBenchmark(FileTask):
    """A benchmark of math questions with a single final answer each."""

    question_fields: tuple[str, ...] = ("problem", "question")
    id_fields: tuple[str, ...] = ("unique_id", "id")

    def __init__(self, path: str | None = None, instruction: str = ANSWER_INSTRUCTION, **files):
        super().__init__(path, **files)
        self.instruction = instruction

    def reference(self, row: dict[str, Any], where: Where) -> str:
        answer = get_field(row, "answer", where, (str, int, float))
        if isinstance(answer, float) and answer.is_integer():
            answer = int(answer)
        answer = str(answer).strip()
        return normalize_number(answer) or answer

    def parse_row(self, row: dict[str, Any], where: Where) -> Problem:
        question = get_field(row, self.question_fields, where)
        reference = self.reference(row, where)
        uid = next((str(row[f]) for f in self.id_fields if f in row), where.record)
        meta = {k: row[k] for k in META_FIELDS if k in row}
        prompt = f"{question.strip()}\n\n{self.instruction}".strip()
        return Problem(id=f"{self.name}-{uid}", prompt=prompt, reference=reference, meta=meta)

    def extract(self, problem: Problem, answer: str) -> tuple[str | None, str]:
        extracted, how = extract_answer(answer)
        if extracted is not None and normalize_number(problem.reference) is not None:
            extracted = strip_units(extracted)  # "18 dollars", "$18 per day" -> "18", "$18"
        return extracted, how

    def check_batch(self, problems: Sequence[Problem], answers: Sequence[str | None]) -> list[bool]:
        return verify_math_batch([(p.reference, a) for p, a in zip(problems, answers)])


class GSM8K(MathBenchmark):
    name = "gsm8k"
    filenames = ("gsm8k_test.jsonl", "gsm8k.jsonl")
    train_filenames = ("gsm8k_train.jsonl",)
    hub = ("openai/gsm8k", "main")
    hub_splits = {"train": "train", "test": "test"}
    question_fields = ("question",)

    def reference(self, row: dict[str, Any], where: Where) -> str:
        solution = get_field(row, "answer", where)
        if "####" not in solution:
            raise DataError(
                where, None, "answer", "has no '#### <final answer>' (GSM8K's worked solution ends with one)"
            )
        final = solution.rsplit("####", 1)[1].strip()
        return normalize_number(final) or final

    def parse_row(self, row: dict[str, Any], where: Where) -> Problem:
        problem = super().parse_row(row, where)
        problem.meta["solution"] = row["answer"]
        return problem


class MATH500(MathBenchmark):
    name = "math500"
    filenames = ("math500.jsonl", "math500_test.jsonl")
    hub = ("HuggingFaceH4/MATH-500", None)


class AIME24(MathBenchmark):
    name = "aime24"
    filenames = ("aime24.jsonl", "aime_2024.jsonl")
    hub = ("HuggingFaceH4/aime_2024", None)
    hub_splits = {"test": "train"}  # the Hub dataset calls its only split "train"


class AMC23(MathBenchmark):
    name = "amc23"
    filenames = ("amc23.jsonl",)
    hub = ("math-ai/amc23", None)
