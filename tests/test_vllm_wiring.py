"""vLLM as a distillation teacher (`nanoseek distill --teacher-backend vllm`) and as an arena contestant
(`backend = "vllm"` in a contestants file), without vLLM: a fake offline `LLM` stands in for vLLM's
(`nanoseek.engine.vllm.make_llm` is replaced, as tests/test_vllm_backend.py hands one in), so what is
checked is the wiring: the switch reaches `VLLMGenerator` on the right checkpoint, the teacher's traces
and the contestant's answers are the fake's, calls into the offline engine never overlap, and bad
setups fail with one line naming the option.

Run: `OMP_NUM_THREADS=1 python -m pytest -q tests/test_vllm_wiring.py`. The same paths against a real
vLLM are `bench/vllm_check.py`'s.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import build_checkpoint

from nanoseek.arena.contestants import ContestantError, close_contestants, load_contestants, open_contestants
from nanoseek.distill.cli import distill_main
from nanoseek.distill.toy import TOY_TASK, trace_conversations
from nanoseek.engine import vllm as vllm_backend
from nanoseek.tokenizer import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

REASONING = "Take the numbers one by one."


class FakeLLM:
    """vLLM's offline LLM as VLLMGenerator calls it. `answer(prompt text)` gives the completion's text;
    each sample is its tokens then EOS. `active` / `most_at_once` count overlapping generate() calls."""

    def __init__(self, tokenizer: Tokenizer, answer, pause: float = 0.0):
        self.tok, self.answer, self.pause = tokenizer, answer, pause
        self.prompts: list[str] = []
        self.active = self.most_at_once = 0

    def generate(self, prompts, params, use_tqdm=True):
        self.active += 1
        self.most_at_once = max(self.most_at_once, self.active)
        time.sleep(self.pause)  # a second caller arriving now would overlap
        outs = []
        for prompt, p in zip(prompts, params):
            text = self.tok.decode(prompt["prompt_token_ids"])
            self.prompts.append(text)
            ids = [*self.tok.encode(self.answer(text)), self.tok.eos_id]
            lps = [{t: SimpleNamespace(logprob=-0.1, rank=1)} for t in ids]
            samples = [
                SimpleNamespace(index=j, token_ids=ids, finish_reason="stop", logprobs=lps)
                for j in range(p["n"])
            ]
            outs.append(SimpleNamespace(outputs=samples, prompt_logprobs=None))
        self.active -= 1
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    """Make `VLLMGenerator(model_dir)` build a FakeLLM: returns (the LLMs built, a setter for the answer
    function and the pause). vLLM's SamplingParams becomes a dict (a stand-in `vllm` module)."""
    built: list[tuple[object, FakeLLM]] = []
    settings = {"answer": lambda text: f"{REASONING}\n</think>\n\nno idea", "pause": 0.0}

    def make_llm(model_dir, max_len, **kwargs):
        llm = FakeLLM(Tokenizer.from_dir(model_dir), settings["answer"], settings["pause"])
        built.append((model_dir, llm))
        return llm

    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: True)
    monkeypatch.setattr(vllm_backend, "make_llm", make_llm)
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=dict))
    return built, settings


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("teacher") / "model", seed=0, max_positions=512)


def solver(split_sizes: dict[str, int]):
    """An answer function that solves TOY_TASK's problems of those splits with their solution traces."""
    records = [r for split, n in split_sizes.items() for r in trace_conversations(TOY_TASK, n, split)]
    solutions = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in records}

    def answer(prompt_text: str) -> str:
        [question] = [q for q in solutions if q in prompt_text]
        return f"{REASONING}\n</think>\n\n{solutions[question]}"

    return answer


# --------------------------------------------------------------------------------------------- distill


def test_distill_generates_the_teachers_traces_and_eval_with_vllm(fake_vllm, teacher, tmp_path, capsys):
    built, settings = fake_vllm
    settings["answer"] = solver({"train": 4, "test": 2})
    out = tmp_path / "distill"
    argv = ["--teacher", str(teacher), "--teacher-backend", "vllm", "--task", TOY_TASK, "--out", str(out)]
    argv += [
        "--problems",
        "4",
        "--k",
        "1",
        "--max-new-tokens",
        "200",
        "--eval-problems",
        "2",
        "--eval-k",
        "1",
    ]
    argv += ["--student-depth", "1", "--student-hidden", "32", "--no-progress"]
    argv += ["run.device=cpu", "train.max_steps=2", "cost.peak_flops=1e11"]
    assert distill_main(argv) == 0, capsys.readouterr().err
    [(model_dir, llm)] = built  # one vLLM, on the teacher's checkpoint, for its traces and its eval
    assert model_dir == teacher and len(llm.prompts) == 4 + 2
    result = json.loads((out / "distill.json").read_text())
    assert result["config"]["teacher_backend"] == "vllm" and result["teacher"]["pass@1"] == 1.0
    assert result["traces"]["kept"] == 4  # every fake trace verified and kept
    kept = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert {r["messages"][-1]["reasoning_content"] for r in kept} == {REASONING}
    assert len(built) == 1  # the student was evaluated by the native engine, not by vLLM


def test_distill_teacher_backend_errors_are_one_line(teacher, tmp_path, monkeypatch, capsys):
    base = ["--task", TOY_TASK, "--teacher-backend", "vllm", "--no-progress"]
    assert distill_main([*base, "--teacher", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "a")]) == 2
    assert "not a URL" in capsys.readouterr().err
    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: False)
    assert distill_main([*base, "--teacher", str(teacher), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'nanoseek[vllm]'" in err
    assert not (tmp_path / "b").exists()  # nothing written before the teacher loads


# ----------------------------------------------------------------------------------------------- arena


def contestants_file(tmp_path, teacher, vllm_fields: str = ""):
    path = tmp_path / "arena.toml"
    path.write_text(
        f'[[contestants]]\nname = "on-vllm"\nkind = "checkpoint"\npath = "{teacher}"\nbackend = "vllm"\n'
        f"{vllm_fields}params = {{ temperature = 0, max_new_tokens = 32 }}\n\n"
        f'[[contestants]]\nname = "native"\nkind = "checkpoint"\npath = "{teacher}"\n'
        "params = { temperature = 0, max_new_tokens = 4 }\n"
    )
    return path


def test_a_vllm_contestant_answers_through_vllm_one_call_at_a_time(fake_vllm, teacher, tmp_path):
    built, settings = fake_vllm
    settings["answer"] = lambda text: f"{REASONING}\n</think>\n\nIt is {42 if '40 + 2' in text else 0}."
    settings["pause"] = 0.2
    specs = load_contestants(contestants_file(tmp_path, teacher))
    assert [(s.name, s.backend) for s in specs] == [("on-vllm", "vllm"), ("native", "native")]
    contestants = open_contestants(specs)
    try:
        [(model_dir, llm)] = built  # only the vLLM entry built an LLM
        on_vllm = contestants["on-vllm"]
        [c] = on_vllm.generate([[{"role": "user", "content": "What is 40 + 2?"}]])
        assert (c.reasoning_content, c.content) == (REASONING, "It is 42.")
        answers: list[str] = []

        def battle_side() -> None:  # live battles stream both sides on threads
            deltas = list(on_vllm.stream([{"role": "user", "content": "What is 40 + 2?"}]))
            answers.append("".join(d.content for d in deltas))

        sides = [threading.Thread(target=battle_side) for _ in range(2)]
        for side in sides:
            side.start()
        for side in sides:
            side.join(30)
        assert answers == ["It is 42.", "It is 42."]
        assert llm.most_at_once == 1  # the offline engine was never entered twice at once
        assert re.search(r"What is 40 \+ 2\?", llm.prompts[-1])
    finally:
        close_contestants(contestants)


def test_contestant_backend_errors_name_the_field(teacher, tmp_path, monkeypatch):
    bad = tmp_path / "x.toml"
    bad.write_text(
        f'[[contestants]]\nname = "a"\nkind = "checkpoint"\npath = "{teacher}"\nbackend = "sglang"\n'
    )
    with pytest.raises(
        ContestantError, match=r"contestants\[0\]\.backend: expected one of \['native', 'vllm'\]"
    ):
        load_contestants(bad)
    with pytest.raises(ContestantError, match=r"contestants\[0\]\.int8: backend 'vllm' runs the checkpoint"):
        load_contestants(contestants_file(tmp_path, teacher, "int8 = true\n"))
    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: False)
    specs = load_contestants(contestants_file(tmp_path, teacher))
    with pytest.raises(
        ContestantError, match=r"contestants\[0\]\.backend: vLLM is not installed.*pip install"
    ):
        open_contestants(specs)


# ------------------------------------------------------------------------------ the benches' refusal row

VLLM_LOG = """\
(APIServer pid=7) WARNING 12-07 06:05:39 [system_utils.py:255] Found ulimit of 20000 (`OSError: [Errno 24]`)
(Worker pid=9) ERROR 12-07 06:06:15 [multiproc_executor.py:1063] ValueError: Head dimension 48 is not supported by MLA.
(EngineCore pid=8) ERROR 12-07 06:06:15 [core.py:1512] RuntimeError: Worker failed with error 'Head dimension 48'
(APIServer pid=7) ERROR 12-07 06:06:15 [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: EngineCore \
encountered an issue. See stack trace (above) for the root cause.
"""


def test_serve_bench_reports_vllms_root_cause_not_its_dead_engine(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    from serve_bench import decode_rate, refusal

    from nanoseek.serve.loadgen import LoadResult

    assert refusal(VLLM_LOG) == "ValueError: Head dimension 48 is not supported by MLA."
    assert refusal("") == "(no output)"
    # one client, 2 requests of 11 tokens in 3 s, 0.5 s to each first token: 20 tokens in 2 s
    assert decode_rate(LoadResult(1, seconds=3.0, completed=2, tokens=22, ttft=[0.5, 0.5])) == 10.0
