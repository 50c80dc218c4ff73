"""Distillation: rejection sampling keeps only verified, well-formed, distinct traces; dense students;
and the whole recipe on a synthetic task, where a student with at most a third of the teacher's active
parameters reaches at least 80% of the teacher's pass@1."""

from __future__ import annotations

import json

import pytest
from helpers import tokenizer_on

from nanoseek.data import load_chat_jsonl
from nanoseek.distill import DistillConfig, dense_config, run_distill, write_sft_dataset
from nanoseek.distill.cli import distill_main
from nanoseek.distill.toy import TOY_TASK, trace_conversations
from nanoseek.eval import SampleStore
from nanoseek.model import DeepSeekV3, config_for_depth

# the student's SFT in the test: CPU, a fixed peak (no matmul benchmark), quick
STUDENT_SFT = [
    "run.device=cpu",
    "cost.peak_flops=1e11",
    "train.max_steps=400",
    "train.lr=5e-3",
    "eval.num_samples=1",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def sample(
    pid: str, j: int, correct: bool, reasoning: str = "r", answer: str = "a", format_reward: float = 1.0
):
    return {
        "task": "t",
        "problem_id": pid,
        "problem_index": int(pid[1:]),
        "sample": j,
        "prompt": f"question {pid}",
        "reasoning": reasoning,
        "answer": answer,
        "correct": correct,
        "format_reward": format_reward,
    }


def test_rejection_sampling(tmp_path):
    store = SampleStore(tmp_path / "samples.jsonl")
    store.append(
        [
            sample("p0", 0, False),  # wrong: dropped
            sample("p0", 1, True, "first"),  # kept
            sample("p0", 2, True, "first"),  # a duplicate of a kept trace
            sample("p0", 3, True, "second"),  # distinct, but over the cap of 1 per problem
            sample("p1", 0, True, "", "a"),  # no reasoning: not R1's format
            sample("p1", 1, True, "x", "a", format_reward=0.0),  # unfinished think block
            sample("p2", 0, False),
        ]
    )
    stats = write_sft_dataset(tmp_path / "samples.jsonl", tmp_path / "sft.jsonl", max_per_problem=1)
    assert stats.to_dict() == {
        "samples": 7,
        "correct": 5,
        "well_formed": 3,
        "kept": 1,
        "problems": 3,
        "problems_covered": 1,
    }
    [conversation] = load_chat_jsonl(tmp_path / "sft.jsonl")
    assert conversation == [
        {"role": "user", "content": "question p0"},
        {"role": "assistant", "content": "a", "reasoning_content": "first"},
    ]
    stats = write_sft_dataset(tmp_path / "samples.jsonl", tmp_path / "all.jsonl", max_per_problem=0)
    assert stats.kept == 2  # "first" and "second": every distinct verified trace
    with pytest.raises(FileNotFoundError):
        write_sft_dataset(tmp_path / "missing.jsonl", tmp_path / "x.jsonl")


def test_dense_students():
    cfg = dense_config(2, vocab_size=400, hidden=48)
    assert cfg.n_routed_experts == 0 and not any(cfg.layer_is_moe(i) for i in range(2))
    assert (cfg.hidden_size, cfg.qk_nope_head_dim, cfg.v_head_dim) == (48, 24, 24)
    assert dense_config(3, vocab_size=400).hidden_size == 192  # 64 x depth by default
    with pytest.raises(ValueError):
        dense_config(2, vocab_size=400, hidden=51)  # not a multiple of its 2 heads
    with pytest.raises(ValueError):
        dense_config(2, vocab_size=400, hidden=8)  # heads narrower than 8


def test_toy_traces_are_in_the_chat_format():
    [record] = trace_conversations(TOY_TASK, 1)
    user, assistant = record["messages"]
    assert user["content"].startswith("Sort these numbers") and "boxed" not in user["content"]
    assert assistant["content"].startswith("The answer is \\boxed{")
    assert assistant["reasoning_content"].startswith("Take the smallest")


def test_bad_setups_fail_before_any_generation(tmp_path, capsys):
    assert distill_main(["--task", TOY_TASK, "--out", str(tmp_path / "a")]) == 2
    assert "exactly one of --teacher and --toy-teacher" in capsys.readouterr().err
    tok = tokenizer_on(
        "Sort these numbers: 3, 1, 2. The smallest is 1.\n" * 50, tmp_path, 300, tmp_path / "moe"
    )
    DeepSeekV3(config_for_depth(2, vocab_size=tok.vocab_size, mtp=0)).save_pretrained(tmp_path / "moe")
    cfg = DistillConfig(
        teacher=str(tmp_path / "moe"), task=TOY_TASK, out=str(tmp_path / "d"), student=str(tmp_path / "moe")
    )
    with pytest.raises(ValueError, match="dense models; it has 8 routed experts"):
        run_distill(cfg)
    assert not (tmp_path / "d").exists()
    remote = DistillConfig(
        teacher="http://127.0.0.1:9/v1", task=TOY_TASK, out=str(tmp_path / "r"), remote_model="m"
    )
    with pytest.raises(ValueError, match="--tokenizer"):
        run_distill(remote)


def train_records(out) -> list[dict]:
    records = [json.loads(line) for line in (out / "sft" / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["type"] == "train"]


@pytest.mark.slow
def test_distilled_student_reaches_80_percent_of_the_teacher(toy_teacher, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("distill")
    cfg = DistillConfig(
        teacher=str(toy_teacher),
        task=TOY_TASK,
        out=str(out),
        problems=300,
        k=2,
        max_new_tokens=96,
        student_depth=2,
        student_hidden=48,
        sft_overrides=STUDENT_SFT,
        eval_problems=64,
        eval_k=2,
        concurrency=64,
        progress=False,
    )
    r = run_distill(cfg)
    t, s = r["teacher"], r["student"]
    assert s["active_params"] * 3 <= t["active_params"]
    assert t["pass@1"] >= 0.5, t  # a teacher worth distilling
    assert s["pass@1"] >= 0.8 * t["pass@1"], (s["pass@1"], t["pass@1"])
    # the dataset: verified traces only, in the chat format with reasoning_content
    conversations = load_chat_jsonl(out / "sft.jsonl")
    assert len(conversations) == r["traces"]["kept"] > 100
    assert all(c[1]["reasoning_content"] and "\\boxed{" in c[1]["content"] for c in conversations)
    report = (out / "report.md").read_text()
    for text in ("| teacher:", "| student:", "Rejection sampling", "student SFT (400 steps)", "API-price $"):
        assert text in report
    assert json.loads((out / "distill.json").read_text())["ratio"] == pytest.approx(s["pass@1"] / t["pass@1"])
    # rerunning resumes: nothing is generated or trained again, the same result comes back
    lines = {p: len(p.read_text().splitlines()) for p in out.glob("*/samples.jsonl")}
    trained = train_records(out)
    assert len(lines) == 3 and len(trained) == 400
    argv = ["--teacher", str(toy_teacher), "--task", TOY_TASK, "--out", str(out), "--problems", "300"]
    argv += ["--k", "2", "--max-new-tokens", "96", "--student-hidden", "48", "--eval-problems", "64"]
    argv += ["--eval-k", "2"]
    assert distill_main([*argv, "--concurrency", "64", "--no-progress", *STUDENT_SFT]) == 0
    assert "student pass@1 / teacher pass@1" in capsys.readouterr().out
    assert json.loads((out / "distill.json").read_text())["student"]["pass@1"] == s["pass@1"]
    assert {p: len(p.read_text().splitlines()) for p in out.glob("*/samples.jsonl")} == lines
    assert train_records(out) == trained
