"""Multi-digit addition, subtraction and multiplication, with column-by-column solution traces.

    task = ArithmeticTask(digits=4, ops="+-*")
    p = task.problems("test", n=1)[0]
    p.prompt             # "What is 4821 + 937? Please reason step by step, ..."
    task.solution_trace(p)

    Add 4821 and 937 column by column, starting from the ones.
    column 1: 1 + 7 + carry 0 = 8, write 8, carry 0
    ...
    So 4821 + 937 = 5758.
    The answer is \\boxed{5758}.

`digits` is the difficulty knob: each operand has between 1 and `digits` digits, the first one exactly
`digits`. Subtraction keeps the result non-negative.
"""

import random
from collections.abc import Sequence
from typing import Any

from nanoseek.tasks.base import Problem
from nanoseek.tasks.synthetic import SyntheticTask, answer_line
from nanoseek.verify import normalize_number


def column_add(a: int, b: int) -> list[str]:
    lines = [f"Add {a} and {b} column by column, starting from the ones."]
    xs, ys = str(a)[::-1], str(b)[::-1]
    carry = 0
    for i in range(max(len(xs), len(ys))):
        x = int(xs[i]) if i < len(xs) else 0
        y = int(ys[i]) if i < len(ys) else 0
        total = x + y + carry
        lines.append(
            f"column {i + 1}: {x} + {y} + carry {carry} = {total}, write {total % 10}, carry {total // 10}"
        )
        carry = total // 10
    if carry:
        lines.append(f"the last carry {carry} becomes the leading digit")
    return lines


def column_subtract(a: int, b: int) -> list[str]:
    lines = [f"Subtract {b} from {a} column by column, starting from the ones."]
    xs, ys = str(a)[::-1], str(b)[::-1]
    borrow = 0
    for i in range(len(xs)):
        x = int(xs[i])
        y = int(ys[i]) if i < len(ys) else 0
        if x - borrow >= y:
            d = x - y - borrow
            lines.append(f"column {i + 1}: {x} - {y} - borrow {borrow} = {d}, write {d}, borrow 0")
            borrow = 0
        else:
            d = 10 + x - y - borrow
            lines.append(
                f"column {i + 1}: {x} - {y} - borrow {borrow} is negative, "
                f"so {10 + x} - {y} - {borrow} = {d}, write {d}, borrow 1"
            )
            borrow = 1
    return lines


def long_multiply(a: int, b: int) -> list[str]:
    lines = [f"Multiply {a} by each digit of {b}, starting from the ones, then add the partial products."]
    partials = []
    for i, digit in enumerate(str(b)[::-1]):
        partial = a * int(digit) * 10**i
        shift = f", shifted {i} place{'s' if i > 1 else ''}: {partial}" if i else ""
        lines.append(f"{a} * {digit} = {a * int(digit)}{shift}")
        partials.append(partial)
    total = partials[0]
    for partial in partials[1:]:
        lines.append(f"{total} + {partial} = {total + partial}")
        total += partial
    return lines


class ArithmeticTask(SyntheticTask):
    name = "arithmetic"

    def __init__(self, digits: int = 3, ops: str = "+-*", **kwargs):
        super().__init__(**kwargs)
        if digits < 1 or not ops or set(ops) - set("+-*"):
            raise ValueError(f"arithmetic: need digits >= 1 and ops from '+-*', got {digits=}, {ops=}")
        self.digits, self.ops = digits, ops

    def generate(self, rng: random.Random) -> tuple[str, str, str, dict[str, Any]]:
        op = rng.choice(self.ops)
        a = rng.randint(10 ** (self.digits - 1), 10**self.digits - 1)
        b_digits = rng.randint(1, self.digits)
        b = rng.randint(10 ** (b_digits - 1) if b_digits > 1 else 0, 10**b_digits - 1)
        if op == "-" and b > a:
            a, b = b, a
        result = {"+": a + b, "-": a - b, "*": a * b}[op]
        key = f"{a}{op}{b}"
        return key, self.ask(f"What is {a} {op} {b}?"), str(result), {"a": a, "b": b, "op": op}

    def solution_trace(self, problem: Problem) -> str:
        a, b, op = problem.meta["a"], problem.meta["b"], problem.meta["op"]
        steps = {"+": column_add, "-": column_subtract, "*": long_multiply}[op](a, b)
        steps.append(f"So {a} {op} {b} = {problem.reference}.")
        return "\n".join(steps + [answer_line(problem.reference)])

    def check_batch(self, problems: Sequence[Problem], answers: Sequence[str | None]) -> list[bool]:
        return [a is not None and normalize_number(a) == p.reference for p, a in zip(problems, answers)]
