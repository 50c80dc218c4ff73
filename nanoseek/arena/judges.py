"""Arena judges for headless battles: who wins when no human votes.

    judge = VerifierJudge(get_task("arithmetic"))          # the task's answer checker decides
    judge = ModelJudge(contestants["deepseek-r1"])         # a Generator compares the two answers
    winners = judge.vote(problems, answers_a, answers_b)   # "model_a" | "model_b" | "tie" | "tie (bothbad)" | None

`VerifierJudge`: the correct answer wins; both correct is a "tie", both wrong a "tie (bothbad)"
(both count as a tie in the ratings). `ModelJudge` asks a model MT-Bench's pairwise question (judge
correctness first, ignore order and length, end with [[A]], [[B]] or [[C]] for a tie) and reads the
last verdict in its answer; a reply without a verdict is None and the battle is not counted.
Answers are the `content` part of completions (after the thinking).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from nanoseek.arena.contestants import Contestant
from nanoseek.tasks import Problem, Task

JUDGE_PROMPT = """Please act as an impartial judge and evaluate the two answers an AI assistant gave to the user question below. Judge correctness first, then helpfulness, relevance and depth. Do not let the order in which the answers are presented, their length or the names of the assistants influence your decision. Be as objective as possible. After a short explanation, output your final verdict strictly in this format: "[[A]]" if answer A is better, "[[B]]" if answer B is better, "[[C]]" for a tie.

[User Question]
{question}

[The Start of Answer A]
{answer_a}
[The End of Answer A]

[The Start of Answer B]
{answer_b}
[The End of Answer B]"""

_VERDICT = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
_BARE = re.compile(r"^\W*(?:verdict\W*)?(A|B|C|tie)\W*$", re.IGNORECASE)
_WINNER = {"a": "model_a", "b": "model_b", "c": "tie", "tie": "tie"}


class Judge(Protocol):
    name: str  # stored as the voter of every battle it decides

    def vote(
        self, problems: Sequence[Problem], answers_a: Sequence[str], answers_b: Sequence[str]
    ) -> list[str | None]: ...


class VerifierJudge:
    """Votes with a task's verifier: right beats wrong; both right = "tie", both wrong = "tie (bothbad)"."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.name = f"verifier:{task.name}"

    def vote(
        self, problems: Sequence[Problem], answers_a: Sequence[str], answers_b: Sequence[str]
    ) -> list[str | None]:
        scored = self.task.score_batch([*problems, *problems], [*answers_a, *answers_b])
        n = len(problems)
        winners: list[str | None] = []
        for (reward_a, _), (reward_b, _) in zip(scored[:n], scored[n:]):
            if reward_a > reward_b:
                winners.append("model_a")
            elif reward_b > reward_a:
                winners.append("model_b")
            else:
                winners.append("tie" if reward_a > 0 else "tie (bothbad)")
        return winners


def parse_verdict(text: str) -> str | None:
    """The winner a judge's reply names: its last [[A]] / [[B]] / [[C]] (or [[tie]]), else a reply
    that is only "A", "B", "C" or "tie"; None when there is no verdict."""
    found = _VERDICT.findall(text)
    if found:
        return _WINNER[found[-1].lower()]
    bare = _BARE.match(text.strip())
    return _WINNER[bare.group(1).lower()] if bare else None


class ModelJudge:
    """Votes with a model: a `Contestant` (any Generator) prompted with `JUDGE_PROMPT`."""

    def __init__(self, contestant: Contestant, template: str = JUDGE_PROMPT) -> None:
        self.contestant, self.template = contestant, template
        self.name = f"judge:{contestant.name}"

    def prompt(self, problem: Problem, answer_a: str, answer_b: str) -> str:
        return self.template.format(question=problem.prompt, answer_a=answer_a, answer_b=answer_b)

    def vote(
        self, problems: Sequence[Problem], answers_a: Sequence[str], answers_b: Sequence[str]
    ) -> list[str | None]:
        conversations = [
            [{"role": "user", "content": self.prompt(p, a, b)}]
            for p, a, b in zip(problems, answers_a, answers_b)
        ]
        completions = self.contestant.generate(conversations)
        return [parse_verdict(c.content if c.content is not None else c.text) for c in completions]
