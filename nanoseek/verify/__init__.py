"""Answer checkers: math equivalence, answer extraction, multiple choice, the R1 format, a code sandbox.

    from nanoseek.verify import extract_answer, verify_math, format_reward, run_code
    answer, how = extract_answer(answer_part(completion))   # ("\\frac{1}{2}", "boxed")
    verify_math("0.5", answer)                               # True: math-verify, in worker processes
    format_reward(completion)                                # 1.0 for "<think>...</think> answer"
    run_code(solution + tests, timeout=5).passed             # untrusted code, sandboxed

Modules: `extract` (answers out of text, normalization, choice letters), `format` (think/answer
split, format reward), `math_equiv` (math-verify worker pool), `sandbox` (+ `sandbox_child`, its
child side). Nothing here calls a model or trusts the code it runs.
"""

from nanoseek.verify.extract import (
    extract_answer,
    extract_choice,
    last_boxed,
    normalize_answer,
    normalize_number,
    strip_units,
)
from nanoseek.verify.format import answer_part, format_reward
from nanoseek.verify.math_equiv import MathVerifier, verify_math, verify_math_batch
from nanoseek.verify.sandbox import SandboxResult, run_code, run_code_batch

__all__ = [
    "MathVerifier",
    "SandboxResult",
    "answer_part",
    "extract_answer",
    "extract_choice",
    "format_reward",
    "last_boxed",
    "normalize_answer",
    "normalize_number",
    "run_code",
    "run_code_batch",
    "strip_units",
    "verify_math",
    "verify_math_batch",
]
