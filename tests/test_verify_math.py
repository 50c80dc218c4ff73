"""Math equivalence through math-verify in worker processes, and its soundness on real benchmark answers."""

import json
import random
import time
from pathlib import Path

import pytest

from nanoseek.tasks import get_task
from nanoseek.verify import MathVerifier, verify_math, verify_math_batch
from nanoseek.verify.math_equiv import quick_verdict

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared/data/benchmarks"


def test_verify_math_equivalences():
    assert verify_math("\\frac{1}{2}", "0.5")
    assert verify_math("\\frac{14}{3}", "\\dfrac{14}{3}")
    assert verify_math("x + 1", "1 + x")
    assert verify_math("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)")
    assert verify_math("90^\\circ", "90")
    assert verify_math("\\sqrt{8}", "2\\sqrt{2}")
    assert not verify_math("\\frac{1}{2}", "0.6")
    assert not verify_math("x + 1", "x - 1")
    assert not verify_math("3", None)


def test_verify_math_batch_keeps_order():
    pairs = [
        ("3", "3.0"),
        ("x+1", "1+x"),
        ("2", "3"),
        ("\\frac{1}{3}", "1/3"),
        ("7", "\\frac{14}{2}"),
        ("1", ""),
    ]
    assert verify_math_batch(pairs) == [True, True, False, True, True, False]
    assert verify_math_batch([]) == []


def test_quick_verdict_settles_only_the_obvious():
    assert quick_verdict("1,000", "1000") is True
    assert quick_verdict("025", "25") is True
    assert quick_verdict("12", "13") is False
    assert quick_verdict("0.5", "0.50000001") is None  # math-verify rounds; let it decide
    assert quick_verdict("\\frac{1}{2}", "0.5") is None
    assert quick_verdict("90^\\circ", "90°") is True
    assert quick_verdict("120", "5!") is None  # a factorial is math-verify's to evaluate


def test_degree_signs_reach_math_verify_in_a_form_it_reads():
    assert verify_math("90", "9\\cdot 10°")  # inside \boxed{} math-verify reads ^\circ, not °
    assert verify_math("100^\\circ", "1\\times 10^2\\degree")
    assert verify_math("\\frac{270}7\\text{ degrees}", "\\frac{270}{7}°")
    assert not verify_math("\\frac{270}7\\text{ degrees}", "\\frac{271}{7}°")


def test_hung_item_is_incorrect_and_its_worker_replaced():
    # 0.8 s per item is less than this comparison needs (~1.1 s), so the parent must kill the worker mid-item
    with MathVerifier(workers=1, timeout=0.8) as verifier:
        verifier.verify("\\frac{1}{2}", "1/2")  # start the worker
        old_pid = verifier.workers[0].proc.pid
        start = time.monotonic()
        results = verifier.verify_batch([("1", "9^{9^{9^{9}}}"), ("\\frac{1}{2}", "1/2"), ("\\sqrt{4}", "2")])
        assert results == [False, True, True]
        assert verifier.workers[0].proc.pid != old_pid
        assert time.monotonic() - start < 30


def test_verifier_survives_a_dead_worker():
    with MathVerifier(workers=1) as verifier:
        assert verifier.verify("\\frac{1}{2}", "1/2")
        verifier.workers[0].proc.kill()
        verifier.workers[0].proc.wait()  # dead before the next item is sent to it
        assert verifier.verify_batch([("\\frac{1}{2}", "1/2"), ("\\frac{1}{2}", "1/2")])[1]


def model_answers(gold: str) -> list[str]:
    """The two ways the acceptance test writes a gold answer as a model would."""
    boxed = f"<think>\nLet me work through it.\n</think>\n\nPutting it together, we get $\\boxed{{{gold}}}$."
    return [boxed, f"The answer is {gold}."]


def derangement(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    perm = list(range(n))
    while any(i == j for i, j in enumerate(perm)):
        rng.shuffle(perm)
    return perm


@pytest.mark.slow
@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason=f"benchmark files not found at {BENCHMARKS}")
@pytest.mark.parametrize("name, filename", [("gsm8k", "gsm8k_test.jsonl"), ("math500", "math500.jsonl")])
def test_soundness_on_real_answers(name, filename):
    """Every gold answer, written as a model would, scores correct against its own reference; paired
    with shuffled references (a seeded derangement) at most 1% score correct."""
    task = get_task(f"{name}:{BENCHMARKS / filename}")
    problems = task.problems("test")
    rows = [json.loads(line) for line in (BENCHMARKS / filename).read_text().splitlines()]
    golds = [row["answer"].rsplit("####", 1)[1].strip() if name == "gsm8k" else row["answer"] for row in rows]
    assert len(golds) == len(problems) > 0

    completions = [c for gold in golds for c in model_answers(gold)]
    own = [p for p in problems for _ in range(2)]
    results = task.score_batch(own, completions)
    wrong = [(p.reference, c) for p, c, (reward, _) in zip(own, completions, results) if reward != 1.0]
    assert not wrong, wrong[:5]

    perm = derangement(len(problems))
    shuffled = [problems[perm[i]] for i in range(len(problems)) for _ in range(2)]
    results = task.score_batch(shuffled, completions)
    # a shuffled reference that happens to be the same answer ("2" and "2") is rightly correct
    different = [task.normalize(a.reference) != task.normalize(b.reference) for a, b in zip(own, shuffled)]
    hits = sum(reward == 1.0 for (reward, _), d in zip(results, different) if d)
    assert hits <= 0.01 * sum(different), hits
