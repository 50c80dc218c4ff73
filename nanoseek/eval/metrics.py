"""The metrics DeepSeek reports for R1: pass@1 over k samples, the unbiased pass@k, and cons@k.

    from nanoseek.eval.metrics import pass_at_k, majority_vote, cons_at_k, mean
    pass_at_k(n=8, c=3, k=1)                         # 0.375 = c / n
    pass_at_k(n=8, c=3, k=4)                         # 1 - C(5,4)/C(8,4) = 13/14
    majority_vote(["4", None, "5", "5", "4"])        # ("4", 0): a 2-2 tie, "4" occurred first
    cons_at_k(["4", "5", "5"], [True, False, False]) # False: the majority answer "5" is wrong

Definitions (DeepSeek-R1 paper, section 3.1; Chen et al. 2021 for pass@k):
- pass@1 of one problem = c / n, the mean correctness of its n samples (R1 samples n = 4..64 at
  temperature 0.6, top-p 0.95); the benchmark's pass@1 is the mean over problems.
- pass@k (k <= n) = 1 - C(n - c, k) / C(n, k): the probability that at least one of k samples drawn
  without replacement from the n is correct. Unbiased, unlike 1 - (1 - c/n)^k. Computed as the
  product 1 - prod_{i = n-c+1}^{n} (1 - k / i), which never forms the huge binomials.
- cons@k (majority voting, also maj@k) = whether the most frequent answer among the first k samples is
  correct. Samples without an answer (None) do not vote; a problem with no answer at all fails.
  Tie rule: among the answers with the highest count, the one that occurs FIRST (lowest sample index)
  wins. Samples are ordered by their sample index, never by the order they finished in, so the vote
  is deterministic and the same for a resumed run. Answers vote together when their normalized keys
  (`Task.answer_key`) are equal strings; "1/2" and "0.5" are different votes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` correct samples out of `n`: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n:
        raise ValueError(f"pass@k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k: need 1 <= k <= n, got k={k}, n={n} (sample at least k per problem)")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean; NaN for an empty sequence (a metric over no problems is undefined)."""
    return sum(values) / len(values) if len(values) else float("nan")


def majority_vote(keys: Sequence[str | None]) -> tuple[str | None, int | None]:
    """(the most frequent non-None key, the index of its first occurrence); ties go to the key that
    occurs first. (None, None) when no sample has an answer."""
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    if not counts:
        return None, None
    winner = min(counts, key=lambda key: (-counts[key], first[key]))
    return winner, first[winner]


def cons_at_k(keys: Sequence[str | None], correct: Sequence[bool], k: int | None = None) -> bool:
    """Whether the majority answer of the first `k` samples (all when None) is correct. `keys[i]` is
    sample i's answer key and `correct[i]` its verdict; the winner's verdict is that of its first sample."""
    if len(keys) != len(correct):
        raise ValueError(f"cons@k: {len(keys)} answer keys but {len(correct)} verdicts")
    k = len(keys) if k is None else k
    if not 1 <= k <= len(keys):
        raise ValueError(f"cons@k: need 1 <= k <= {len(keys)} samples, got k={k}")
    _, index = majority_vote(keys[:k])
    return index is not None and bool(correct[index])


def problem_metrics(
    keys: Sequence[str | None], correct: Sequence[bool], ks: Sequence[int]
) -> dict[str, float]:
    """pass@1, pass@k for each k in `ks` (those <= n) and cons@n for one problem's n samples."""
    n, c = len(correct), sum(map(bool, correct))
    out = {"pass@1": c / n}
    for k in ks:
        if 1 < k <= n:
            out[f"pass@{k}"] = pass_at_k(n, c, k)
    out[f"cons@{n}"] = float(cons_at_k(keys, correct))
    return out
