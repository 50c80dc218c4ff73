"""Headless arena: battles on a task's problems, voted by a verifier or a judge model, for offline ranking.

    from nanoseek.arena.headless import run_headless
    from nanoseek.arena.judges import VerifierJudge
    result = run_headless(contestants, task, num_battles=200, judge=VerifierJudge(task),
                          store=ArenaStore("arena.db"), seed=0)
    print(compute_leaderboard(result.battles).to_text())

or `nanoseek arena headless --contestants arena.toml --task arithmetic --battles 200 [--judge NAME]`.

Battle i asks problem i of the task's test split (cycling when there are fewer) to a pair drawn
uniformly at random, in random order, as in the web arena. Battles run in rounds of `batch_size`:
each contestant answers all its prompts of a round in one `generate` call (the engine batches them),
the judge votes them all at once, and the round's voted battles go to the store before the next
round starts, so an interrupted run keeps what it finished. A battle the judge gives no verdict on
is counted in `unjudged` and not stored. A contestant or judge that fails (say, a prompt longer
than its context) stops the run with `ContestantFailed` naming it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from nanoseek.arena.battles_io import validate_record
from nanoseek.arena.contestants import Contestant, pick_pair
from nanoseek.arena.judges import Judge
from nanoseek.arena.store import ArenaStore
from nanoseek.engine.protocol import Completion
from nanoseek.tasks import Problem, Task


class ContestantFailed(RuntimeError):
    """A contestant or judge model that could not answer (the message names it)."""


@dataclass
class HeadlessResult:
    battles: list[dict[str, Any]] = field(default_factory=list)  # voted, public records (`battles_io`)
    unjudged: int = 0  # battles without a verdict (not stored)


def answer_text(completion: Completion) -> str:
    """What a contestant answered: the chat content (after the thinking), else the raw text."""
    return completion.content if completion.content is not None else completion.text


def run_round(
    contestants: Mapping[str, Contestant],
    pairs: list[tuple[str, str]],
    problems: list[Problem],
) -> tuple[list[str], list[str]]:
    """Both answers of each battle: every contestant answers its prompts of the round in one call."""
    jobs: dict[str, list[tuple[int, str]]] = {}  # contestant -> [(battle index, side)]
    for i, (a, b) in enumerate(pairs):
        jobs.setdefault(a, []).append((i, "a"))
        jobs.setdefault(b, []).append((i, "b"))
    answers: dict[str, list[str]] = {"a": [""] * len(pairs), "b": [""] * len(pairs)}
    for name, slots in jobs.items():
        conversations = [[{"role": "user", "content": problems[i].prompt}] for i, _ in slots]
        try:
            completions = contestants[name].generate(conversations)
        except Exception as err:
            raise ContestantFailed(f"contestant {name!r} failed: {err}") from err
        for (i, side), completion in zip(slots, completions):
            answers[side][i] = answer_text(completion)
    return answers["a"], answers["b"]


def run_headless(
    contestants: Mapping[str, Contestant],
    task: Task,
    num_battles: int,
    judge: Judge,
    *,
    store: ArenaStore | None = None,
    seed: int = 0,
    batch_size: int = 32,
    split: str = "test",
    progress: bool = False,
) -> HeadlessResult:
    """Run `num_battles` battles between the contestants (at least two) and return the voted ones."""
    if len(contestants) < 2:
        raise ValueError(f"headless battles need at least two contestants, got {list(contestants)}")
    if num_battles < 1 or batch_size < 1:
        raise ValueError(f"need num_battles >= 1 and batch_size >= 1, got {num_battles}, {batch_size}")
    problems = task.problems(split, n=num_battles)
    if not problems:
        raise ValueError(f"task {task.name!r} has no {split!r} problems")
    rng = random.Random(seed)
    names = list(contestants)
    result = HeadlessResult()
    bar = tqdm(total=num_battles, desc="battles", unit="battle", disable=not progress)
    for start in range(0, num_battles, batch_size):
        count = min(batch_size, num_battles - start)
        round_problems = [problems[(start + j) % len(problems)] for j in range(count)]
        pairs = [pick_pair(names, rng) for _ in range(count)]
        answers_a, answers_b = run_round(contestants, pairs, round_problems)
        try:
            winners = judge.vote(round_problems, answers_a, answers_b)
        except Exception as err:
            raise ContestantFailed(f"{judge.name} failed: {err}") from err
        for problem, (a, b), ans_a, ans_b, winner in zip(
            round_problems, pairs, answers_a, answers_b, winners
        ):
            if winner is None:
                result.unjudged += 1
                continue
            conv_a = [{"role": "user", "content": problem.prompt}, {"role": "assistant", "content": ans_a}]
            conv_b = [{"role": "user", "content": problem.prompt}, {"role": "assistant", "content": ans_b}]
            if store is not None:
                battle_id = store.create_battle(a, b, conv_a, conv_b)
                result.battles.append(store.record_vote(battle_id, winner, voter=judge.name).to_record())
            else:
                record = {"model_a": a, "model_b": b, "winner": winner, "conversation_a": conv_a}
                result.battles.append(
                    validate_record({**record, "conversation_b": conv_b, "tstamp": time.time()})
                )
        bar.update(count)
    bar.close()
    return result
