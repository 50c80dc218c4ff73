"""Error bars on every eval: the intervals cover a known accuracy, `--compare` tells a planted difference
from noise, `--seeds`, the per-problem table, and R1's protocol (`--protocol r1`) on a tiny model.

The statistics tests need no model: per-problem correctness is drawn with a seeded RNG from a known
solve rate, and the records go through the same `summarize` / `compare_runs` the CLI uses.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import pytest

from nanoseek.eval import EvalConfig, run_eval
from nanoseek.eval.cli import eval_config, eval_main, parser
from nanoseek.eval.compare import compare_runs
from nanoseek.eval.config import protocol_settings
from nanoseek.eval.report import problem_table, summarize, write_problem_table
from nanoseek.eval.runner import EvalRunner, forced_prompt
from nanoseek.tasks import ANSWER_INSTRUCTION
from nanoseek.tokenizer.chat_format import ASSISTANT, BOS, USER

pytestmark = pytest.mark.usefixtures("one_thread")

TASK = "arithmetic"


def synthetic_records(rng: random.Random, rates: list[float], k: int, seeds: int = 1) -> list[dict]:
    """Scored samples of problems with the given solve rates: k per problem in each of `seeds` runs;
    a right sample answers "right", a wrong one one of three wrong answers."""
    out = []
    for run in range(seeds):
        for i, rate in enumerate(rates):
            for j in range(k):
                ok = rng.random() < rate
                answer = "right" if ok else rng.choice(["w1", "w2", "w3"])
                out.append(
                    {"task": TASK, "problem_id": f"p{i}", "problem_index": i, "sample": j, "run": run,
                     "extracted": answer, "correct": ok, "reference": "right", "format_reward": 1.0,
                     "finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 1}
                )  # fmt: skip
    return out


def summary_of(records: list[dict], k: int, seeds: int = 1) -> dict:
    cfg = EvalConfig(tasks=[TASK], k=k, seeds=seeds)
    problems = len({r["problem_id"] for r in records})
    return summarize(records, cfg, "synthetic", [TASK], {TASK: "generate"}, {TASK: problems})["tasks"][TASK]


@pytest.mark.parametrize("k, seeds", [(4, 1), (2, 3)])
def test_the_95_interval_covers_a_known_accuracy(k, seeds):
    """200 seeded evals of 60 problems drawn from a model whose solve rates average 0.6 (Beta(1.5, 1)):
    the reported pass@1 interval (problems x samples, and x seeds) holds 0.6 in 90% to 99% of them.
    (A binomial interval over all samples, blind to the spread between problems, holds it in 85% and
    78%: the test tells them apart.)"""
    truth, covered, widths = 3 / 5, 0, []
    for run in range(200):
        rng = random.Random(run)
        rates = [rng.betavariate(1.5, 1) for _ in range(60)]  # a fresh draw of problems every run
        bars = summary_of(synthetic_records(rng, rates, k, seeds), k, seeds)["error_bars"]["pass@1"]
        lo, hi = bars["ci95"]
        covered += lo <= truth <= hi
        widths.append(hi - lo)
    assert 0.90 * 200 <= covered <= 0.99 * 200, covered
    assert 0.1 < sum(widths) / len(widths) < 0.25  # about 2 x 1.96 x sd / sqrt(60), not absurd


def test_the_sampling_error_covers_the_same_problems_sampled_again():
    """Fixed problems, fresh samples: pass@1 +- 1.96 rerun_se holds their mean solve rate about 95% of
    the time, while the interval over problems (which also counts another draw of problems) is wider."""
    rng = random.Random(7)
    rates = [rng.random() for _ in range(40)]
    truth, covered, wider = sum(rates) / len(rates), 0, 0
    for run in range(200):
        t = summary_of(synthetic_records(random.Random(1000 + run), rates, 8), 8)
        se, (lo, hi) = t["error_bars"]["pass@1"]["rerun_se"], t["error_bars"]["pass@1"]["ci95"]
        covered += abs(t["pass@1"] - truth) <= 1.96 * se
        wider += hi - lo > 2 * 1.96 * se
    assert 0.90 * 200 <= covered <= 0.99 * 200, covered
    assert wider == 200


def write_result(folder: Path, records: list[dict], k: int) -> Path:
    """A result directory as `nanoseek eval` leaves it: problems.csv (what --compare reads)."""
    folder.mkdir(parents=True)
    cfg = EvalConfig(tasks=[TASK], k=k)
    write_problem_table(folder / "problems.csv", problem_table(records, cfg, [TASK], {TASK: "generate"}))
    return folder


@pytest.mark.parametrize("planted, most_flagged, least_flagged", [(0.10, 20, 19), (0.0, 4, 0)])
def test_compare_flags_a_planted_difference_and_not_noise(tmp_path, planted, most_flagged, least_flagged):
    """200 problems, k = 4: B solves every problem `planted` more often than A. Of 20 seeded pairs of
    runs, a 10-point difference is beyond noise in (nearly) all, a 0-point one in (nearly) none."""
    flagged = 0
    for run in range(20):
        rng = random.Random(run)
        rates = [rng.uniform(0.1, 0.8) for _ in range(200)]
        a = write_result(tmp_path / f"{run}" / "a", synthetic_records(rng, rates, 4), 4)
        b = write_result(
            tmp_path / f"{run}" / "b", synthetic_records(rng, [r + planted for r in rates], 4), 4
        )
        d = compare_runs(a, b)["tasks"][TASK]
        flagged += d["beyond_noise"]
        assert d["problems"] == 200 and d["ci95"][0] <= d["difference"] <= d["ci95"][1]
    assert least_flagged <= flagged <= most_flagged, flagged


def test_compare_on_the_command_line_and_its_refusals(tmp_path, capsys):
    rng = random.Random(0)
    rates = [rng.uniform(0.1, 0.8) for _ in range(200)]
    a = write_result(tmp_path / "a", synthetic_records(rng, rates, 4), 4)
    b = write_result(tmp_path / "b", synthetic_records(rng, [r + 0.1 for r in rates], 4), 4)
    assert eval_main(["--compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "| arithmetic | 200 |" in out and "**yes**" in out and "Paired over problems" in out
    # a result over other problems is refused, naming what differs
    c = write_result(tmp_path / "c", synthetic_records(rng, rates[:150], 4), 4)
    assert eval_main(["--compare", str(a), str(c)]) == 2
    err = capsys.readouterr().err
    assert "problem sets differ" in err and "200 problems" in err and "50 only in the first: p150" in err
    assert eval_main(["--compare", str(a), str(tmp_path / "none")]) == 2
    assert "no such eval result" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("task,problem_id\nx,y\n")
    assert eval_main(["--compare", str(a), str(tmp_path / "bad.csv")]) == 2
    assert "not a problems.csv" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # without --compare, a model and tasks are needed
        eval_main(["--tasks", "arithmetic"])


def test_seeds_and_the_per_problem_table(tmp_path):
    """--seeds 2 on the fake generator: seed-0 is exactly the single-seed run, the summary pools both
    seeds (per-seed scores, their spread), problems.csv and the report hold the per-problem table."""
    from test_eval_runner import config, fake_for

    single = run_eval(fake_for(), config(), tmp_path / "one", model="fake", progress=False)
    gen = fake_for()
    summary = run_eval(gen, config(seeds=2), tmp_path / "two", model="fake", progress=False)
    assert gen.samples == 2 * 2 * 12 * 4  # 2 seeds x 2 tasks x 12 problems x k = 4
    assert (tmp_path / "two" / "seed-0" / "samples.jsonl").read_text() == (
        tmp_path / "one" / "samples.jsonl"
    ).read_text()
    for label, t in summary["tasks"].items():
        per_seed = t["per_seed"]["pass@1"]
        assert per_seed[0] == single["tasks"][label]["pass@1"]
        assert t["pass@1"] == pytest.approx(sum(per_seed) / 2) and t["seeds"] == 2
        lo, hi = t["error_bars"]["pass@1"]["ci95"]
        assert lo < t["pass@1"] < hi
    seed0, seed1 = ((tmp_path / "two" / f"seed-{s}" / "samples.jsonl").read_text() for s in (0, 1))
    assert seed0 != seed1  # the second seed samples anew
    rows = list(csv.DictReader((tmp_path / "two" / "problems.csv").open()))
    assert len(rows) == 2 * 12 and {r["samples"] for r in rows} == {"8"}
    records = [json.loads(line) for f in (tmp_path / "two").glob("seed-*/samples.jsonl") for line in f.open()]
    for row in rows:  # counts by hand from both seeds' samples
        mine = [r for r in records if (r["task"], r["problem_id"]) == (row["task"], row["problem_id"])]
        assert int(row["correct"]) == sum(r["correct"] for r in mine)
        assert float(row["pass_rate"]) == pytest.approx(int(row["correct"]) / 8)
    report = (tmp_path / "two" / "report.md").read_text()
    assert (
        "## Per problem" in report
        and "| problem | samples | correct | pass rate | majority answer |" in report
    )
    assert "x 2 seeds" in report and "per seed" in report
    again = fake_for()  # finished: a rerun generates nothing and writes the same summary
    assert run_eval(again, config(seeds=2), tmp_path / "two", model="fake", progress=False) == summary
    assert again.samples == 0
    with pytest.raises(ValueError, match="seeds"):  # another number of seeds in the same directory
        run_eval(fake_for(), config(seeds=3), tmp_path / "two", model="fake", progress=False)


def test_r1_protocol_settings_and_explicit_flags():
    def cfg(*argv):
        return eval_config(parser().parse_args(["--model", "m", "--tasks", "aime24,gsm8k", *argv]))

    plain = cfg()
    assert (plain.k, plain.temperature, plain.top_p, plain.max_new_tokens) == (8, 0.6, 0.95, 1024)
    assert (plain.think_prefix, plain.instruction, plain.task_k) == ("", "", {})
    r1 = cfg("--protocol", "r1")
    assert r1.task_k == {"aime24": 64, "gsm8k": 16} and r1.k_for("aime24") == 64
    assert (r1.temperature, r1.top_p, r1.max_new_tokens, r1.system) == (0.6, 0.95, 32768, None)
    assert (r1.think_prefix, r1.instruction, r1.think) == ("<think>\n", ANSWER_INSTRUCTION, True)
    # explicit flags override the protocol's values
    mine = cfg("--protocol", "r1", "--k", "4", "--temperature", "1.0", "--max-new-tokens", "64")
    assert (mine.k_for("aime24"), mine.k_for("gsm8k"), mine.temperature, mine.max_new_tokens) == (
        4,
        4,
        1.0,
        64,
    )
    assert cfg("--protocol", "r1", "--no-think").think_prefix == ""
    assert cfg("--protocol", "r1", "--think-prefix", "<think>\\nOkay,").think_prefix == "<think>\nOkay,"
    assert cfg("--protocol", "r1", "--system", "Be brief.").system == "Be brief."
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_settings("r2", ["gsm8k"])


class Recording:
    """A generator that records the requests it is given (and lets `inner` answer them)."""

    def __init__(self, inner):
        self.inner, self.requests = inner, []

    def generate(self, requests):
        self.requests += requests
        return self.inner.generate(requests)


def chatml_copy(checkpoint: Path, folder: Path) -> Path:
    """The checkpoint with SmolLM2's chat template (ChatML: its generation prompt opens no think block)."""
    shutil.copytree(checkpoint, folder)
    smollm2 = Path(__file__).parent / "chat_templates" / "smollm2" / "tokenizer_config.json"
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = json.loads(smollm2.read_text())["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("template", ["r1", "chatml"])
def test_r1_protocol_renders_no_system_the_instruction_and_a_think_prefix(
    template, tiny_checkpoints, tmp_path
):
    from nanoseek.engine import Engine

    model = next(iter(tiny_checkpoints.values()))
    if template == "chatml":
        model = chatml_copy(model, tmp_path / "chatml")
    engine = Engine.from_pretrained(model, max_slots=4)
    tok, gen = engine.tokenizer, Recording(engine)
    tasks = ["arithmetic?digits=1"]
    settings = {**protocol_settings("r1", tasks), "task_k": {}, "max_new_tokens": 6}
    cfg = EvalConfig(tasks=tasks, **settings, k=2, max_problems=2)
    runner = EvalRunner(gen, cfg, tmp_path / "eval", "tiny", progress=False, tokenizer=tok)
    spec, _, problems = runner.tasks[0]
    assert [m["role"] for m in runner.messages(spec, problems[0])] == ["user"]  # no system message
    runner.run()
    records = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").open()]
    assert len(records) == 4 and len(gen.requests) == 2
    for request, record in zip(gen.requests, records[::2]):
        prompt = tok.decode(request.prompt)
        question = record["prompt"]
        assert question.endswith(ANSWER_INSTRUCTION) and question.count(ANSWER_INSTRUCTION) == 1
        if template == "r1":  # R1's format already opens the think block: nothing appended
            assert prompt == f"{BOS}{USER}{question}{ASSISTANT}<think>\n"
        else:  # ChatML does not: the prefix is appended after its generation prompt
            assert prompt.endswith(f"{question}<|im_end|>\n<|im_start|>assistant\n<think>\n")
            assert prompt.count("<|im_start|>user") == 1
        assert prompt.count("<think>") == 1
    for record in records:  # the reply the grader splits starts with the forced prefix
        assert record["completion"].startswith("<think>\n") and record["scored_text"].startswith("<think>\n")
    assert tok.decode(forced_prompt(tok, [{"role": "user", "content": "2+2?"}], "<think>\n")).endswith(
        "<think>\n"
    )
    # no tokenizer (an API renders its own prompts): refused with the way out
    with pytest.raises(ValueError, match="--think-prefix ''"):
        EvalRunner(gen, cfg, tmp_path / "api", model="api")


def test_the_cli_with_seeds_and_protocol_on_a_tiny_model(tiny_checkpoints, tmp_path, capsys):
    model = str(next(iter(tiny_checkpoints.values())))
    base = ["--model", model, "--tasks", "arithmetic?digits=1", "--max-problems", "3", "--no-progress"]
    assert (
        eval_main([*base, "--k", "2", "--seeds", "2", "--max-new-tokens", "4", "--out", str(tmp_path / "s")])
        == 0
    )
    out = capsys.readouterr().out
    assert "| pass@1 | ± SE | 95% CI |" in out and "2 x 2 seeds" in out and "problems.csv" in out
    assert (tmp_path / "s" / "seed-0" / "samples.jsonl").is_file() and (tmp_path / "s" / "seed-1").is_dir()
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    t = summary["tasks"]["arithmetic?digits=1"]
    assert t["error_bars"]["pass@1"]["ci95"] is not None and len(t["per_seed"]["pass@1"]) == 2
    assert len((tmp_path / "s" / "problems.csv").read_text().splitlines()) == 1 + 3
    r1 = [*base, "--protocol", "r1", "--k", "2", "--max-new-tokens", "4", "--out", str(tmp_path / "r1")]
    assert eval_main(r1) == 0
    assert "Protocol r1: k = 2" in (tmp_path / "r1" / "report.md").read_text()
    config = json.loads((tmp_path / "r1" / "config.json").read_text())
    assert (config["temperature"], config["think_prefix"], config["system"]) == (0.6, "<think>\n", None)
    samples = [json.loads(line) for line in (tmp_path / "r1" / "samples.jsonl").open()]
    assert all(s["completion"].startswith("<think>\n") for s in samples)
    # and the two runs compare (different k and seeds: pass rates per problem)
    assert eval_main(["--compare", str(tmp_path / "s"), str(tmp_path / "r1")]) == 0
    assert "| arithmetic?digits=1 | 3 |" in capsys.readouterr().out


def test_the_speedrun_table_shows_intervals():
    from nanoseek.speedrun.report import with_interval

    ev = {"pass@1": 0.611, "error_bars": {"pass@1": {"se": 0.03, "ci95": [0.55, 0.672]}}}
    assert with_interval(ev, "pass@1") == "61.1% [55.0, 67.2]"
    assert with_interval({"pass@1": 0.5}, "pass@1") == "50.0%"  # recorded before evals had error bars


def test_a_run_written_before_the_new_protocol_fields_resumes(tmp_path):
    """config.json of an older eval lacks seeds / task_k / think_prefix / instruction: their defaults."""
    from test_eval_runner import config, fake_for

    summary = run_eval(fake_for(), config(), tmp_path, model="fake", progress=False)
    saved = json.loads((tmp_path / "config.json").read_text())
    for key in ("seeds", "task_k", "think_prefix", "instruction"):
        del saved[key]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    again = fake_for()
    assert run_eval(again, config(), tmp_path, model="fake", progress=False) == summary
    assert again.samples == 0
    with pytest.raises(ValueError, match="different protocol.*think_prefix"):  # not under another protocol
        run_eval(fake_for(), config(think_prefix="<think>\n"), tmp_path, model="fake", progress=False)
