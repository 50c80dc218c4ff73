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
"""

import ast
import random
import re
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from nanoseek.tasks.base import Problem
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


class CountdownTask(SyntheticTask):
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
        listed = ", ".join(map(str, numbers))
        rule = "all of them exactly once" if self.use_all else "each at most once"
        question = f"Using the numbers {listed}, make {target}. You may use + - * / and parentheses, {rule}."
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

    def extract(self, problem: Problem, answer: str) -> tuple[str | None, str]:
        extracted, how = extract_answer(answer)
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
