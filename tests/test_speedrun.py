"""`nanoseek speedrun --quick` end to end in a temporary directory: every stage runs, report.md has the
table with a row per stage, plots and the DeepSeek comparison, and a rerun skips every finished stage.
Also the recipe (the embedded default equals recipes/speedrun.toml) and the command's clear errors."""

from __future__ import annotations

import json

import pytest

from nanoseek.cli import main as nanoseek_main
from nanoseek.speedrun import SpeedrunConfig, SpeedrunError, load_speedrun_config, run_speedrun
from nanoseek.speedrun.cli import speedrun_main
from nanoseek.speedrun.config import DEFAULT_RECIPE, QUICK_RECIPE
from nanoseek.speedrun.stages import LABELS, MODEL_STAGES, STAGES
from nanoseek.train.config import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_default_recipe_is_the_embedded_default():
    assert load_speedrun_config(DEFAULT_RECIPE) == SpeedrunConfig()
    quick = load_speedrun_config(QUICK_RECIPE)
    assert quick.pretrain.steps < SpeedrunConfig().pretrain.steps


def test_recipe_errors_name_the_key():
    with pytest.raises(ConfigError, match="did you mean grpo.steps"):
        load_speedrun_config(QUICK_RECIPE, ["grpo.step=3"])
    with pytest.raises(ConfigError, match="grpo.group_size"):
        load_speedrun_config(QUICK_RECIPE, ["grpo.group_size=1"])
    with pytest.raises(ConfigError, match="data.sft_shortcut_share"):
        load_speedrun_config(QUICK_RECIPE, ["data.sft_shortcut_share=2"])
    assert speedrun_main(["--quick", "grpo.stepz=1"]) == 2


def test_dry_run_lists_stages(capsys):
    assert nanoseek_main(["speedrun", "--quick", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[grpo]" in out and "pretrain -> eval_pretrain -> eval_student_base -> sft" in out


def test_missing_benchmark_file_is_a_clear_error(tmp_path, capsys):
    code = speedrun_main(["--quick", "--out", str(tmp_path / "run"), "--gsm8k", str(tmp_path / "none.jsonl")])
    assert code == 2
    assert "--gsm8k: no file at" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_speedrun_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "speedrun"
    cfg = load_speedrun_config(QUICK_RECIPE, ["run.progress=false"])
    gsm8k, math500 = tmp_path / "gsm8k.jsonl", tmp_path / "math500.jsonl"
    gsm8k.write_text(
        "".join(
            json.dumps({"question": f"What is {i} + 1?", "answer": f"so\n#### {i + 1}"}) + "\n"
            for i in range(3)
        )
    )
    math500.write_text(
        "".join(json.dumps({"problem": f"Compute ${i} + 2$.", "answer": str(i + 2)}) + "\n" for i in range(3))
    )
    benchmarks = {"gsm8k": str(gsm8k), "math500": str(math500)}
    result = run_speedrun(cfg, out, benchmarks)

    records = result["records"]
    assert set(records) == {s.name for s in STAGES}
    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| stage | params | active params | tokens | time | device-hours | $ |")
    assert "held-out pass@1" in table[0] and "cons@2" in table[0] and "mean response length" in table[0]
    assert "gsm8k pass@1" in table[0] and "math500 pass@1" in table[0] and "near zero" in report
    for name in MODEL_STAGES:
        row = next(line for line in table if line.startswith(f"| {LABELS[name]} |"))
        assert row.count("%") >= 2  # pass@1 and cons@k
    for png in ("loss.png", "reward.png", "accuracy.png", "response_length.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in report
    assert "2.788M H800 GPU-hours" in report and "$0.55" in report and "$2.19" in report
    assert "per million" in report and records["serving"]["output_usd_per_million"] > 0
    serving = records["serving"]  # cache hits priced apart, as DeepSeek's $0.14 / $0.55 / $2.19
    assert "$0.14 (R1 API, cache hit)" in report and serving["cached_input_tokens"] > 0
    assert "input, cache hit (prefix cache)" in report
    assert 0 <= serving["mtp_acceptance_greedy"] <= 1 and "MTP: the model's drafts are accepted" in report
    assert records["grpo"]["mtp_align"]["steps"] == cfg.grpo.mtp_align_steps  # the draft head re-aligned
    assert "nanoseek chat --model" in report and "nanoseek arena serve --contestants" in report
    student = json.loads((out / "stages" / "distill.json").read_text())
    assert student["params"] == student["active_params"]  # dense
    base = records["pretrain"]
    assert base["active_params"] < base["params"]  # a mixture of experts

    # a rerun skips every finished stage and rewrites the same table
    capsys.readouterr()
    again = run_speedrun(cfg, out, benchmarks)
    err = capsys.readouterr().err
    assert err.count("done before, skipped") == len(records)
    assert again["records"]["grpo"] == records["grpo"]

    # a run stopped inside the pipeline continues there: only the missing stages run again
    for name in ("distill", "eval_distill", "serving"):
        (out / "stages" / f"{name}.json").unlink()
    capsys.readouterr()
    resumed = run_speedrun(
        load_speedrun_config(QUICK_RECIPE, ["run.progress=false", "run.threads=2"]), out, benchmarks
    )
    err = capsys.readouterr().err
    assert err.count("done before, skipped") == len(records) - 3
    assert resumed["records"]["distill"]["model_dir"] == records["distill"]["model_dir"]

    # another recipe in the same directory is refused
    with pytest.raises(SpeedrunError, match="different recipe"):
        run_speedrun(load_speedrun_config(QUICK_RECIPE, ["grpo.steps=3"]), out)
