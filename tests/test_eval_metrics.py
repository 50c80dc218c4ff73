"""Eval metrics against hand computations: the unbiased pass@k, majority votes with ties, summaries."""

import math
import random

import pytest

from nanoseek.eval import EvalConfig
from nanoseek.eval.metrics import cons_at_k, majority_vote, mean, pass_at_k, problem_metrics
from nanoseek.eval.report import markdown_table, summarize


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 1, 2 / 5),  # pass@1 = c / n
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (8, 3, 4, 1 - 5 / 70),  # 1 - C(5,4)/C(8,4) = 13/14
        (10, 1, 5, 0.5),  # one correct of 10, 5 drawn: it is in half the subsets
        (4, 0, 3, 0.0),
        (4, 4, 1, 1.0),
        (5, 3, 3, 1.0),  # n - c = 2 < k = 3: every 3-subset holds a correct one
        (6, 2, 6, 1.0),
    ],
)
def test_pass_at_k_by_hand(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_exact_binomials_and_is_stable():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 60)
        c, k = rng.randint(0, n), rng.randint(1, n)
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    # huge n: binomials of this size overflow floats, the product form does not
    assert pass_at_k(10_000, 1, 5_000) == pytest.approx(0.5)
    assert pass_at_k(10_000, 3, 1) == pytest.approx(3e-4)
    # never below pass@1, and non-decreasing in k
    values = [pass_at_k(16, 3, k) for k in range(1, 17)]
    assert values == sorted(values) and values[0] == pytest.approx(3 / 16)


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_majority_vote_and_the_tie_rule():
    assert majority_vote(["4", "5", "5"]) == ("5", 1)
    # ties go to the answer that occurs first (lowest sample index)
    assert majority_vote(["4", "5", "5", "4"]) == ("4", 0)
    assert majority_vote(["5", "4", "4", "5"]) == ("5", 0)
    assert majority_vote(["7", "4", "5", "5", "4"]) == ("4", 1)  # 4 and 5 tie at 2, 4 first at index 1
    # samples without an answer do not vote, however many they are
    assert majority_vote([None, None, None, "3"]) == ("3", 3)
    assert majority_vote([None, None]) == (None, None)
    assert majority_vote([]) == (None, None)


def test_cons_at_k():
    keys, correct = ["1", "2", "2"], [True, False, False]
    assert cons_at_k(keys, correct) is False  # "2" wins 2 to 1 and is wrong
    assert cons_at_k(keys, correct, k=1) is True  # only the first sample votes
    assert cons_at_k(keys, correct, k=2) is True  # 1-1 tie: the first answer "1" wins
    assert cons_at_k([None, None], [False, False]) is False  # no answer at all fails
    assert cons_at_k([None, "9", "9"], [False, True, True]) is True
    with pytest.raises(ValueError):
        cons_at_k(["1"], [True, False])
    with pytest.raises(ValueError):
        cons_at_k(["1"], [True], k=2)


def test_problem_metrics():
    m = problem_metrics(["3", "4", "3", None], [True, False, True, False], ks=[1, 2, 4, 8])
    assert m["pass@1"] == 0.5
    assert m["pass@2"] == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
    assert m["pass@4"] == 1.0
    assert "pass@8" not in m  # k > n is not estimable
    assert m["cons@4"] == 1.0
    assert math.isnan(mean([]))


def record(task, pid, index, j, extracted, correct, prompt_tokens=10, completion_tokens=20, **extra):
    return {
        "task": task,
        "problem_id": pid,
        "problem_index": index,
        "sample": j,
        "extracted": extracted,
        "correct": correct,
        "format_reward": 1.0,
        "finish_reason": "stop",
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        **extra,
    }


def test_summary_by_hand():
    cfg = EvalConfig(tasks=["arithmetic", "mmlu"], k=4, pass_ks=[2], input_price=1.0, output_price=2.0)
    # problem a: answers 5 5 6 6 (correct 5): c = 2, cons: 5-6 tie, 5 first -> correct
    # problem b: answers 9 8 8 None (correct 9): c = 1, cons: 8 wins -> wrong
    # problem c: only 3 of 4 samples: incomplete, not counted
    recs = [record("arithmetic", "a", 0, j, x, x == "5") for j, x in enumerate(["5", "5", "6", "6"])]
    recs += [record("arithmetic", "b", 1, j, x, x == "9") for j, x in enumerate(["9", "8", "8", None])]
    recs += [record("arithmetic", "c", 2, j, "1", True) for j in range(3)]
    recs[4]["finish_reason"] = "length"
    mc = [
        record("mmlu", "q1", 0, 0, "A", True, 0, 0, correct_norm=False),
        record("mmlu", "q2", 1, 0, "B", False, 0, 0, correct_norm=True),
        record("mmlu", "q3", 2, 0, "C", True, 0, 0, correct_norm=True),
    ]
    s = summarize(
        recs + mc,
        cfg,
        "m",
        ["arithmetic", "mmlu"],
        {"arithmetic": "generate", "mmlu": "likelihood"},
        {"arithmetic": 3, "mmlu": 3},
    )
    t = s["tasks"]["arithmetic"]
    assert t["complete_problems"] == 2 and t["problems"] == 3 and t["samples"] == 8
    assert t["pass@1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert t["pass@2"] == pytest.approx(
        ((1 - 1 / 6) + (1 - 3 / 6)) / 2
    )  # 1 - C(2,2)/C(4,2), 1 - C(3,2)/C(4,2)
    assert t["pass@4"] == 1.0
    assert t["cons@4"] == 0.5
    assert t["truncated_rate"] == 1 / 8
    assert t["prompt_tokens"] == 11 * 10 and t["completion_tokens"] == 11 * 20  # every sample is billed
    assert t["cost_usd"] == pytest.approx((110 * 1.0 + 220 * 2.0) / 1e6)
    m = s["tasks"]["mmlu"]
    assert (m["acc"], m["acc_norm"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert s["complete"] is False and s["total"]["samples"] == 14
    # error bars by hand: pass@1 per problem 0.5, 0.25: se = sd / sqrt(2) = 0.125; 2 problems give
    # bootstrap means 0.25, 0.375, 0.5 (a quarter of the draws at each end): the 95% interval is the ends.
    # From sampling alone: sqrt(0.5 * 0.5 / 3 + 0.25 * 0.75 / 3) / 2 (m (1 - m) / (n - 1) per problem)
    bars = t["error_bars"]
    assert bars["pass@1"]["se"] == pytest.approx(0.125) and bars["pass@1"]["ci95"] == [0.25, 0.5]
    assert bars["pass@1"]["rerun_se"] == pytest.approx(math.sqrt(0.25 / 3 + 0.1875 / 3) / 2)
    assert bars["cons@4"]["se"] == pytest.approx(0.5) and bars["pass@4"] == {"se": 0.0, "ci95": [1.0, 1.0]}
    # acc per problem 1, 0, 1: a resample of all three draws the 0 with probability 1/27 > 2.5%
    assert m["error_bars"]["acc"]["se"] == pytest.approx(math.sqrt(1 / 3) / math.sqrt(3))
    assert m["error_bars"]["acc"]["ci95"] == [0.0, 1.0]
    table = markdown_table(s)
    assert (
        "| arithmetic | 2/3 | 4 | 37.5 | ±12.5 | [25.0, 50.0] | 66.7 | 100.0 | 50.0 | [0.0, 100.0] |" in table
    )
    assert "| mmlu | 3/3 | 66.7 | ±33.3 | [0.0, 100.0] | 66.7 | [0.0, 100.0] |" in table
    assert "- arithmetic: pass@1 ±19.1 from sampling alone" in table
