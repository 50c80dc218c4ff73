"""Linear equations in one unknown with integer solutions, solved by balancing both sides.

    task = LinearEquationTask(steps=2)
    p = task.problems("test", n=1)[0]
    p.prompt   # "Solve for x: 5x - 3 = 2x + 9. Please reason step by step, ..."
    task.solution_trace(p)

    5x - 3 = 2x + 9
    Subtract 2x from both sides: 3x - 3 = 9
    Add 3 to both sides: 3x = 12
    Divide both sides by 3: x = 4
    Check: 5 * 4 - 3 = 17 and 2 * 4 + 9 = 17.
    The answer is \\boxed{4}.

Knobs: `steps` (1: a*x + b = c; 2: a*x + b = c*x + d), `max_coef` (coefficient size), `max_solution`.
Answers may be written "x = 4" or "4".
"""

import random
import re
from typing import Any

from nanoseek.tasks.base import Problem
from nanoseek.tasks.synthetic import SyntheticTask, answer_line
from nanoseek.verify import normalize_number


def linear(a: int, b: int) -> str:
    """a*x + b written the usual way: "3x - 7", "-x + 2", "5", "x"."""
    if a == 0:
        return str(b)
    term = {1: "x", -1: "-x"}.get(a, f"{a}x")
    if b == 0:
        return term
    return f"{term} {'+' if b > 0 else '-'} {abs(b)}"


def substitute(a: int, b: int, x: int) -> str:
    """a*x + b with x plugged in: "3 * (-2) + 7"."""
    value = f"({x})" if x < 0 else str(x)
    return f"{a} * {value} {'+' if b >= 0 else '-'} {abs(b)}"


def nonzero(rng: random.Random, bound: int) -> int:
    return rng.choice([n for n in range(-bound, bound + 1) if n != 0])


class LinearEquationTask(SyntheticTask):
    name = "linear"

    def __init__(self, steps: int = 1, max_coef: int = 10, max_solution: int = 20, **kwargs):
        super().__init__(**kwargs)
        if steps not in (1, 2) or max_coef < 2:
            raise ValueError(f"linear: steps must be 1 or 2 and max_coef >= 2, got {steps=}, {max_coef=}")
        self.steps, self.max_coef, self.max_solution = steps, max_coef, max_solution

    def generate(self, rng: random.Random) -> tuple[str, str, str, dict[str, Any]]:
        x = rng.randint(-self.max_solution, self.max_solution)
        a, b = nonzero(rng, self.max_coef), rng.randint(-self.max_coef, self.max_coef)
        c = 0
        if self.steps == 2:
            c = nonzero(rng, self.max_coef)
            while c == a:
                c = nonzero(rng, self.max_coef)
        d = a * x + b - c * x
        equation = f"{linear(a, b)} = {linear(c, d)}"
        meta = {"a": a, "b": b, "c": c, "d": d, "x": x}
        return equation, self.ask(f"Solve for x: {equation}."), str(x), meta

    def solution_trace(self, problem: Problem) -> str:
        a, b, c, d, x = (problem.meta[k] for k in "abcdx")
        lines = [f"{linear(a, b)} = {linear(c, d)}"]
        coef = a - c  # the equation after the x terms are gathered on the left: coef*x + b = d
        if c != 0:
            move = f"Subtract {linear(c, 0)} from" if c > 0 else f"Add {linear(-c, 0)} to"
            lines.append(f"{move} both sides: {linear(coef, b)} = {d}")
        if b != 0:
            move = f"Subtract {b} from" if b > 0 else f"Add {-b} to"
            lines.append(f"{move} both sides: {linear(coef, 0)} = {d - b}")
        if coef != 1:
            lines.append(f"Divide both sides by {coef}: x = {x}")
        check = f"Check: {substitute(a, b, x)} = {a * x + b}"
        if c != 0:
            check += f" and {substitute(c, d, x)} = {c * x + d}"
        lines.append(check + ".")
        return "\n".join(lines + [answer_line(str(x))])

    def extract(self, problem: Problem, answer: str) -> tuple[str | None, str]:
        extracted, how = super().extract(problem, answer)
        if extracted is not None:
            extracted = re.sub(r"^\s*x\s*=\s*", "", extracted)
            extracted = normalize_number(extracted) or extracted
        return extracted, how
