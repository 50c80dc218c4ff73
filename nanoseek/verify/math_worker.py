"""One math-verify worker process: reads `[index, gold, answer]` JSON lines on stdin and writes
`[index, equivalent]` JSON lines on stdout.

Started by `nanoseek.verify.math_equiv.MathVerifier` as `python math_worker.py PARSE_TIMEOUT VERIFY_TIMEOUT`;
not meant to be run by hand. It runs math-verify in its main thread, where math-verify's own
signal-based timeouts work; it prints `ready` once math-verify is imported and warmed up. Answers are
answer strings (LaTeX or plain, as `nanoseek.verify.extract` returns them), not whole completions.
"""

import os
import sys

# This file runs as a script, so Python put its folder first on sys.path; take it off so that no
# module beside it can shadow one that math-verify or sympy imports.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import functools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402


def as_latex(answer: str) -> str:
    """Give math-verify an explicit anchor: a bare answer goes inside \\boxed{}. Degree signs become
    `^\\circ`, which math-verify reads inside a box (`\\boxed{90°}` fails to parse)."""
    answer = answer.strip().replace("°", "^\\circ").replace("\\degree", "^\\circ")
    if "\\boxed" in answer or "\\fbox" in answer:
        return answer
    if answer.startswith("$") and answer.endswith("$") and len(answer) > 1:
        answer = answer.strip("$")
    return "\\boxed{" + answer + "}"


def main() -> None:
    parse_timeout, verify_timeout = int(sys.argv[1]), int(sys.argv[2])
    logging.disable(logging.WARNING)  # math-verify logs every parse failure
    from math_verify import parse, verify

    @functools.lru_cache(maxsize=16384)
    def parsed(text: str) -> list:
        return parse(as_latex(text), parsing_timeout=parse_timeout)

    def equivalent(gold: str, answer: str) -> bool:
        try:
            return bool(verify(parsed(gold), parsed(answer), timeout_seconds=verify_timeout))
        except Exception:  # math-verify raises on some malformed inputs; they are not equivalent
            return False

    equivalent("1", "1")  # warm up sympy's lazy imports before saying ready
    print("ready", flush=True)
    for line in sys.stdin:
        index, gold, answer = json.loads(line)
        print(json.dumps([index, equivalent(gold, answer)]), flush=True)


if __name__ == "__main__":
    main()
