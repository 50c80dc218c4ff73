"""Answer extraction on the endings models really write, crossed with every real benchmark answer.

Every GSM8K test answer (../shared/data/benchmarks/gsm8k_test.jsonl, as the file writes it: "1,450,000")
is put into each of ENDINGS (markdown emphasis, "Answer:", "Final answer:", "####", \\boxed, currency,
trailing "!", parenthetical remarks, units, display math, ...) after a reasoning prelude that mentions
other numbers, and scored by the GSM8K task: every one must be correct. The same endings carrying a
clearly wrong answer (off by one; the right number mentioned elsewhere in the text) must all be wrong:
the false-accept rate is exactly 0. On MATH-500, degree answers (90°, 90\\degree, 90^\\circ, 90 degrees)
are accepted against their `^\\circ` references and swapped fractions are rejected.

The files are read from ../shared beside the repository (as CI clones it); without them these tests skip.
"""

import json
import re
from pathlib import Path

import pytest

from nanoseek.tasks import get_task

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared/data/benchmarks"
GSM8K = BENCHMARKS / "gsm8k_test.jsonl"
MATH500 = BENCHMARKS / "math500.jsonl"

PRELUDE = (
    "<think>\nShe has 3 + 4 = 7 of them, and 12 / 2 = 6 are left.\n</think>\n\n"
    "First, 3 + 4 = 7. Then 12 / 2 = 6, so we combine the numbers.\n\n"
)
ENDINGS = [
    "The answer is {a}.",
    "The answer is {a}!",
    "**The answer is {a}!**",
    "**Answer: {a}**",
    "Final answer: **{a}**",
    "**Final Answer:** {a}",
    "**Answer**: {a}",
    "*Answer: {a}*",
    "The answer is _{a}_.",
    "The answer is **{a}**.",
    "Answer: `{a}`",
    "#### {a}",
    "\\boxed{{{a}}}",
    "So the total is $\\boxed{{{a}}}$.",
    "The final answer is $\\boxed{{{a}}}$. I hope it is correct.",
    "\\boxed{{{a} \\text{{ apples}}}}",
    "The answer is ${a}.",
    "The answer is \\${a}.",
    "The answer is €{a}.",
    "The answer is \\({a}\\).",
    "The answer is:\n\\[\n{a}\n\\]",
    "The answer is {a} (approx.).",
    "The answer is {a} (rounded to 2 decimal places).",
    "{a} (approx.)",
    "Total = {a}.",
    "The answer is {a} apples.",
    "Answer: {a} cm",
    "So she pays {a} dollars.",
    "The answer is {a} dollars per day.",
    "Final answer: {a}, which is the total.",
    "The answer is {a}%.",
]


def gsm8k_golds() -> list[str]:
    """The final answers as the file writes them ("1,450,000", "-10")."""
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines() if line.strip()]
    return [row["answer"].rsplit("####", 1)[1].strip() for row in rows]


def as_written(value: int, like: str) -> str:
    """An integer written the way a gold answer is (with thousands separators if it has them)."""
    return f"{value:,}" if "," in like else str(value)


def score(task, problems, completions) -> list[bool]:
    return [reward == 1.0 for reward, _ in task.score_batch(problems, completions)]


def failures(cases: list[tuple[str, str]], ok: list[bool], want: bool) -> dict[str, list[str]]:
    """Cases whose verdict is not `want`, grouped by ending (a few examples each), for the message."""
    out: dict[str, list[str]] = {}
    for (ending, completion), verdict in zip(cases, ok):
        if verdict != want and len(out.setdefault(ending, [])) < 3:
            out[ending].append(completion[len(PRELUDE) :])
    return {k: v for k, v in out.items() if v}


needs_gsm8k = pytest.mark.skipif(not GSM8K.is_file(), reason=f"GSM8K test file not found at {GSM8K}")
needs_math500 = pytest.mark.skipif(not MATH500.is_file(), reason=f"MATH-500 file not found at {MATH500}")


@pytest.fixture(scope="module")
def gsm8k():
    task = get_task(f"gsm8k:{GSM8K}")
    problems = task.problems("test")
    golds = gsm8k_golds()
    assert len(golds) == len(problems) == 1319
    return task, problems, golds


@needs_gsm8k
def test_every_ending_of_every_gsm8k_answer_is_accepted(gsm8k):
    task, problems, golds = gsm8k
    cases = [(e, PRELUDE + e.format(a=gold)) for gold in golds for e in ENDINGS]
    own = [p for p in problems for _ in ENDINGS]
    ok = score(task, own, [c for _, c in cases])
    assert all(ok), failures(cases, ok, True)


@needs_gsm8k
def test_clearly_wrong_gsm8k_answers_are_never_accepted(gsm8k):
    task, problems, golds = gsm8k
    cases, own = [], []
    for problem, gold in zip(problems, golds):
        value = int(gold.replace(",", ""))
        for wrong in (value + 1, value - 1):  # off by one, in every ending
            for e in ENDINGS:
                cases.append((e, PRELUDE + e.format(a=as_written(wrong, gold))))
                own.append(problem)
        wrong = as_written(value + 1, gold)
        for e in ("The answer is {w} (not {g}).", "**Answer: {w}** ({g} was my first guess)",
                  "I first got {g}, but the answer is {w}.", "At first {g}.\n\n#### {w}",
                  "We had {g} before; now the total is {w}.", "So {g} + 1 = {w}."):  # fmt: skip
            cases.append((e, PRELUDE + e.format(w=wrong, g=gold)))  # the right number elsewhere
            own.append(problem)
    ok = score(task, own, [c for _, c in cases])
    assert not any(ok), (f"{sum(ok)} of {len(ok)} wrong answers accepted", failures(cases, ok, False))


def math500_rows() -> list[dict]:
    return [json.loads(line) for line in MATH500.read_text().splitlines() if line.strip()]


MATH_ENDINGS = ["\\boxed{{{x}}}", "The answer is ${x}$.", "**Answer:** ${x}$", "The answer is {x}."]
DEGREE_FORMS = ["{n}°", "{n}\\degree", "{n}^\\circ", "{n}^{{\\circ}}", "{n} degrees", "{n}\\,^\\circ", "{n}"]


@needs_math500
def test_math500_degree_answers():
    task = get_task(f"math500:{MATH500}")
    by_id = {p.id.removeprefix("math500-"): p for p in task.problems("test")}
    degrees = [
        (by_id[row["unique_id"]], match.group(1))
        for row in math500_rows()
        if (match := re.fullmatch(r"(\d+)\^\\circ", row["answer"]))
    ]
    assert len(degrees) >= 10  # 14 in the file
    right, wrong = [], []
    for problem, n in degrees:
        for form in DEGREE_FORMS:
            for e in MATH_ENDINGS:
                right.append((problem, PRELUDE + e.format(x=form.format(n=n))))
                wrong.append((problem, PRELUDE + e.format(x=form.format(n=int(n) + 1))))
    ok = score(task, *zip(*right))
    assert all(ok), [c[len(PRELUDE) :] for (_, c), v in zip(right, ok) if not v][:10]
    ok = score(task, *zip(*wrong))
    assert not any(ok), [c[len(PRELUDE) :] for (_, c), v in zip(wrong, ok) if v][:10]


@needs_math500
def test_math500_fractions_swapped_are_rejected():
    task = get_task(f"math500:{MATH500}")
    by_id = {p.id.removeprefix("math500-"): p for p in task.problems("test")}
    fractions = [
        (by_id[row["unique_id"]], match.group(1), match.group(2), match.group(3))
        for row in math500_rows()
        if (match := re.fullmatch(r"(-?)\\d?frac\{(\d+)\}\{(\d+)\}", row["answer"]))
        and match.group(2) != match.group(3)
    ]
    assert len(fractions) >= 20
    right, wrong = [], []
    for problem, sign, a, b in fractions:
        for e in MATH_ENDINGS[:3]:
            right.append((problem, PRELUDE + e.format(x=f"{sign}\\frac{{{a}}}{{{b}}}")))
            wrong.append((problem, PRELUDE + e.format(x=f"{sign}\\frac{{{b}}}{{{a}}}")))
        wrong.append((problem, PRELUDE + f"The answer is {sign}{b}/{a}."))
    ok = score(task, *zip(*right))
    assert all(ok), [c[len(PRELUDE) :] for (_, c), v in zip(right, ok) if not v][:10]
    ok = score(task, *zip(*wrong))
    assert not any(ok), [c[len(PRELUDE) :] for (_, c), v in zip(wrong, ok) if v][:10]
