"""Headless arena: the verifier ranks an oracle above a coin-flipper above a random guesser on
arithmetic; a judge model's verdicts are parsed and counted; battles land in the store.

The contestants speak the Generator protocol without a model (helpers' `ScriptedGenerator`).
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from helpers import ScriptedGenerator, solve

from nanoseek.arena import ArenaStore, compute_leaderboard
from nanoseek.arena.contestants import Contestant
from nanoseek.arena.headless import run_headless
from nanoseek.arena.judges import ModelJudge, VerifierJudge, parse_verdict
from nanoseek.tasks import get_task


def arithmetic_contestants(seed: int = 0) -> dict[str, Contestant]:
    """oracle: always right; coin: right half the time; guesser: a random number."""
    rng = random.Random(seed)
    answers = {
        "oracle": lambda p: f"The answer is \\boxed{{{solve(p)}}}.",
        "coin": lambda p: f"\\boxed{{{solve(p) + (0 if rng.random() < 0.5 else 1)}}}",
        "guesser": lambda p: f"Maybe \\boxed{{{rng.randint(0, 10**6)}}}",
    }
    return {name: Contestant(name, ScriptedGenerator(fn)) for name, fn in answers.items()}


def test_the_verifier_ranks_a_stronger_contestant_above_a_weaker_one(tmp_path):
    task = get_task("arithmetic", digits=3)
    store = ArenaStore(tmp_path / "arena.db")
    result = run_headless(
        arithmetic_contestants(), task, 150, VerifierJudge(task), store=store, seed=0, batch_size=40
    )
    assert len(result.battles) == 150 and result.unjudged == 0
    assert store.counts() == {"battles": 150, "votes": 150}
    assert {b.voter for b in store.battles()} == {"verifier:arithmetic"}
    winners = Counter(b["winner"] for b in result.battles)
    assert winners["tie (bothbad)"] > 0 and winners["model_a"] > 0 and winners["model_b"] > 0
    for b in result.battles:  # the verdicts follow the verifier
        if {b["model_a"], b["model_b"]} == {"oracle", "guesser"}:
            assert b["winner"] == ("model_a" if b["model_a"] == "oracle" else "model_b")
    board = compute_leaderboard(store.battles(), num_bootstrap=50)
    assert [r.model for r in board.rows] == ["oracle", "coin", "guesser"]
    oracle, coin, guesser = board.rows
    assert oracle.rank == 1 and guesser.rank == 3  # separated by their confidence intervals
    assert oracle.ci_low > guesser.ci_high and oracle.ci_low > coin.rating > guesser.ci_high


def test_battles_ask_each_problem_to_a_random_ordered_pair():
    task = get_task("arithmetic", digits=2)
    contestants = arithmetic_contestants()
    result = run_headless(contestants, task, 60, VerifierJudge(task), seed=1, batch_size=7)
    problems = task.problems("test", n=60)
    assert [b["conversation_a"][0]["content"] for b in result.battles] == [p.prompt for p in problems]
    assert all(b["conversation_a"][0] == b["conversation_b"][0] for b in result.battles)
    assert len({(b["model_a"], b["model_b"]) for b in result.battles}) == 6  # every ordered pair
    # each contestant answers all its prompts of a round (7 battles) in one generate() call
    assert sum(c.generator.calls for c in contestants.values()) == 120
    assert sum(c.generator.batches for c in contestants.values()) <= 3 * 9  # 9 rounds
    again = run_headless(arithmetic_contestants(), task, 60, VerifierJudge(task), seed=1, batch_size=7)
    assert [(b["model_a"], b["model_b"]) for b in again.battles] == [
        (b["model_a"], b["model_b"]) for b in result.battles
    ]


@pytest.mark.parametrize(
    ("reply", "winner"),
    [
        ("A is right, B is wrong. [[A]]", "model_a"),
        ("First I thought [[A]] but in the end [[B]]", "model_b"),
        ("Equally good: [[C]]", "tie"),
        ("[[ tie ]]", "tie"),
        ("B", "model_b"),
        ("Verdict: A.", "model_a"),
        ("I cannot decide.", None),
        ("", None),
    ],
)
def test_judge_verdicts_are_parsed(reply, winner):
    assert parse_verdict(reply) == winner


def test_a_judge_model_votes_and_unparsable_verdicts_are_not_counted():
    task = get_task("arithmetic", digits=2)
    seen = []

    def judge(prompt: str) -> str:  # reads the judge prompt: prefers the answer with the right number
        seen.append(prompt)
        question = prompt.split("[User Question]")[1]
        a = prompt.split("[The Start of Answer A]")[1].split("[The End of Answer A]")[0]
        b = prompt.split("[The Start of Answer B]")[1].split("[The End of Answer B]")[0]
        right = f"{{{solve(question)}}}"
        if len(seen) % 10 == 0:
            return "Hmm."
        if (right in a) == (right in b):
            return "Both the same. [[C]]"
        return "[[A]]" if right in a else "[[B]]"

    judge_model = ModelJudge(Contestant("judge", ScriptedGenerator(judge)))
    contestants = {k: v for k, v in arithmetic_contestants().items() if k != "coin"}
    result = run_headless(contestants, task, 40, judge_model, seed=2)
    assert len(seen) == 40 and result.unjudged == 4 and len(result.battles) == 36
    assert all(b["winner"] in ("model_a", "model_b") for b in result.battles)
    board = compute_leaderboard(result.battles, num_bootstrap=20)
    assert board.rows[0].model == "oracle" and board.rows[0].losses == 0
    assert "Do not let the order" in seen[0] and "oracle" not in seen[0]  # the judge never sees names


def test_headless_needs_two_contestants():
    task = get_task("arithmetic")
    one = {"oracle": arithmetic_contestants()["oracle"]}
    with pytest.raises(ValueError, match="at least two"):
        run_headless(one, task, 5, VerifierJudge(task))
