"""The eval runner on a deterministic fake Generator: records, seeds, the summary, resuming after an
interruption, a torn last line and SIGKILL (a subprocess), protocol checks, the report.

Run as a script, this file is the subprocess the SIGKILL test kills:
    python tests/test_eval_runner.py OUT_DIR SLEEP_S
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from nanoseek.engine.protocol import Completion, GenerationRequest
from nanoseek.eval import EvalConfig, SampleStore, problem_seed, run_eval
from nanoseek.eval.runner import check_text_only, scored_text
from nanoseek.tasks import parse_task_spec
from nanoseek.tokenizer import split_completion

TASKS = ["arithmetic?digits=2", "linear?steps=1"]
N = 12  # problems per task


class FakeGenerator:
    """Sample j of a request seeded s comes from random.Random(s + j), as the protocol requires: right
    with probability 1/2, else one of two wrong numbers (so votes go either way), 10% never finish."""

    def __init__(self, answers: dict[str, str], sleep: float = 0.0, fail_after: int | None = None):
        self.answers = answers  # prompt -> reference
        self.sleep, self.fail_after = sleep, fail_after
        self.calls = self.samples = 0

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        time.sleep(self.sleep)
        out = []
        for r, request in enumerate(requests):
            prompt = request.messages[-1]["content"]
            for j in range(request.params.n):
                rng = random.Random(request.params.seed + j)
                reference = self.answers[prompt]
                answer = reference if rng.random() < 0.5 else str(int(reference) + rng.choice([1, 2]))
                steps = " ".join(str(rng.randint(0, 9)) for _ in range(rng.randint(1, 8)))
                text = f"thinking {steps}\n</think>\n\nThe answer is \\boxed{{{answer}}}."
                if rng.random() < 0.1:
                    text = f"thinking {steps}, and then the number {reference}"  # never closes
                reasoning, content = split_completion(text)
                out.append(
                    Completion(
                        text=text,
                        token_ids=list(range(len(text.split()))),
                        finish_reason="stop" if "</think>" in text else "length",
                        prompt_tokens=len(prompt.split()),
                        reasoning_content=reasoning,
                        content=content,
                        request_index=r,
                        index=j,
                    )
                )
        self.samples += len(out)
        return out

    def stream(self, requests):
        raise NotImplementedError("the eval runner does not stream")


def fake_for(tasks: list[str] = TASKS, n: int = N, **kwargs) -> FakeGenerator:
    answers = {p.prompt: p.reference for t in tasks for p in parse_task_spec(t).build().problems("test", n)}
    return FakeGenerator(answers, **kwargs)


def config(**kwargs) -> EvalConfig:
    return EvalConfig(
        **{"tasks": TASKS, "k": 4, "max_problems": N, "concurrency": 6, "pass_ks": [2], **kwargs}
    )


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-ref")
    gen = fake_for()
    summary = run_eval(gen, config(), out, model="fake", progress=False)
    return out, summary, gen


def test_records_and_summary(reference_run):
    out, s, gen = reference_run
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 2 * N * 4 == gen.samples
    assert len({(r["task"], r["problem_id"], r["sample"]) for r in records}) == len(records)
    first = records[0]
    for key in ("prompt", "completion", "reasoning", "answer", "extracted", "correct", "reference", "seed"):
        assert key in first
    assert first["seed"] == problem_seed(0, first["task"], first["problem_id"]) + first["sample"]
    # an unfinished think block has no answer, even though it mentions the right number
    unfinished = [r for r in records if r["finish_reason"] == "length"]
    assert unfinished and all(r["extracted"] is None and not r["correct"] for r in unfinished)
    # the summary, recomputed by hand from the records
    for task in TASKS:
        rows = [r for r in records if r["task"] == task]
        by_problem: dict[str, list[dict]] = {}
        for r in sorted(rows, key=lambda r: r["sample"]):
            by_problem.setdefault(r["problem_id"], []).append(r)
        pass1 = sum(sum(r["correct"] for r in g) / 4 for g in by_problem.values()) / N
        t = s["tasks"][task]
        assert t["pass@1"] == pytest.approx(pass1)
        assert 0 < t["pass@1"] < t["pass@2"] < t["pass@4"] <= 1
        assert 0 < t["cons@4"] < 1
        assert t["completion_tokens"] == sum(r["completion_tokens"] for r in rows)
        assert t["cost_usd"] == pytest.approx(
            (t["prompt_tokens"] * 0.55 + t["completion_tokens"] * 2.19) / 1e6
        )
    assert json.loads((out / "summary.json").read_text()) == s
    report = (out / "report.md").read_text()
    assert "| arithmetic?digits=2 | 12/12 |" in report and "device-hours" in report
    # rerunning a finished eval generates nothing and changes nothing
    again = fake_for()
    assert run_eval(again, config(), out, model="fake", progress=False) == s and again.calls == 0


def test_resume_after_an_interruption_and_a_torn_line(reference_run, tmp_path):
    ref_out, ref_summary, _ = reference_run
    with pytest.raises(KeyboardInterrupt):
        run_eval(fake_for(fail_after=3), config(), tmp_path, model="fake", progress=False)
    samples = tmp_path / "samples.jsonl"
    done = len(samples.read_text().splitlines())
    assert 0 < done < 2 * N * 4
    with open(samples, "a") as f:
        f.write('{"task": "arithmetic?digits=2", "problem_id": "x", "sam')  # killed mid-write
    gen = fake_for()
    summary = run_eval(gen, config(concurrency=5), tmp_path, model="fake", progress=False)
    assert gen.samples == 2 * N * 4 - done  # only what was missing was generated
    assert summary == ref_summary
    assert (tmp_path / "summary.json").read_bytes() == (ref_out / "summary.json").read_bytes()
    assert sorted(samples.read_text().splitlines()) == sorted(
        (ref_out / "samples.jsonl").read_text().splitlines()
    )


def test_sigkill_and_rerun_gives_the_same_summary(reference_run, tmp_path):
    ref_out, _, _ = reference_run
    samples = tmp_path / "samples.jsonl"
    proc = subprocess.Popen([sys.executable, __file__, str(tmp_path), "0.5"])
    try:
        deadline = time.time() + 60
        while time.time() < deadline and (
            not samples.exists() or len(samples.read_bytes().splitlines()) < 20
        ):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    partial = len(samples.read_bytes().splitlines())
    assert 20 <= partial < 2 * N * 4, partial  # killed in the middle
    assert not (tmp_path / "summary.json").exists()
    subprocess.run([sys.executable, __file__, str(tmp_path), "0"], check=True, timeout=120)
    assert (tmp_path / "summary.json").read_bytes() == (ref_out / "summary.json").read_bytes()
    assert len(samples.read_text().splitlines()) == 2 * N * 4


def test_samples_of_a_problem_split_over_requests_are_the_same(reference_run, tmp_path):
    """With k samples in one request (seed s) or one request per sample (seeds s + j), same text."""
    ref_out, _, _ = reference_run
    store = SampleStore(tmp_path / "samples.jsonl")
    ref = {
        (r["task"], r["problem_id"], r["sample"]): r for r in SampleStore(ref_out / "samples.jsonl").records()
    }
    store.append([r for key, r in ref.items() if key[2] in (0, 2)])  # samples 1 and 3 are missing
    (tmp_path / "config.json").write_text((ref_out / "config.json").read_text())
    gen = fake_for()
    run_eval(gen, config(), tmp_path, model="fake", progress=False)
    assert gen.samples == 2 * N * 2
    assert {k: r["completion"] for k, r in ref.items()} == {
        (r["task"], r["problem_id"], r["sample"]): r["completion"]
        for r in SampleStore(tmp_path / "samples.jsonl").records()
    }


def test_a_different_protocol_is_refused(reference_run):
    out, _, _ = reference_run
    with pytest.raises(ValueError, match="temperature"):
        run_eval(fake_for(), config(temperature=1.0), out, model="fake", progress=False)
    with pytest.raises(ValueError, match="model"):
        run_eval(fake_for(), config(), out, model="another", progress=False)


def test_bad_task_names_and_specs_fail_clearly(tmp_path):
    with pytest.raises(KeyError, match="unknown task 'gsm9k'"):
        run_eval(fake_for(), config(tasks=["gsm9k"]), tmp_path / "a", progress=False)
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_eval(fake_for(), config(tasks=["gsm8k:/nonexistent.jsonl"]), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="bad arguments"):
        run_eval(fake_for(), config(tasks=["arithmetic?digitz=2"]), tmp_path / "c", progress=False)
    assert parse_task_spec("sort?length=6&seed=3").kwargs == {"length": 6, "seed": 3}
    with pytest.raises(ValueError, match="twice"):
        config(tasks=["sort", "sort"])


def test_scored_text_is_rebuilt_from_the_split():
    c = Completion(text="r\n</think>\n\n42", token_ids=[], finish_reason="stop", prompt_tokens=1,
                   reasoning_content="r", content="42")  # fmt: skip
    assert scored_text(c) == "<think>\nr\n</think>\n\n42"
    # text only: split here with the chat format, as the native engine splits its own
    for text in ("r\n</think>\n\n42", "<think>\nr</think>42"):
        raw = Completion(text=text, token_ids=[], finish_reason="stop", prompt_tokens=1)
        assert scored_text(raw) == "<think>\nr\n</think>\n\n42"
    raw = Completion(text="no think end 42", token_ids=[], finish_reason="length", prompt_tokens=1)
    assert scored_text(raw) == "<think>\nno think end 42\n</think>\n\n"  # the prompt opened the block
    assert scored_text(raw, think=False) == "no think end 42"


class TextOnlyGenerator(FakeGenerator):
    """FakeGenerator's samples carrying only `text` (reasoning_content and content None): its R1 text as
    is, or (plain=True) a finished sample's answer line alone, as a model that does not think writes it."""

    def __init__(self, answers: dict[str, str], plain: bool = False):
        super().__init__(answers)
        self.plain = plain

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        out = super().generate(requests)
        for c in out:
            if self.plain and c.content:
                c.text = c.content
            c.reasoning_content = c.content = None
        return out


def text_only_for(plain: bool = False) -> TextOnlyGenerator:
    return TextOnlyGenerator(fake_for().answers, plain)


def test_a_generator_of_text_only_is_split_with_the_chat_format(reference_run, tmp_path):
    """Its R1 text scores exactly as the split completions of the same samples (no silent 0%)."""
    ref_out, ref_summary, _ = reference_run
    summary = run_eval(text_only_for(), config(), tmp_path, model="fake", progress=False)
    assert summary == ref_summary and summary["tasks"][TASKS[0]]["pass@1"] > 0
    fields = ("reasoning", "answer", "extracted", "correct", "scored_text")
    mine, ref = (
        {(r["task"], r["problem_id"], r["sample"]): [r[f] for f in fields] for r in SampleStore(d).records()}
        for d in (tmp_path / "samples.jsonl", ref_out / "samples.jsonl")
    )
    assert mine == ref


def test_a_generator_that_does_not_think_is_refused_under_think_not_scored_zero(reference_run, tmp_path):
    with pytest.raises(ValueError, match=r"only `text`.*--no-think"):
        run_eval(text_only_for(plain=True), config(), tmp_path / "think", model="fake", progress=False)
    assert not SampleStore(tmp_path / "think" / "samples.jsonl").records()  # nothing scored 0
    # with think=False its text is the answer: finished samples score as the reference run's did
    run_eval(
        text_only_for(plain=True), config(think=False), tmp_path / "direct", model="fake", progress=False
    )
    ref_out, _, _ = reference_run
    ref = {
        (r["task"], r["problem_id"], r["sample"]): r for r in SampleStore(ref_out / "samples.jsonl").records()
    }
    records = SampleStore(tmp_path / "direct" / "samples.jsonl").records()
    finished = [r for r in records if r["finish_reason"] == "stop"]
    assert len(finished) > len(records) / 2 and any(r["correct"] for r in finished)
    assert all(r["correct"] == ref[(r["task"], r["problem_id"], r["sample"])]["correct"] for r in finished)


def test_check_text_only():
    def c(text: str, finish: str = "stop", **split) -> Completion:
        return Completion(text=text, token_ids=[], finish_reason=finish, prompt_tokens=1, **split)

    plain, closed, cut = c("The answer is 4."), c("2+2\n</think>\n\n4"), c("2+2 is", "length")
    assert check_text_only([cut], think=True, closed_before=False) is False  # ran out while thinking
    assert check_text_only([closed, plain], think=True, closed_before=False) is True  # R1, one unfinished
    assert check_text_only([plain], think=True, closed_before=True) is True
    assert check_text_only([plain], think=False, closed_before=False) is False
    split = c("The answer is 4.", reasoning_content="", content="The answer is 4.")
    assert check_text_only([split], think=True, closed_before=False) is False  # the generator split it
    with pytest.raises(ValueError, match="The answer is 4"):
        check_text_only([cut, plain], think=True, closed_before=False)


if __name__ == "__main__":
    out_dir, sleep = sys.argv[1], float(sys.argv[2])
    run_eval(fake_for(sleep=sleep), config(), out_dir, model="fake", progress=False)
