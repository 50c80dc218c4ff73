"""Sorting a list of integers, by repeatedly taking the smallest remaining number.

    task = SortTask(length=5)
    p = task.problems("test", n=1)[0]
    p.prompt   # "Sort these numbers from smallest to largest: 42, 7, 19, 88, 3. Please reason ..."
    task.solution_trace(p)

    Take the smallest remaining number each time.
    The smallest of 42, 7, 19, 88, 3 is 3.
    The smallest of 42, 7, 19, 88 is 7.
    ...
    The answer is \\boxed{3, 7, 19, 42, 88}.

Knobs: `length`, `max_value` (numbers are 0..max_value). An answer is read as the list of integers in
it, so "[3, 7, 19]" and "3, 7, 19" are the same answer.
"""

import random
import re
from collections.abc import Sequence
from typing import Any

from nanoseek.tasks.base import Problem
from nanoseek.tasks.synthetic import SyntheticTask, answer_line


def as_list(text: str) -> str:
    return ", ".join(re.findall(r"-?\d+", text))


class SortTask(SyntheticTask):
    name = "sort"

    def __init__(self, length: int = 5, max_value: int = 99, **kwargs):
        super().__init__(**kwargs)
        if length < 2 or max_value < 1:
            raise ValueError(f"sort: need length >= 2 and max_value >= 1, got {length=}, {max_value=}")
        self.length, self.max_value = length, max_value

    def generate(self, rng: random.Random) -> tuple[str, str, str, dict[str, Any]]:
        numbers = [rng.randint(0, self.max_value) for _ in range(self.length)]
        listed = ", ".join(map(str, numbers))
        question = f"Sort these numbers from smallest to largest: {listed}."
        return listed, self.ask(question), as_list(str(sorted(numbers))), {"numbers": numbers}

    def solution_trace(self, problem: Problem) -> str:
        remaining = list(problem.meta["numbers"])
        lines = ["Take the smallest remaining number each time."]
        while len(remaining) > 1:
            smallest = min(remaining)
            lines.append(f"The smallest of {', '.join(map(str, remaining))} is {smallest}.")
            remaining.remove(smallest)
        lines.append(f"The last one left is {remaining[0]}.")
        lines.append(f"Sorted: {problem.reference}.")
        return "\n".join(lines + [answer_line(problem.reference)])

    def extract(self, problem: Problem, answer: str) -> tuple[str | None, str]:
        extracted, how = super().extract(problem, answer)
        if how == "last_number":  # a list answer must be stated, not guessed from the last number
            return None, "none"
        return (as_list(extracted) or None) if extracted is not None else None, how

    def check_batch(self, problems: Sequence[Problem], answers: Sequence[str | None]) -> list[bool]:
        return [a == p.reference for p, a in zip(problems, answers)]
