"""The Task interface: problems with a prompt and a reference answer, and a scorer for completions.

    from nanoseek.tasks import get_task
    task = get_task("arithmetic", digits=3)
    problems = task.problems("test", n=100)                # list[Problem]
    reward, details = task.score(problems[0], completion)  # 1.0/0.0; details["extracted"], ["correct"], ...
    results = task.score_batch(problems, completions)      # the same for many (math-verify in parallel)
    key = task.answer_key(problems[0], completion)         # normalized answer, for majority votes (cons@k)

A `Problem.prompt` is the user's question text, not chat-formatted; by default it ends with
`ANSWER_INSTRUCTION`, R1's "put your final answer within \\boxed{}". A completion may be the raw model
output with its `<think>...</think>` block or just the answer text: only the answer part (the text
after `</think>`) is scored, and a think block that never closed has no answer.

Every `score` returns `details` with at least:
    extracted      the normalized answer (None when there is none), also `answer_key`
    correct        whether it matches the reference
    format         how the answer was written: "boxed", "answer_is", "hash", "last_number", "none", ...
    format_reward  `nanoseek.verify.format_reward` of the whole completion (1.0 for <think>..</think> answer)

A task subclass implements `problems` and, unless the defaults fit, `extract` (the answer as written,
default `extract_answer`) and `check_batch` (default: `normalize_answer` equality with the reference).
`synthetic.py` (generated tasks) and `files.py` (problem files) build on it.

`prompt_key(problem)` is a problem's identity for overlap checks and held-out splits: the hash of its
prompt with whitespace collapsed (two rows asking the same question are the same problem), and
`task.split_source(split)` says in words where a split's problems come from.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nanoseek.verify import answer_part, extract_answer, format_reward, normalize_answer

ANSWER_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass
class Problem:
    id: str
    prompt: str  # the question as the user asks it (not chat-formatted)
    reference: str  # the gold answer
    choices: list[str] | None = None  # multiple choice only
    meta: dict[str, Any] = field(default_factory=dict)  # task-specific: numbers, tests, subject, ...


def prompt_key(problem: Problem) -> str:
    """The identity of a problem's question: sha256 of its prompt with runs of whitespace made one space."""
    return hashlib.sha256(" ".join(problem.prompt.split()).encode()).hexdigest()


class Task:
    """A set of problems and a scorer. Subclasses set `name` and implement `problems`."""

    name: str = "task"

    def problems(self, split: str = "test", n: int | None = None) -> list[Problem]:
        """The first `n` problems (all when None) of `split`."""
        raise NotImplementedError

    def split_source(self, split: str) -> str:
        """Where `split`'s problems come from, in words; two splits with equal sources share problems."""
        return f"{self.name} ({split} split)"

    def extract(self, problem: Problem, answer: str) -> tuple[str | None, str]:
        """(answer or None, format) from the answer part of a completion; the answer as written."""
        return extract_answer(answer)

    def check_batch(self, problems: Sequence[Problem], answers: Sequence[str | None]) -> list[bool]:
        """Whether each extracted answer is correct. Default: normalized equality with the reference."""
        return [
            a is not None and normalize_answer(a) == normalize_answer(p.reference)
            for p, a in zip(problems, answers)
        ]

    def score_batch(
        self, problems: Sequence[Problem], completions: Sequence[str]
    ) -> list[tuple[float, dict[str, Any]]]:
        """`score` for many (problem, completion) pairs; faster than a loop for math-verify and code."""
        if len(problems) != len(completions):
            raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
        extracted = [self.extract(p, answer_part(c)) for p, c in zip(problems, completions)]
        correct = self.check_batch(problems, [answer for answer, _ in extracted])
        results = []
        for (answer, how), ok, completion in zip(extracted, correct, completions):
            details = {"extracted": self.normalize(answer), "correct": bool(ok), "format": how}
            details["format_reward"] = format_reward(completion)
            results.append((1.0 if ok else 0.0, details))
        return results

    def score(self, problem: Problem, completion: str) -> tuple[float, dict[str, Any]]:
        """(reward, details): reward 1.0 when the completion's answer is correct, else 0.0."""
        return self.score_batch([problem], [completion])[0]

    def answer_key(self, problem: Problem, completion: str) -> str | None:
        """The normalized answer a completion gives (None if none): equal keys vote together in cons@k."""
        return self.normalize(self.extract(problem, answer_part(completion))[0])

    def normalize(self, answer: str | None) -> str | None:
        """The canonical form of an extracted answer: `details["extracted"]` and the cons@k vote key."""
        return normalize_answer(answer)
