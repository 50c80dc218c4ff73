"""Training config: recipes + overrides -> one typed dataclass; bad keys and values fail naming the key."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from nanoseek.train.cli import parse_args, pretrain_main, sft_main
from nanoseek.train.config import (
    SECTIONS,
    ConfigError,
    TrainConfig,
    find_recipe,
    load_config,
    packaged_recipe,
    to_toml,
)

# the training loop's recipes (GRPO's have sections of their own: [task], [rollout], ...)
RECIPES = sorted(
    p for p in packaged_recipe(".").glob("*.toml") if set(tomllib.loads(p.read_text())) <= set(SECTIONS)
)


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_loads(recipe):
    cfg = load_config(recipe)
    assert isinstance(cfg, TrainConfig) and cfg.train.max_steps > 0


def test_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"cpu_toy.toml", "cpu_toy_sft.toml"} <= names
    assert any("gpu8" in n for n in names) and any(n.startswith("gpu_") for n in names)


def test_overrides_are_typed():
    cfg = load_config(
        None,
        [
            "train.max_steps=50",
            "train.lr=3e-4",
            "train.compile=true",
            "run.device=cpu",  # a bare word is a string
            'data.train=["a.txt", "b.jsonl"]',
            "data.tokenizer=123",  # a string field keeps digits as a string
            "train.batch_tokens=1e6",  # an integral float for an int field
            "model.mtp=0",
            "train.min_lr_ratio=0",  # an int for a float field
        ],
    )
    assert cfg.train.max_steps == 50 and isinstance(cfg.train.max_steps, int)
    assert cfg.train.lr == 3e-4 and cfg.train.compile is True
    assert cfg.run.device == "cpu" and cfg.data.train == ["a.txt", "b.jsonl"]
    assert cfg.data.tokenizer == "123" and cfg.train.batch_tokens == 1_000_000
    assert cfg.model.mtp == 0 and cfg.train.min_lr_ratio == 0.0 and isinstance(cfg.train.min_lr_ratio, float)


def test_recipe_then_overrides(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[train]\nmax_steps = 7\nlr = 1e-3\n[data]\ntrain = ["x.txt"]\n')
    cfg = load_config(recipe, ["train.max_steps=9"])
    assert (cfg.train.max_steps, cfg.train.lr, cfg.data.train) == (9, 1e-3, ["x.txt"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.max_steps=5", "model.mtp=2", 'eval.sample_prompts=["a \\"q\\"", "ü"]'])
    (tmp_path / "config.toml").write_text(to_toml(cfg))
    assert load_config(tmp_path / "config.toml") == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_step=5", "train.max_step: unknown key (did you mean train.max_steps?)"),
        ("trian.lr=1", "unknown section 'trian' (did you mean train?)"),
        ("train.lr=fast", "train.lr: expected a number, got 'fast'"),
        ("train.max_steps=2.5", "train.max_steps: expected an integer"),
        ("train.compile=yes", "train.compile: expected true or false"),
        ("train.schedule=linear", "train.schedule: expected one of 'cosine', 'wsd', 'constant'"),
        ("train.max_steps=0", "train.max_steps: must be positive"),
        ("train.min_lr_ratio=2", "train.min_lr_ratio: must be in [0, 1]"),
        ("train.warmup_steps=-1", "train.warmup_steps: must be >= 0"),
        ("data.val_fraction=0.9", "data.val_fraction: must be in [0, 0.5]"),
        ("model.preset=d3", "model.preset: unknown 'd3'"),
        (
            "data.synthetic=arithmetic,chess",
            "data.synthetic: unknown task(s) ['chess']; choose from arithmetic",
        ),
        ("train.lr", "expected section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value)


def test_bad_recipe_names_file_and_key(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text("[train]\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.toml: train.learning_rate: unknown key"):
        load_config(recipe)
    recipe.write_text("max_steps = 3\n")
    with pytest.raises(ConfigError, match="max_steps: unknown section"):
        load_config(recipe)
    recipe.write_text("[train\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(recipe)
    with pytest.raises(ConfigError, match="no recipe file"):
        load_config(tmp_path / "missing.toml")


def test_cli_flags_become_config(tmp_path):
    argv = ["--data", "a.jsonl", "train.max_steps=3", "--out", str(tmp_path), "--init", "runs/base"]
    cfg, resume = parse_args("sft", [*argv, "--data", "b.jsonl", "--skip-bad"])
    assert cfg.run.kind == "sft" and cfg.run.out == str(tmp_path) and cfg.model.init == "runs/base"
    assert cfg.data.train == ["a.jsonl", "b.jsonl"] and cfg.data.skip_bad and cfg.train.max_steps == 3
    assert not resume
    toy, _ = parse_args("pretrain", [str(RECIPES[0].parent / "cpu_toy.toml"), "--data", "corpus/"])
    assert toy.data.train == ["corpus/"] and toy.data.synthetic == ""  # --data replaces the synthetic corpus


def test_cli_resume_reuses_the_runs_config(tmp_path):
    cfg = load_config(None, ["train.max_steps=11", f"run.out={tmp_path}"])
    (tmp_path / "config.toml").write_text(to_toml(cfg))
    again, resume = parse_args("pretrain", ["--out", str(tmp_path), "--resume"])
    assert resume and again.train.max_steps == 11


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert pretrain_main(["train.max_stepz=3", "--out", str(tmp_path)]) == 2
    assert "train.max_stepz: unknown key (did you mean train.max_steps?)" in capsys.readouterr().err
    sft_recipe = packaged_recipe("cpu_toy_sft.toml")
    assert pretrain_main([str(sft_recipe), "--out", str(tmp_path)]) == 2
    assert "run it with `nanoseek sft`" in capsys.readouterr().err
    assert sft_main(["--out", str(tmp_path), "data.synthetic=arithmetic"]) == 2
    assert "sft starts from a base checkpoint" in capsys.readouterr().err


def test_a_packaged_recipe_is_found_from_any_directory(tmp_path, monkeypatch):
    """`nanoseek pretrain recipes/cpu_toy.toml` works where there is no recipes/ directory (a plain
    install): the recipe shipped in the package is read; a local file of that path wins."""
    monkeypatch.chdir(tmp_path)
    assert (
        find_recipe("recipes/cpu_toy.toml") == find_recipe("cpu_toy.toml") == packaged_recipe("cpu_toy.toml")
    )
    assert (
        load_config("recipes/cpu_toy.toml").train.max_steps
        == load_config(packaged_recipe("cpu_toy.toml")).train.max_steps
    )
    cfg, _ = parse_args("sft", ["recipes/cpu_toy_sft.toml", "--out", "runs/x"])
    assert cfg.run.kind == "sft" and cfg.run.out == "runs/x"
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "cpu_toy.toml").write_text("[train]\nmax_steps = 7\n")
    assert load_config("recipes/cpu_toy.toml").train.max_steps == 7
    with pytest.raises(
        ConfigError, match=r"no recipe file at recipes/nope.toml \(packaged recipes: cpu_toy.toml"
    ):
        load_config("recipes/nope.toml")
    with pytest.raises(ConfigError, match="no recipe file at elsewhere/cpu_toy.toml"):
        load_config("elsewhere/cpu_toy.toml")  # only the documented spellings fall back to the package


def test_the_wheel_ships_the_recipes(tmp_path):
    """A non-editable install gets every recipe: build the wheel (from a copy of the sources, so no
    stale build/ directory can hide a missing file) and look inside."""
    pytest.importorskip("setuptools", reason="builds without downloading: needs setuptools installed")
    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    shutil.copytree(root / "nanoseek", src / "nanoseek", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        cwd=src,
    )
    (wheel,) = tmp_path.glob("nanoseek-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"nanoseek/recipes/{p.name}" for p in packaged_recipe(".").glob("*.toml")}
    assert {"nanoseek/recipes/cpu_toy.toml", "nanoseek/recipes/speedrun.toml"} <= shipped <= names
