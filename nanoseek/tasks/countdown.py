"""Countdown: reach a target number from given numbers with + - * /, each number at most once.

    task = CountdownTask(num_numbers=4, max_number=25)
    p = task.problems("test", n=1)[0]
    p.prompt        # "Using the numbers 3, 5, 4, 9, make 32. ..."
    task.score(p, "\\boxed{(3 + 5) * 4}")   # (1.0, {...})
    task.score(p, "\\boxed{8 * 4}")         # (0.0, {... "error": "uses numbers not given: 8"})

A proposed expression is parsed with `ast` and walked, never `eval`ed: only non-negative integer
literals, + - * / and parentheses are allowed, division is exact (fractions), and the multiset of
numbers used must fit within the numbers given (with `use_all`, equal them). Knobs: `num_numbers`,
`max_number` (numbers are 1..max_number), `max_target`, `use_all`.

From a file (`CountdownFile`, what "countdown:FILE" and "countdown?train=A&test=B" build): TinyZero's
format, the rows of Jiayi-Pan/Countdown-Tasks-3to4 (`target`, `nums`) or of TinyZero's prepared
parquet (`reward_model.ground_truth.target` / `.numbers`; its `prompt` column is not used: the
question is asked in our words and the rollout template wraps it). Scored by the same
`check_expression`, with `use_all=True` by default: TinyZero's reward wants every number exactly once.

    task = get_task("countdown?train=countdown_train.parquet&test=countdown_test.parquet")
    task = get_task("countdown:countdown.jsonl?holdout=0.05&seed=0")
"""

import ast
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from nanoseek.tasks.base import ANSWER_INSTRUCTION, Problem, Task
from nanoseek.tasks.files import DataError, FileTask, Where
from nanoseek.tasks.synthetic import SyntheticTask, answer_line
from nanoseek.verify import extract_answer

OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
MAX_EXPRESSION_CHARS = 200


def parse_expression(text: str) -> ast.expr:
    """The AST of an arithmetic expression; raises ValueError for anything else."""
    text = text.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/")
    text = text.replace("×", "*").replace("÷", "/").replace("\\left", "").replace("\\right", "")
    text = text.split("=")[0].strip()  # "(3 + 5) * 4 = 32" proposes the left side
    if not text or len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError("empty or too long")
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ValueError(f"not an expression: {text!r}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp):
            if type(node.op) not in OPERATORS:
                raise ValueError(f"operator not allowed: {type(node.op).__name__}")
        elif isinstance(node, ast.Constant):
            if type(node.value) is not int or node.value < 0:
                raise ValueError(f"not a whole number: {node.value!r}")
        elif not isinstance(node, ast.operator):
            raise ValueError(f"not allowed: {type(node).__name__}")
    return tree


def numbers_used(tree: ast.expr) -> list[int]:
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)]


def evaluate(tree: ast.expr) -> Fraction:
    """Exact value of a checked expression tree; ZeroDivisionError on division by zero."""
    if isinstance(tree, ast.Constant):
        return Fraction(tree.value)
    left, right = evaluate(tree.left), evaluate(tree.right)
    if isinstance(tree.op, ast.Add):
        return left + right
    if isinstance(tree.op, ast.Sub):
        return left - right
    if isinstance(tree.op, ast.Mult):
        return left * right
    return left / right


def check_expression(text: str, numbers: list[int], target: int, use_all: bool = False) -> tuple[bool, str]:
    """(correct, why not) for a proposed Countdown expression; "why not" is "" when correct."""
    try:
        tree = parse_expression(text)
    except ValueError as e:
        return False, str(e)
    used, given = Counter(numbers_used(tree)), Counter(numbers)
    if used - given:
        extra = ", ".join(str(n) for n in sorted((used - given).elements()))
        return False, f"uses numbers not given (or more often than given): {extra}"
    if use_all and used != given:
        return False, "does not use every number"
    try:
        value = evaluate(tree)
    except ZeroDivisionError:
        return False, "division by zero"
    if value != target:
        return False, f"evaluates to {value}, not {target}"
    return True, ""


def countdown_question(numbers: list[int], target: int, use_all: bool) -> str:
    listed = ", ".join(map(str, numbers))
    rule = "all of them exactly once" if use_all else "each at most once"
    return f"Using the numbers {listed}, make {target}. You may use + - * / and parentheses, {rule}."


class CountdownScoring(Task):
    """Countdown's scorer, for problems whose meta holds `numbers` and `target`; needs `self.use_all`."""

    use_all: bool = False

    def extract(self, problem: Problem, answer: str) -> tuple[str | None, str]:
        """The expression: in \\boxed{} or after "the answer is", else the whole answer when it is one
        (R1-Zero's and TinyZero's `<answer> (1 + 2) * 3 </answer>`), else what `extract_answer` finds."""
        extracted, how = extract_answer(answer)
        if how not in ("boxed", "answer_is"):
            try:
                return ast.unparse(parse_expression(answer.strip())), "expression"
            except ValueError:
                pass
        if extracted is None:
            return None, how
        try:
            return ast.unparse(parse_expression(extracted)), how
        except ValueError:
            return re.sub(r"\s+", "", extracted), how

    def score_batch(
        self, problems: Sequence[Problem], completions: Sequence[str]
    ) -> list[tuple[float, dict[str, Any]]]:
        results = super().score_batch(problems, completions)
        for problem, (_, details) in zip(problems, results):
            why_not = self._check(problem, details["extracted"])[1] if details["extracted"] else "no answer"
            details["error"] = why_not or None
        return results

    def check_batch(self, problems: Sequence[Problem], answers: Sequence[str | None]) -> list[bool]:
        return [a is not None and self._check(p, a)[0] for p, a in zip(problems, answers)]

    def _check(self, problem: Problem, expression: str) -> tuple[bool, str]:
        return check_expression(expression, problem.meta["numbers"], problem.meta["target"], self.use_all)


class CountdownTask(CountdownScoring, SyntheticTask):
    name = "countdown"

    def __init__(
        self,
        num_numbers: int = 4,
        max_number: int = 25,
        max_target: int = 200,
        use_all: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_numbers < 2 or max_number < 2 or max_target < 2:
            raise ValueError("countdown: need num_numbers, max_number and max_target all >= 2")
        self.num_numbers, self.max_number = num_numbers, max_number
        self.max_target, self.use_all = max_target, use_all

    def generate(self, rng: random.Random) -> tuple[str, str, str, dict[str, Any]]:
        while True:
            numbers = [rng.randint(1, self.max_number) for _ in range(self.num_numbers)]
            k = self.num_numbers if self.use_all else rng.randint(2, self.num_numbers)
            items = [(n, str(n)) for n in rng.sample(numbers, k)]  # (value, expression)
            steps = []
            while len(items) > 1:
                (x, ex), (y, ey) = items.pop(rng.randrange(len(items))), items.pop(rng.randrange(len(items)))
                if x < y:
                    (x, ex), (y, ey) = (y, ey), (x, ex)
                ops = ["+", "*"] + (["-"] if x > y else []) + (["/"] if y > 1 and x % y == 0 else [])
                op = rng.choice(ops)
                value = {"+": x + y, "-": x - y, "*": x * y, "/": x // y}[op]  # all values stay >= 1
                steps.append(f"{x} {op} {y} = {value}")
                items.append((value, f"({ex} {op} {ey})"))
            target, expression = items[0]
            if 1 <= target <= self.max_target and target not in numbers:
                break
        expression = ast.unparse(ast.parse(expression, mode="eval"))  # minimal parentheses
        question = countdown_question(numbers, target, self.use_all)
        key = f"{sorted(numbers)}->{target}"
        meta = {"numbers": numbers, "target": target, "steps": steps, "expression": expression}
        return key, self.ask(question), str(target), meta

    def solution_trace(self, problem: Problem) -> str:
        numbers, target = problem.meta["numbers"], problem.meta["target"]
        rule = "all of them exactly once" if self.use_all else "each at most once"
        lines = [f"We need {target} from {', '.join(map(str, numbers))}, using {rule}."]
        lines += problem.meta["steps"]
        lines.append(f"That reaches {target}, so the expression is {problem.meta['expression']}.")
        return "\n".join(lines + [answer_line(problem.meta["expression"])])


class CountdownFile(CountdownScoring, FileTask):
    """Countdown problems from files in TinyZero's format (module docstring); splits as in files.py."""

    name = "countdown"

    def __init__(
        self, path: str | None = None, use_all: bool = True, instruction: str = ANSWER_INSTRUCTION, **files
    ):
        super().__init__(path, **files)
        self.use_all, self.instruction = use_all, instruction

    def parse_row(self, row: dict[str, Any], where: Where) -> Problem:
        if "target" not in row and isinstance(row.get("reward_model"), dict):  # TinyZero's prepared parquet
            truth = row["reward_model"].get("ground_truth")
            if not isinstance(truth, dict):
                raise DataError(
                    where, None, "reward_model.ground_truth", f"expected an object, got {truth!r:.80}"
                )
            target = whole_number(truth.get("target"), where, "reward_model.ground_truth.target")
            numbers = number_list(truth.get("numbers"), where, "reward_model.ground_truth.numbers")
        else:
            if "target" not in row:
                raise DataError(
                    where, None, "target", f"missing (the record's fields: {', '.join(map(repr, row))})"
                )
            target = whole_number(row["target"], where, "target")
            name = next((n for n in ("nums", "numbers") if n in row), "nums")
            numbers = number_list(row.get(name), where, name)
        question = f"{countdown_question(numbers, target, self.use_all)} {self.instruction}".strip()
        meta = {"numbers": numbers, "target": target}
        return Problem(id=f"{self.name}-{where.record}", prompt=question, reference=str(target), meta=meta)


def whole_number(value: Any, where: Where, field: str) -> int:
    """A non-negative whole number from a JSON/parquet/CSV cell (7, 7.0, "7", numpy ints)."""
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        value = value.item()
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or value < 0:
        raise DataError(where, None, field, f"must be a whole number >= 0, got {value!r:.80}")
    return value


def number_list(value: Any, where: Where, field: str) -> list[int]:
    """At least two whole numbers from a list cell (a list, a numpy array, or a JSON list in a CSV cell)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(where, None, field, f"expected a list of numbers, got {value!r:.80}") from None
    if hasattr(value, "tolist"):  # numpy / arrow arrays
        value = value.tolist()
    if not isinstance(value, list | tuple) or len(value) < 2:
        raise DataError(where, None, field, f"expected a list of at least 2 numbers, got {value!r:.80}")
    return [whole_number(v, where, field) for v in value]
