"""The public R1 recipes (`nanoseek recipe`, nanoseek/recipes/repro/): every recipe runs end to end for two
steps on a tiny random checkpoint of its family (transformers writes it here) and a tiny dataset in its
real format written here (GSM8K's question/answer, TinyZero's Countdown parquet rows target/nums, AIME and
MATH-500 rows, OpenR1-Math rows, a FineWeb-style corpus and chat messages), with `--set` pointing the
recipe's Hub ids at the local files, the devices at the CPU and vLLM at nanoseek's engine. Every dry run
prints the plan, the time and cost with its arithmetic and the published figures, without a network.
The GPU settings themselves stay in the recipes: they never run here."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from test_families_stages import template_tokenizer

from nanoseek.repro import RecipeError, estimate, load_recipe, recipe_names
from nanoseek.repro.cli import recipe_main
from nanoseek.repro.run import fetch_models, slice_rows

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples?", "A box holds 6 eggs. How many in 2 boxes?",
    "Sam reads 5 pages a day. How many pages in 3 days?", "There are 9 birds; 4 fly away. How many?",
]  # fmt: skip
ANSWERS = [7, 12, 15, 5]
CPU = ["run.device=cpu", "run.backend=native", "hardware.gpus=1"]  # every recipe's GPU settings, on the CPU
TINY_EVAL = ["max_problems=2", "max_new_tokens=8", "k=1", "no_progress=true"]
TINY_GRPO = [
    "train.max_steps=2", "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=8",
    "eval.problems=2", "eval.every=0", "eval.max_new_tokens=8", "grpo.micro_batch=4", "checkpoint.every=0",
    "run.progress=false", "cost.peak_flops=1e10",
]  # fmt: skip


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def write_parquet(path: Path, rows: list[dict]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def sets(stage: str, items: list[str]) -> list[str]:
    return [f"{stage}.{item}" for item in items]


def run(name: str, out: Path, *items: str) -> int:
    argv = ["run", name, "--out", str(out)]
    for item in [*CPU, *items]:
        argv += ["--set", item]
    return recipe_main(argv)


def done(out: Path) -> set[str]:
    return {p.stem for p in (out / "stages").glob("*.json")}


def model_dir(template: str, out: Path, hf_dense_builder) -> Path:
    """A tiny Qwen2 checkpoint as transformers writes it, with `template`'s tokenizer and chat template."""
    tok = template_tokenizer(template, out)
    generation = (out / "generation_config.json").read_text()
    ids = dict(vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    hf_dense_builder(out, "qwen2", max_position_embeddings=1024, **ids)
    (out / "generation_config.json").write_text(generation)  # the template's stop tokens, not the model's
    return out


@pytest.fixture(scope="module")
def qwen_base(tmp_path_factory, hf_dense_builder) -> Path:
    """A Qwen2.5-shaped base (its chat template, no think tokens): the family of Qwen2.5-0.5B/1.5B/3B."""
    return model_dir("qwen2.5", tmp_path_factory.mktemp("qwen_base"), hf_dense_builder)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("recipe_data")
    gsm8k = [{"question": q, "answer": f"We add.\n#### {a}"} for q, a in zip(QUESTIONS, ANSWERS)]
    aime = [
        {
            "id": 60 + i,
            "problem": q,
            "solution": "...",
            "answer": str(a),
            "url": "https://aops",
            "year": "2024",
        }
        for i, (q, a) in enumerate(zip(QUESTIONS, ANSWERS))
    ]
    math500 = [
        {"problem": q, "solution": f"$\\boxed{{{a}}}$", "answer": str(a), "subject": "Algebra", "level": 1,
         "unique_id": f"test/algebra/{i}.json"}
        for i, (q, a) in enumerate(zip(QUESTIONS, ANSWERS))
    ]  # fmt: skip
    openr1 = [
        {"problem": q, "solution": f"{a}", "answer": str(a), "uuid": f"u{i}", "correctness_count": 1,
         "generations": [f"<think>\nI think it is {a + 1}.\n</think>\n\n$\\boxed{{{a + 1}}}$",
                         f"<think>\nCount them: {a}.\n</think>\n\nThe answer is $\\boxed{{{a}}}$."],
         "correctness_math_verify": [False, True], "is_reasoning_complete": [True, True]}
        for i, (q, a) in enumerate(zip(QUESTIONS, ANSWERS))
    ]  # fmt: skip
    mixture = [
        {"messages": [{"role": "user", "content": q},
                      {"role": "assistant", "content": f"<think>\nCount them: {a}.\n</think>\n\n$\\boxed{{{a}}}$"}],
         "num_tokens": 40, "source": "open-r1/OpenR1-Math-220k"}
        for q, a in zip(QUESTIONS, ANSWERS)
    ]  # fmt: skip
    corpus = [{"text": f"{q} The answer is {a}. " * 8} for q, a in zip(QUESTIONS * 6, ANSWERS * 6)]
    chat = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f"It is {a}."}]}
        for q, a in zip(QUESTIONS * 2, ANSWERS * 2)
    ]
    countdown = [{"target": 24, "nums": [2, 3, 4]}, {"target": 10, "nums": [1, 2, 7]}]
    countdown += [{"target": 6, "nums": [1, 5, 9]}, {"target": 15, "nums": [3, 5, 8]}]
    countdown += [{"target": 8, "nums": [2, 4, 6]}, {"target": 12, "nums": [3, 4, 7]}]
    return {
        "gsm8k_train": write_jsonl(d / "gsm8k_train.jsonl", gsm8k),
        "gsm8k_test": write_jsonl(
            d / "gsm8k_test.jsonl", [{**r, "question": "Again: " + r["question"]} for r in gsm8k]
        ),
        "aime24": write_jsonl(d / "aime_2024.jsonl", aime),
        "math500": write_jsonl(d / "math500.jsonl", math500),
        "openr1": write_parquet(d / "openr1_math.parquet", openr1),
        "mixture_of_thoughts": write_jsonl(d / "mixture_of_thoughts.jsonl", mixture),
        "countdown": write_parquet(d / "countdown.parquet", countdown),
        "corpus": write_jsonl(d / "fineweb.jsonl", corpus),
        "chat": write_jsonl(d / "smoltalk.jsonl", chat),
    }


# ------------------------------------------------------------------------------------- dry runs


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a dry run opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_there_are_the_five_recipes():
    assert recipe_names() == [
        "d20_pipeline", "openr1_distill_sft", "r1_distill_eval", "r1_zero_gsm8k", "tinyzero_countdown",
    ]  # fmt: skip


@pytest.mark.parametrize("name", recipe_names())
def test_dry_run_prints_the_plan_time_cost_and_published_figures(name, no_network, tmp_path, capsys):
    out = tmp_path / "run"
    assert recipe_main(["run", name, "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    recipe = load_recipe(name)
    assert recipe.source in text and "not run on a GPU yet" in text
    for i, stage in enumerate(recipe.stages, 1):  # every stage, its command, its arithmetic
        assert f"  {i}. {stage.name}: " in text
    assert text.count("\n     $ ") == len(recipe.stages) and "--out " + str(out) in text
    assert "total: " in text and "GPU-hours x $" in text
    for p in recipe.published:
        assert p.metric in text and p.source in text
    for model in recipe.models.values():
        assert model.id in text if model.id else f"preset {model.preset}" in text
    if any(s.distributed for s in recipe.stages):
        assert f"torchrun --standalone --nproc_per_node {recipe.hardware.gpus} -m nanoseek.train.cli" in text
    assert not out.exists()  # a dry run writes nothing


@pytest.mark.parametrize("name", recipe_names())
def test_the_figures_stated_in_the_file_are_the_estimate(name):
    """Each file's header states its time and cost; they are what the estimate computes (so they do not
    rot when a setting changes)."""
    recipe = load_recipe(name)
    stated = re.search(
        r"# Estimated time and cost: ~([\d.]+) h on (\d+) x .*, ~\$([\d,]+) at", recipe.path.read_text()
    )
    assert stated, f"{recipe.path.name}: no '# Estimated time and cost: ...' line"
    plan = estimate(recipe, Path("runs/x"))
    hours, gpus, dollars = float(stated[1]), int(stated[2]), int(stated[3].replace(",", ""))
    assert (hours, gpus, dollars) == (round(plan.total_hours, 1), recipe.hardware.gpus, round(plan.dollars))
    docs = (
        Path(__file__).resolve().parents[1] / "docs" / "toy_to_cluster.md"
    ).read_text()  # its Recipes table
    row = re.search(rf"^\| `{name}` \|.*\| {gpus} x H100 \| ~([\d.]+) h, ~\$([\d,]+) \|", docs, re.M)
    assert row and (float(row[1]), int(row[2].replace(",", ""))) == (hours, dollars), f"docs: {name}'s row"


def test_the_cost_is_wall_time_times_the_gpus_rented_and_scales_with_the_work():
    recipe = load_recipe("openr1_distill_sft")
    plan = estimate(recipe, Path("runs/x"))
    assert plan.dollars == pytest.approx(plan.total_hours * 8 * recipe.hardware.price_per_gpu_hour)
    sft = plan.stages[0]
    # the distributed SFT: the same FLOPs on one GPU take 8x as long; twice the steps, twice the time
    one = estimate(load_recipe("openr1_distill_sft", ["hardware.gpus=1"]), Path("runs/x")).stages[0]
    assert one.seconds == pytest.approx(8 * sft.seconds)
    longer = estimate(load_recipe("openr1_distill_sft", ["sft.train.max_steps=4394"]), Path("runs/x")).stages[
        0
    ]
    assert longer.seconds == pytest.approx(2 * sft.seconds)
    # a stage's workload assumption can be set too: twice the reply length, about twice the generation
    grpo = estimate(load_recipe("r1_zero_gsm8k"), Path("x")).stages[1]
    longer = estimate(load_recipe("r1_zero_gsm8k", ["grpo.estimate.response_tokens=800"]), Path("x")).stages[
        1
    ]
    assert "~400 tokens" in grpo.lines[0] and "~800 tokens" in longer.lines[0]
    assert 1.7 * grpo.seconds < longer.seconds < 2.1 * grpo.seconds  # training tokens grow 550 -> 950
    # an eval's generation time is proportional to samples x seeds
    evals = estimate(load_recipe("r1_distill_eval"), Path("x")).stages[0].seconds
    half = estimate(load_recipe("r1_distill_eval", ["eval.seeds=2"]), Path("x")).stages[0].seconds
    assert evals == pytest.approx(2 * half)


def test_a_local_model_is_counted_from_its_own_config(qwen_base):
    """--set models.base=PATH: the estimate reads the directory's config.json, not the recipe's copy."""
    hub = estimate(load_recipe("r1_zero_gsm8k"), Path("x")).stages[0].architecture
    local = (
        estimate(load_recipe("r1_zero_gsm8k", [f"models.base={qwen_base}"]), Path("x")).stages[0].architecture
    )
    assert hub.hidden_size == 896 and local.hidden_size == 64


def test_list_shows_every_recipe_with_its_estimate(capsys):
    from nanoseek.cli import main

    assert main(["recipe", "list"]) == 0
    text = capsys.readouterr().out
    for name in recipe_names():
        assert f"| {name} |" in text
    assert text.count("~$") == len(recipe_names())


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("models.policy=/x", r"no models entry 'policy'; it has base"),
        ("grpoo.train.max_steps=2", r"no stage 'grpoo'; stages: eval_base, grpo, eval_grpo"),
        ("hardware.gpuz=2", r"hardware.gpuz: unknown key"),
        ("hardware.gpus=two", r"expected a number"),
        ("grpo=3", r"expected KEY=VALUE"),
    ],
)
def test_bad_sets_name_the_key(item, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("r1_zero_gsm8k", [item])


def test_a_bad_stage_setting_is_named_by_the_stage_and_key(capsys):
    assert recipe_main(["run", "r1_zero_gsm8k", "--dry-run", "--set", "grpo.rollout.group_sise=2"]) == 2
    err = capsys.readouterr().err
    assert (
        "stage 'grpo'" in err and "rollout.group_sise: unknown key (did you mean rollout.group_size?)" in err
    )


def test_a_bad_recipe_file_is_named(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[recipe]\ntitle = "t"\nsource = "s"\n[[stages]]\nname = "a"\ncommand = "train"\n')
    with pytest.raises(RecipeError, match=r"mine.toml: stage 'a': command 'train' unknown"):
        load_recipe(str(path))
    path.write_text(
        '[recipe]\ntitle = "t"\nsource = "s"\n[[stages]]\nname = "a"\ncommand = "eval"\nargs = { model = "{models.m}" }\n'
    )
    with pytest.raises(RecipeError, match=r"\{models.m\} names nothing"):
        load_recipe(str(path))
    path.write_text('[recipe]\ntitle = "t"\nsource = "s"\n[[stages]]\ncommand = "eval"\n')
    with pytest.raises(RecipeError, match=r"mine.toml: stages\[0\].name: required"):
        load_recipe(str(path))
    path.write_text('[recipe]\ntitle = "t"\nsource = "s"\n[hardware]\ngpus = "eight"\n')
    with pytest.raises(RecipeError, match=r"\[hardware\].gpus: expected int, got 'eight'"):
        load_recipe(str(path))


def test_hub_models_are_downloaded_once_and_a_failure_says_how_to_go_on(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    def download(repo_id):
        calls.append(repo_id)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    assert fetch_models(load_recipe("r1_zero_gsm8k")) == {"base": str(tmp_path)}
    assert calls == ["Qwen/Qwen2.5-0.5B"]
    assert fetch_models(load_recipe("r1_zero_gsm8k", [f"models.base={tmp_path}"])) == {"base": str(tmp_path)}
    assert calls == ["Qwen/Qwen2.5-0.5B"]  # a local path is used as it is

    def offline(repo_id):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(
        RecipeError, match=r"models.base: could not download Qwen/Qwen2.5-0.5B.*--set models.base=PATH"
    ):
        fetch_models(load_recipe("r1_zero_gsm8k"))
    with pytest.raises(RecipeError, match="neither a local path nor a Hub model id"):
        fetch_models(load_recipe("r1_zero_gsm8k", ["models.base=/no/such/model"]))


def test_slice_keeps_the_rows_in_order_and_refuses_a_short_file(data, tmp_path):
    assert slice_rows(data["countdown"], 1, 3, tmp_path / "s") == 2
    rows = [json.loads(line) for line in (tmp_path / "s" / "data.jsonl").read_text().splitlines()]
    assert rows == [{"target": 10, "nums": [1, 2, 7]}, {"target": 6, "nums": [1, 5, 9]}]
    with pytest.raises(RecipeError, match=r"countdown.parquet has 6 rows; rows 4 to 10 were asked for"):
        slice_rows(data["countdown"], 4, 10, tmp_path / "t")


# ------------------------------------------------------------------------------------- two-step runs


def test_r1_zero_gsm8k_two_steps_and_a_rerun_skips_finished_stages(qwen_base, data, tmp_path, capsys):
    out = tmp_path / "r1_zero"
    items = [
        f"models.base={qwen_base}",
        f"datasets.train={data['gsm8k_train']}",
        f"datasets.test={data['gsm8k_test']}",
    ]
    items += sets("eval_base", TINY_EVAL) + sets("grpo", TINY_GRPO) + sets("eval_grpo", TINY_EVAL)
    assert run("r1_zero_gsm8k", out, *items) == 0
    assert done(out) == {"eval_base", "grpo", "eval_grpo"}
    assert (out / "grpo" / "model" / "config.json").is_file() or any(
        (out / "grpo").rglob("model.safetensors")
    )
    for stage in ("eval_base", "eval_grpo"):
        assert (out / stage / "summary.json").is_file()
    assert "| grpo |" in (out / "report.md").read_text() and "36.7 -> 49.5" in (out / "report.md").read_text()
    assert "total: " in (out / "plan.txt").read_text()
    capsys.readouterr()
    assert run("r1_zero_gsm8k", out, *items) == 0  # the same command again: nothing to do
    assert capsys.readouterr().err.count("done before, skipped") == 3
    assert run("r1_zero_gsm8k", out, *items, "grpo.train.lr=1e-3") == 2  # a finished stage changed: refused
    assert "stage 'grpo' finished there with other settings" in capsys.readouterr().err
    (out / "stages" / "eval_grpo.json").unlink()  # a stage still to run may change (here: how it batches)
    assert run("r1_zero_gsm8k", out, *items, "eval_grpo.concurrency=4") == 0
    assert capsys.readouterr().err.count("done before, skipped") == 2 and done(out) >= {"eval_grpo"}


def test_tinyzero_countdown_two_steps(qwen_base, data, tmp_path):
    out = tmp_path / "tinyzero"
    items = [f"models.base={qwen_base}", f"datasets.countdown={data['countdown']}"]
    items += ["train_rows.stop=4", "test_rows.start=4", "test_rows.stop=6", *sets("grpo", TINY_GRPO)]
    assert run("tinyzero_countdown", out, *items) == 0
    assert done(out) == {"train_rows", "test_rows", "grpo"}
    test_rows = [json.loads(line) for line in (out / "test_rows" / "data.jsonl").read_text().splitlines()]
    assert test_rows == [{"target": 8, "nums": [2, 4, 6]}, {"target": 12, "nums": [3, 4, 7]}]
    metrics = (out / "grpo" / "metrics.jsonl").read_text()
    assert '"step": 2' in metrics


def test_r1_distill_eval_two_seeds(data, tmp_path, tmp_path_factory, hf_dense_builder):
    model = model_dir("r1_distill", tmp_path_factory.mktemp("r1_distill"), hf_dense_builder)
    out = tmp_path / "r1_distill"
    items = [
        f"models.model={model}",
        f"datasets.aime24={data['aime24']}",
        f"datasets.math500={data['math500']}",
    ]
    items += sets("eval", ["k=2", "seeds=2", "max_new_tokens=8", "max_problems=2", "no_progress=true"])
    assert run("r1_distill_eval", out, *items) == 0
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert {p.name for p in (out / "eval").glob("seed-*")} == {"seed-0", "seed-1"}
    assert "aime24" in json.dumps(summary) and "math500" in json.dumps(summary)
    protocol = json.loads((out / "eval" / "config.json").read_text())  # R1's, with our k and budget
    assert (protocol["temperature"], protocol["top_p"], protocol["think_prefix"]) == (0.6, 0.95, "<think>\n")
    assert protocol["system"] is None and "\\boxed{}" in protocol["instruction"] and protocol["k"] == 2


@pytest.mark.parametrize("traces", ["openr1", "mixture_of_thoughts"])
def test_openr1_distill_sft_two_steps(traces, qwen_base, data, tmp_path):
    """OpenR1-Math-220k's rows (the recipe's) and Mixture-of-Thoughts' (its documented alternative)."""
    out = tmp_path / "openr1"
    items = [f"models.base={qwen_base}", f"datasets.traces={data[traces]}"]
    items += [f"datasets.aime24={data['aime24']}", f"datasets.math500={data['math500']}"]
    items += sets(
        "sft",
        ["train.max_steps=2", "train.seq_len=256", "train.device_batch_size=2", "train.batch_tokens=0",
         "train.warmup_steps=1", "eval.every=0", "eval.num_samples=1", "eval.sample_tokens=8",
         "checkpoint.every=0", "run.progress=false", "cost.peak_flops=1e10", "data.val_fraction=0.25"],
    )  # fmt: skip
    items += sets("eval", ["k=1", "max_new_tokens=8", "max_problems=1", "no_progress=true"])
    assert run("openr1_distill_sft", out, *items) == 0
    assert done(out) == {"sft", "eval"}
    trained = (out / "sft" / "metrics.jsonl").read_text()
    assert '"step": 2' in trained
    assert (
        "3 training conversations (0 without assistant tokens dropped, 0 malformed skipped), 1 held out"
        in (out / "sft" / "report.md").read_text()
    )
    assert (out / "eval" / "summary.json").is_file()


def test_d20_pipeline_two_steps(data, tmp_path):
    out = tmp_path / "d20"
    tiny_train = [
        "train.max_steps=2",
        "train.device_batch_size=2",
        "train.batch_tokens=0",
        "train.warmup_steps=0",
    ]
    tiny_train += ["eval.every=0", "eval.sample_every=0", "checkpoint.every=0", "run.progress=false"]
    tiny_train += ["cost.peak_flops=1e10", "data.num_workers=1"]
    items = [f"datasets.corpus={data['corpus']}", f"datasets.chat={data['chat']}"]
    items += [f"datasets.gsm8k_train={data['gsm8k_train']}", f"datasets.gsm8k_test={data['gsm8k_test']}"]
    items += ["tokenizer.vocab_size=300", "tokenizer.max_chars=100000", "shards.workers=1"]
    items += sets(
        "pretrain",
        [*tiny_train, 'model.preset="d2"', "train.seq_len=64", "eval.batches=1", "eval.sample_prompts=[]"],
    )
    items += sets(
        "sft",
        [
            *tiny_train,
            "train.seq_len=128",
            "eval.num_samples=1",
            "eval.sample_tokens=8",
            "data.val_fraction=0.25",
        ],
    )
    items += sets("eval_sft", TINY_EVAL) + sets("grpo", TINY_GRPO) + sets("eval_grpo", TINY_EVAL)
    assert run("d20_pipeline", out, *items) == 0
    assert done(out) == {"tokenizer", "shards", "pretrain", "sft", "eval_sft", "grpo", "eval_grpo"}
    config = json.loads(next((out / "pretrain").rglob("config.json")).read_text())
    assert (
        config["model_type"] == "deepseek_v3" and config["num_nextn_predict_layers"] == 1
    )  # MLA + MoE + MTP
    assert config["n_routed_experts"] > 0 and config["kv_lora_rank"] > 0
