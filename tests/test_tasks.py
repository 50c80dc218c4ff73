"""Synthetic tasks: deterministic, disjoint splits, solution traces that score 1, wrong answers that
score 0, Countdown's expression checking, and the registry."""

import pytest

from nanoseek.tasks import (
    ArithmeticTask,
    CountdownTask,
    LinearEquationTask,
    Problem,
    SortTask,
    get_task,
)
from nanoseek.tasks.countdown import check_expression
from nanoseek.tasks.synthetic import answer_line

SYNTHETIC = [
    ArithmeticTask(digits=1),
    ArithmeticTask(digits=4),
    ArithmeticTask(digits=3, ops="*"),
    CountdownTask(),
    CountdownTask(num_numbers=3, use_all=True),
    LinearEquationTask(steps=1),
    LinearEquationTask(steps=2, max_coef=12),
    SortTask(length=6),
]
IDS = [f"{t.name}-{i}" for i, t in enumerate(SYNTHETIC)]


def wrong_answer(task, problem: Problem) -> str:
    """A wrong final answer of the right shape."""
    if isinstance(task, CountdownTask):
        return str(problem.meta["numbers"][0])  # a valid expression; targets are never a given number
    if isinstance(task, SortTask):
        return ", ".join(reversed(problem.reference.split(", ")))
    return str(int(problem.reference) + 1)


@pytest.mark.parametrize("task", SYNTHETIC, ids=IDS)
def test_deterministic_by_seed(task):
    first = task.problems("train", n=50)
    assert first == task.problems("train", n=50)
    assert first[:20] == task.problems("train", n=20)
    other = type(task)(**{**vars(task), "seed": task.seed + 1})
    if not (isinstance(task, ArithmeticTask) and task.digits == 1):  # 1-digit sums: a tiny space
        assert [p.prompt for p in other.problems("train", n=50)] != [p.prompt for p in first]


@pytest.mark.parametrize("task", SYNTHETIC, ids=IDS)
def test_train_and_test_never_share_a_problem(task):
    test = task.problems("test", n=200)
    assert len({p.id for p in test}) == len(test) > 0  # unique within a split
    for seed in (task.seed, task.seed + 7):  # disjoint whatever the seeds
        train = type(task)(**{**vars(task), "seed": seed}).problems("train", n=2000)
        assert not {p.prompt for p in train} & {p.prompt for p in test}
        assert not {p.id for p in train} & {p.id for p in test}


def test_small_problem_spaces_run_out_instead_of_looping():
    task = ArithmeticTask(digits=1, ops="+")  # 90 problems in all, ~9 of them in test
    test = task.problems("test", n=1000)
    train = task.problems("train", n=1000)
    assert 0 < len(test) < 30 and len(test) + len(train) <= 90


@pytest.mark.parametrize("task", SYNTHETIC, ids=IDS)
def test_solution_traces_score_one(task):
    for problem in task.problems("test", n=100):
        trace = task.solution_trace(problem)
        assert trace.splitlines()[-1].startswith("The answer is \\boxed{")
        reward, details = task.score(problem, trace)
        assert reward == 1.0 and details["correct"], (problem, trace, details)
        assert details["format"] == "boxed"
        # as an R1 completion: the reasoning in the think block, the answer line after it
        reasoning, answer = trace.rsplit("\n", 1)
        completion = f"<think>\n{reasoning}\n</think>\n\n{answer}"
        reward, details = task.score(problem, completion)
        assert reward == 1.0 and details["format_reward"] == 1.0


@pytest.mark.parametrize("task", SYNTHETIC, ids=IDS)
def test_wrong_answers_score_zero(task):
    problems = task.problems("test", n=50)
    completions = [answer_line(wrong_answer(task, p)) for p in problems]
    for reward, details in task.score_batch(problems, completions):
        assert reward == 0.0 and not details["correct"] and details["extracted"] is not None
    assert task.score(problems[0], "I have no idea.")[0] == 0.0


def test_unfinished_thinking_has_no_answer():
    task = ArithmeticTask()
    problem = task.problems("test", n=1)[0]
    reward, details = task.score(problem, f"<think>\nmaybe \\boxed{{{problem.reference}}}")
    assert reward == 0.0 and details["extracted"] is None


def test_answer_formats_and_keys():
    task = ArithmeticTask(digits=4, ops="*")
    problem = task.problems("test", n=1)[0]
    n = int(problem.reference)
    forms = {
        "boxed": f"\\boxed{{{n:,}}}",
        "answer_is": f"The answer is {n}.",
        "hash": f"#### {n}",
        "last_number": f"so it is {n}",
    }
    for how, completion in forms.items():
        reward, details = task.score(problem, completion)
        assert reward == 1.0 and details["format"] == how and details["extracted"] == str(n)
        assert task.answer_key(problem, completion) == str(n)


def test_linear_accepts_x_equals():
    task = LinearEquationTask(steps=2)
    problem = task.problems("test", n=1)[0]
    assert task.score(problem, f"\\boxed{{x = {problem.reference}}}")[0] == 1.0


def test_sort_accepts_brackets_but_not_a_guess():
    task = SortTask()
    problem = task.problems("test", n=1)[0]
    assert task.score(problem, f"The answer is [{problem.reference}].")[0] == 1.0
    assert task.score(problem, f"then {problem.reference.split(', ')[-1]}")[0] == 0.0


NUMBERS, TARGET = [3, 5, 4, 9], 32


@pytest.mark.parametrize(
    "expression, ok, why",
    [
        ("(3 + 5) * 4", True, ""),
        ("(3+5)*4 = 32", True, ""),
        ("(3 \\times 5 - 9) * 4 + 9 - 1", False, "not given"),  # 1 is not given
        ("(3 + 5) * 4 * 1", False, "not given"),
        ("(5 + 3) * 4 + 9 - 9", False, "not given"),  # 9 used twice
        ("(3 + 5) * (4 + 4)", False, "not given"),  # 4 used twice
        ("8 * 4", False, "not given"),
        ("2 ** 5", False, "Pow"),
        ("-(3 - 5) * 4 * 4", False, "UnaryOp"),
        ("__import__('os').system('echo pwned')", False, "not allowed"),
        ("(lambda: 32)()", False, "not allowed"),
        ("32.0", False, "whole number"),
        ("9 / (5 - 5)", False, "not given"),
        ("9 / (4 - 4)", False, "not given"),
        ("3 + ", False, "not an expression"),
        ("(" * 150 + "3" + ")" * 150, False, "too long"),
    ],
)
def test_countdown_expression_checking(expression, ok, why):
    correct, reason = check_expression(expression, NUMBERS, TARGET)
    assert correct == ok and why in reason


def test_countdown_division_and_use_all():
    assert check_expression("9 / 3 + 5", [9, 3, 5], 8) == (True, "")
    assert check_expression("5 / (9 - 9)", [9, 9, 5], 0)[1] == "division by zero"
    assert check_expression("(9 + 3) / 5 * 5", [9, 3, 5, 5], 12)[0]  # exact fractions, not floats
    assert not check_expression("(3 + 5) * 4", NUMBERS, TARGET, use_all=True)[0]
    assert check_expression("(3 + 5) * 4 + 9 - 9", [3, 5, 4, 9, 9], TARGET, use_all=True)[0]


def test_countdown_scores_with_reasons():
    task = CountdownTask()
    problem = Problem(id="p", prompt="", reference="32", meta={"numbers": NUMBERS, "target": TARGET})
    assert task.score(problem, "\\boxed{(3 + 5) * 4}") == (
        1.0,
        {"extracted": "(3+5)*4", "correct": True, "format": "boxed", "format_reward": 0.0, "error": None},
    )
    reward, details = task.score(problem, "The answer is 8 * 4.")
    assert reward == 0.0 and "not given" in details["error"]


def test_registry():
    assert isinstance(get_task("arithmetic", digits=2), ArithmeticTask)
    assert get_task("countdown", num_numbers=3).num_numbers == 3
    for name in ("linear", "sort", "gsm8k", "math500", "aime24", "amc23", "mmlu", "humaneval"):
        assert get_task(name).name == name
    assert str(get_task("gsm8k:/data/gsm8k.jsonl").path) == "/data/gsm8k.jsonl"
    with pytest.raises(KeyError, match="unknown task"):
        get_task("nope")
    with pytest.raises(ValueError, match="generated"):
        get_task("arithmetic:/some/file.jsonl")


def test_bad_knobs_raise():
    with pytest.raises(ValueError):
        ArithmeticTask(ops="/")
    with pytest.raises(ValueError):
        LinearEquationTask(steps=3)
    with pytest.raises(ValueError):
        SortTask(length=1)
    with pytest.raises(ValueError):
        ArithmeticTask().problems("validation")
