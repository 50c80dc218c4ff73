"""Synthetic tasks: procedurally generated, seeded problems with step-by-step solution traces.

    task = ArithmeticTask(digits=4)            # any SyntheticTask subclass
    train = task.problems("train", n=10_000)   # deterministic given the task's seed
    test = task.problems("test", n=500)        # never shares a problem with train
    task.solution_trace(test[0])               # reasoning steps, then "The answer is \\boxed{...}."
    task.document(p), task.chat_record(p)      # a pretraining document, an SFT chat record (R1's format)

Splits are decided by a hash of each problem's content (`split_of`), not by the seed, so train and
test are disjoint for every seed and every difficulty setting. Solution traces feed the synthetic
pretraining corpus and SFT cold-start data; their last line is always `answer_line(answer)`, so
`trace.rsplit("\\n", 1)` separates the reasoning from the answer.
"""

import hashlib
import random
from typing import Any

from nanoseek.tasks.base import ANSWER_INSTRUCTION, Problem, Task


def content_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def split_of(key: str, test_fraction: float = 0.1) -> str:
    """Which split a problem belongs to, by a hash of its content key: the splits can never share one."""
    return "test" if content_hash(key) % 10_000 < test_fraction * 10_000 else "train"


class SyntheticTask(Task):
    """Procedurally generated problems. `problems(split, n)` is deterministic given `seed`; train and
    test are disjoint by construction (`split_of` the problem's content key), and problems are unique
    within a split. A subclass implements `generate(rng) -> (key, prompt, reference, meta)` and
    `solution_trace(problem)`."""

    sizes = {"train": 10_000, "test": 500}  # default n per split

    def __init__(self, seed: int = 0, instruction: str = ANSWER_INSTRUCTION, test_fraction: float = 0.1):
        self.seed = seed
        self.instruction = instruction
        self.test_fraction = test_fraction

    def generate(self, rng: random.Random) -> tuple[str, str, str, dict[str, Any]]:
        raise NotImplementedError

    def solution_trace(self, problem: Problem) -> str:
        """Correct step-by-step reasoning; its last line is the answer line, `The answer is \\boxed{...}.`"""
        raise NotImplementedError

    def worked(self, problem: Problem, shortcut: bool = False) -> tuple[str, str]:
        """(reasoning, answer line) of the solution trace; with `shortcut` the reasoning is only the
        trace's last step before the answer (the answer without the work)."""
        steps, _, answer = self.solution_trace(problem).rpartition("\n")
        return (steps.split("\n")[-1] if shortcut else steps), answer

    def document(self, problem: Problem, shortcut: bool = False) -> str:
        """A pretraining document: the question, then the worked (or shortcut) solution."""
        if not shortcut:
            return f"{problem.prompt}\n{self.solution_trace(problem)}"
        return "\n".join([problem.prompt, *self.worked(problem, shortcut=True)])

    def chat_record(self, problem: Problem, shortcut: bool = False) -> dict[str, Any]:
        """A chat record in R1's format: the question as the user turn, the reasoning as the assistant's
        `reasoning_content` and the answer line as its `content`."""
        reasoning, answer = self.worked(problem, shortcut)
        assistant = {"role": "assistant", "reasoning_content": reasoning, "content": answer}
        return {"messages": [{"role": "user", "content": problem.prompt}, assistant]}

    def ask(self, question: str) -> str:
        return f"{question} {self.instruction}".strip()

    def problems(self, split: str = "test", n: int | None = None) -> list[Problem]:
        if split not in ("train", "test"):
            raise ValueError(f"{self.name}: unknown split {split!r} (train or test)")
        n = self.sizes[split] if n is None else n
        rng = random.Random(f"{self.name}/{self.seed}/{split}")  # str seeds are stable across runs
        seen: set[str] = set()
        out: list[Problem] = []
        misses = 0  # a small problem space runs out: stop after many draws in a row bring nothing new
        while len(out) < n and misses < 2000:
            key, prompt, reference, meta = self.generate(rng)
            if key in seen or split_of(key, self.test_fraction) != split:
                misses += 1
                continue
            misses = 0
            seen.add(key)
            uid = f"{self.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
            out.append(Problem(id=uid, prompt=prompt, reference=reference, meta=meta))
        return out


def answer_line(answer: str) -> str:
    """The last line of every synthetic solution trace."""
    return f"The answer is \\boxed{{{answer}}}."
