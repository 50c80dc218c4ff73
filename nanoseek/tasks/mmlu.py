"""MMLU-style multiple choice from JSONL: a question, its choices, and the index or letter of the answer.

    task = get_task("mmlu:/data/mmlu_stem.jsonl")
    p = task.problems("test", n=1)[0]
    p.prompt      # the question, then "A) ...", "B) ...", then the answer instruction
    p.reference   # "C"
    task.score(p, "... so the answer is (C).")   # (1.0, {"extracted": "C", ...})

File format, one JSON object per line: `question`, `choices` (a list of 2 to 26 strings), `answer`
(0-based index, or a letter), and optionally `subject` or `type` (kept in `meta["subject"]`).
The answer letter is read with `nanoseek.verify.extract_choice` (\\boxed{C}, "The answer is (C)", ...).
"""

import string
from collections.abc import Sequence
from typing import Any

from nanoseek.tasks.base import Problem
from nanoseek.tasks.files import DataError, FileTask, Where, get_field
from nanoseek.verify import extract_choice

CHOICE_INSTRUCTION = "Please reason step by step, and put the letter of your final answer within \\boxed{}."


class MultipleChoiceTask(FileTask):
    name = "mmlu"
    filenames = ("mmlu.jsonl", "mmlu_stem.jsonl", "mmlu_test.jsonl")
    hub = ("cais/mmlu", "all")

    def __init__(self, path: str | None = None, instruction: str = CHOICE_INSTRUCTION, **files):
        super().__init__(path, **files)
        self.instruction = instruction

    def parse_row(self, row: dict[str, Any], where: Where) -> Problem:
        question = get_field(row, "question", where)
        choices = get_field(row, "choices", where, (list,))
        if not 2 <= len(choices) <= 26 or not all(isinstance(c, str) for c in choices):
            raise DataError(where, None, "choices", "must be a list of 2 to 26 strings")
        letters = string.ascii_uppercase[: len(choices)]
        answer = get_field(row, "answer", where, (int, str))
        if isinstance(answer, str) and answer.strip().isdigit():
            answer = int(answer)
        if isinstance(answer, int):
            if not 0 <= answer < len(choices):
                raise DataError(
                    where, None, "answer", f"is {answer}, not an index into {len(choices)} choices"
                )
            answer = letters[answer]
        elif len(answer.strip()) != 1 or answer.strip().upper() not in letters:
            raise DataError(where, None, "answer", f"is {answer!r}, not one of {', '.join(letters)}")
        listed = "\n".join(f"{letter}) {choice}" for letter, choice in zip(letters, choices))
        prompt = f"{question.strip()}\n\n{listed}\n\n{self.instruction}".strip()
        subject = row.get("subject", row.get("type"))
        uid = f"{self.name}-{where.record}"
        meta = {"subject": subject} if subject else {}
        return Problem(id=uid, prompt=prompt, reference=answer.strip().upper(), choices=choices, meta=meta)

    def extract(self, problem: Problem, answer: str) -> tuple[str | None, str]:
        letters = string.ascii_uppercase[: len(problem.choices or [])] or "ABCD"
        letter = extract_choice(answer, letters)
        return letter, "choice" if letter else "none"

    def check_batch(self, problems: Sequence[Problem], answers: Sequence[str | None]) -> list[bool]:
        return [a == p.reference for p, a in zip(problems, answers)]
