"""A reproduction recipe: a TOML file naming the models, data, stages, hardware and published figures of
one public R1 result, read into plain dataclasses, with `--set` overrides and each stage's command line.

    recipe = load_recipe("r1_zero_gsm8k", ["models.base=/models/qwen2.5-0.5b", "grpo.train.max_steps=2"])
    for stage in recipe.stages:
        argv = stage_argv(recipe, stage, out=Path("runs/recipes/r1_zero_gsm8k"))   # the stage's own CLI

The files live in `nanoseek/recipes/repro/NAME.toml` (packaged); a path to another file works too. Tables:

    [recipe]      title, source (where the settings and figures come from), status, notes
    [models.X]    id (a Hub id or a local model directory), and either config (config.json's shape
                  fields, so the estimate needs no download) or preset (a nanoseek preset: from scratch)
    [datasets]    X = a Hub id ("org/name[:config][@split]") or a local file/folder: read in place
    [hardware]    gpu (its name picks the peak FLOP/s from nanoseek.train.cost), gpus, price_per_gpu_hour
    [run]         device, backend: handed to the stages that take them ({run.device}, {run.backend})
    [assumptions] mfu (training), decode_mfu (batched generation): the throughput the estimate assumes
    [[stages]]    name, command (COMMANDS), title, args, recipe (a stage recipe the args override),
                  model (a [models] entry or an earlier stage: the architecture the estimate counts),
                  distributed (torchrun over hardware.gpus), estimate (the stage's workload assumptions)
    [[published]] metric, value, before, source, stage (ours that measures it), note

A stage's `args` are its command's own settings: `section.key = value` overrides for the commands that
read a stage recipe (pretrain, sft, grpo), flags for the others (`max_new_tokens = 64` is
`--max-new-tokens 64`; true is a bare flag). String values may name `{models.X}`, `{datasets.X}`,
`{run.X}`, `{hardware.X}` and `{out}` (the run directory); every stage writes `{out}/<stage name>`.

`--set KEY=VALUE` (the value read as TOML, a bare word as a string):
    models.X=PATH_OR_ID   datasets.X=PATH_OR_ID   run.device=cpu   hardware.gpus=1   assumptions.mfu=0.4
    STAGE.KEY=VALUE       a stage's arg: grpo.train.max_steps=2, eval_base.max_problems=2
    STAGE.estimate.KEY=V  a stage's workload assumption: grpo.estimate.response_tokens=900
Unknown names are errors naming the key and what exists (RecipeError).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes" / "repro"
PLACEHOLDER = re.compile(r"\{([a-z_]+)(?:\.([A-Za-z0-9_]+))?\}")


class RecipeError(ValueError):
    """A recipe that cannot be read or run as given; the message names the file, key or stage."""


@dataclass(frozen=True)
class Command:
    """A stage command: how it is written for a user, and whether it reads a stage recipe (its args are
    `section.key=value` overrides) or flags."""

    words: tuple[str, ...]  # after `nanoseek`
    overrides: bool = False  # args are section.key=value overrides of a stage recipe
    torchrun_module: tuple[str, ...] = ()  # `-m ...` under torchrun (distributed stages)


COMMANDS: dict[str, Command] = {
    "tokenizer train": Command(("tokenizer", "train")),
    "tokenize": Command(("tokenize",)),
    "slice": Command(("recipe", "slice")),
    "pretrain": Command(("pretrain",), True, ("nanoseek.train.cli", "pretrain")),
    "sft": Command(("sft",), True, ("nanoseek.train.cli", "sft")),
    "grpo": Command(("grpo",), True),
    "eval": Command(("eval",)),
}


@dataclass
class Model:
    id: str = ""  # a Hub model id or a local model directory ("" for a model made from scratch)
    config: dict[str, Any] = field(default_factory=dict)  # config.json's shape fields, for the estimate
    preset: str = ""  # a nanoseek preset (a model made from scratch)


@dataclass
class Hardware:
    gpu: str = "H100"
    gpus: int = 1
    price_per_gpu_hour: float = 2.0
    peak_flops: float = 0.0  # per GPU; 0 = the datasheet bf16 peak of `gpu` (nanoseek.train.cost)


@dataclass
class Assumptions:
    mfu: float = 0.3  # model FLOPs utilization of training steps
    decode_mfu: float = 0.05  # of batched generation (rollouts, evaluation)


@dataclass
class Stage:
    name: str
    command: str
    title: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    recipe: str = ""  # the stage recipe the args override (pretrain, sft, grpo)
    model: str = ""  # whose architecture the estimate counts: a [models] entry or an earlier stage
    distributed: bool = False  # torchrun --nproc_per_node hardware.gpus
    estimate: dict[str, Any] = field(default_factory=dict)


@dataclass
class Published:
    metric: str
    value: float | str
    source: str
    before: float | str | None = None  # the figure before the recipe's training, where published
    stage: str = ""  # our stage that measures it
    note: str = ""


@dataclass
class Recipe:
    name: str
    path: Path
    title: str
    source: str
    status: str = "not run on a GPU yet"
    notes: list[str] = field(default_factory=list)
    models: dict[str, Model] = field(default_factory=dict)
    datasets: dict[str, str] = field(default_factory=dict)
    hardware: Hardware = field(default_factory=Hardware)
    run: dict[str, str] = field(default_factory=dict)
    assumptions: Assumptions = field(default_factory=Assumptions)
    stages: list[Stage] = field(default_factory=list)
    published: list[Published] = field(default_factory=list)

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise RecipeError(f"{self.name}: no stage {name!r}; stages: {', '.join(s.name for s in self.stages)}")


# ----------------------------------------------------------------------------------------- reading


def recipe_names() -> list[str]:
    """The packaged recipes, by name."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def recipe_path(name: str) -> Path:
    """A packaged recipe's file, or `name` itself when it is a .toml file."""
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return path
    packaged = RECIPES_DIR / f"{name}.toml"
    if packaged.is_file():
        return packaged
    raise RecipeError(f"no recipe {name!r}; the recipes: {', '.join(recipe_names())} (or a path to a .toml)")


def load_recipe(name: str, sets: list[str] | tuple[str, ...] = ()) -> Recipe:
    """The recipe called `name` (or at that path), with `--set` overrides applied."""
    path = recipe_path(name)
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: invalid TOML: {e}") from None
    recipe = from_table(table, path)
    for item in sets:
        apply_set(recipe, item)
    return recipe


def _take(table: Any, where: str, cls: type, known: dict[str, Any], required: tuple[str, ...] = ()) -> Any:
    """`cls(**table)` after checking that every key is known and of its type(s) (an int is taken where a
    float is asked) and that the required ones are there."""
    if not isinstance(table, dict):
        raise RecipeError(f"{where}: expected a table, got {table!r:.60}")
    values = {}
    for key, value in table.items():
        if key not in known:
            raise RecipeError(f"{where}.{key}: unknown key; known: {', '.join(known)}")
        want = known[key] if isinstance(known[key], tuple) else (known[key],)
        if float in want and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (bool not in want and isinstance(value, bool)):
            names = " or ".join(t.__name__ for t in want)
            raise RecipeError(f"{where}.{key}: expected {names}, got {value!r:.60}")
        values[key] = value
    for key in required:
        if key not in values or values[key] in ("", None):
            raise RecipeError(f"{where}.{key}: required")
    return cls(**values)


def from_table(table: dict[str, Any], path: Path) -> Recipe:
    where = path.name
    extra = set(table) - {"recipe", "models", "datasets", "hardware", "run", "assumptions", "stages"}
    extra -= {"published"}
    if extra:
        raise RecipeError(f"{where}: unknown table(s) {', '.join(sorted(extra))}")
    head = {"name": path.stem, "path": path, **table.get("recipe", {})}
    head_keys = {"name": str, "path": Path, "title": str, "source": str, "status": str, "notes": list}
    recipe = _take(head, f"{where}: [recipe]", Recipe, head_keys, ("title", "source"))
    model_keys = {"id": str, "config": dict, "preset": str}
    recipe.models = {
        k: _take(v, f"{where}: models.{k}", Model, model_keys) for k, v in table.get("models", {}).items()
    }
    recipe.datasets = _strings(table.get("datasets", {}), f"{where}: [datasets]")
    recipe.run = _strings(table.get("run", {}), f"{where}: [run]")
    hw = {"gpu": str, "gpus": int, "price_per_gpu_hour": float, "peak_flops": float}
    recipe.hardware = _take(table.get("hardware", {}), f"{where}: [hardware]", Hardware, hw)
    assumed = {"mfu": float, "decode_mfu": float}
    recipe.assumptions = _take(table.get("assumptions", {}), f"{where}: [assumptions]", Assumptions, assumed)
    stage_keys = {"name": str, "command": str, "title": str, "args": dict, "recipe": str, "model": str}
    stage_keys |= {"distributed": bool, "estimate": dict}
    recipe.stages = [
        _take(s, f"{where}: stages[{i}]", Stage, stage_keys, ("name", "command"))
        for i, s in enumerate(table.get("stages", []))
    ]
    figure = (float, str)
    pub_keys = {"metric": str, "value": figure, "source": str, "before": figure, "stage": str, "note": str}
    recipe.published = [
        _take(p, f"{where}: published[{i}]", Published, pub_keys, ("metric", "value", "source"))
        for i, p in enumerate(table.get("published", []))
    ]
    check(recipe)
    return recipe


def _strings(table: Any, where: str) -> dict[str, str]:
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise RecipeError(f'{where}: expected name = "string" entries')
    return dict(table)


def check(recipe: Recipe) -> None:
    """What the file must satisfy across tables: known commands, unique stage names, placeholders and
    estimate models that exist, a positive hardware count and price >= 0."""
    where = recipe.path.name
    if not recipe.stages:
        raise RecipeError(f"{where}: no [[stages]]")
    if recipe.hardware.gpus < 1 or recipe.hardware.price_per_gpu_hour < 0:
        raise RecipeError(f"{where}: [hardware]: gpus must be >= 1 and price_per_gpu_hour >= 0")
    for name in ("mfu", "decode_mfu"):
        if not 0 < getattr(recipe.assumptions, name) <= 1:
            raise RecipeError(f"{where}: [assumptions].{name}: must be in (0, 1]")
    seen: list[str] = []
    for stage in recipe.stages:
        at = f"{where}: stage {stage.name!r}"
        if stage.command not in COMMANDS:
            raise RecipeError(f"{at}: command {stage.command!r} unknown; known: {', '.join(COMMANDS)}")
        if stage.name in seen or stage.name in SECTIONS:
            raise RecipeError(
                f"{at}: the name is taken (stage names are unique and not {', '.join(SECTIONS)})"
            )
        if stage.recipe and not COMMANDS[stage.command].overrides:
            raise RecipeError(f"{at}: recipe = {stage.recipe!r}, but `{stage.command}` takes no stage recipe")
        if stage.distributed and not COMMANDS[stage.command].torchrun_module:
            raise RecipeError(f"{at}: distributed = true, but `{stage.command}` runs in one process")
        if stage.model and stage.model not in recipe.models and stage.model not in seen:
            raise RecipeError(f"{at}: model {stage.model!r} is neither a [models] entry nor an earlier stage")
        for value in _strings_in(stage.args):
            for m in PLACEHOLDER.finditer(value):
                lookup(recipe, m, at)
        seen.append(stage.name)
    for p in recipe.published:
        if p.stage and p.stage not in seen:
            raise RecipeError(f"{where}: published {p.metric!r}: stage {p.stage!r} is not a stage")


SECTIONS = ("models", "datasets", "run", "hardware", "assumptions", "out")


def _strings_in(args: dict[str, Any]) -> list[str]:
    out = []
    for value in args.values():
        out += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    return out


# ----------------------------------------------------------------------------------------- --set


def parse_value(text: str) -> Any:
    """A --set value: TOML (`2`, `3e-4`, `true`, `["a"]`, `"x"`), else the bare text as a string."""
    try:
        return tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def apply_set(recipe: Recipe, item: str) -> None:
    """One `--set KEY=VALUE` (module docstring)."""
    key, sep, text = item.partition("=")
    head, dot, rest = key.strip().partition(".")
    if not sep or not dot or not rest:
        raise RecipeError(
            f"--set {item!r}: expected KEY=VALUE with KEY like models.base or grpo.train.max_steps"
        )
    value = parse_value(text)
    if head in ("models", "datasets"):
        table = recipe.models if head == "models" else recipe.datasets
        if rest not in table:
            raise RecipeError(
                f"--set {key}: {recipe.name} has no {head} entry {rest!r}; it has {', '.join(table)}"
            )
        if head == "models":
            table[rest].id = str(value)
        else:
            table[rest] = str(value)
    elif head == "run":
        recipe.run[rest] = str(value)
    elif head in ("hardware", "assumptions"):
        target = getattr(recipe, head)
        if not hasattr(target, rest):
            raise RecipeError(f"--set {key}: unknown key; [{head}] has {', '.join(vars(target))}")
        want = type(getattr(target, rest))
        if want in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise RecipeError(f"--set {key}: expected a number, got {value!r}")
        setattr(target, rest, want(value))
        check(recipe)
    elif rest.startswith("estimate."):
        recipe.stage(head).estimate[rest.removeprefix("estimate.")] = value
    else:
        recipe.stage(head).args[rest] = value


# ----------------------------------------------------------------------------------------- command lines


def lookup(recipe: Recipe, match: re.Match, where: str, out: Path | None = None) -> str:
    """The value a `{section.name}` placeholder stands for (RecipeError naming it when there is none)."""
    section, name = match.group(1), match.group(2)
    if section == "out" and name is None:
        return str(out) if out is not None else "{out}"
    table: dict[str, Any] | None = {
        "models": {k: m.id for k, m in recipe.models.items()},
        "datasets": recipe.datasets,
        "run": recipe.run,
        "hardware": vars(recipe.hardware),
    }.get(section)
    if table is None or name is None or name not in table:
        raise RecipeError(
            f"{where}: {match.group(0)} names nothing (use {{models.X}}, {{datasets.X}}, "
            "{run.X}, {hardware.X} or {out} with X defined in the recipe)"
        )
    if section == "models" and not table[name]:
        raise RecipeError(f"{where}: {match.group(0)}: models.{name} has no id (a model made from scratch)")
    return str(table[name])


def substitute(
    recipe: Recipe, value: Any, where: str, out: Path, models: dict[str, str] | None = None
) -> Any:
    """`value` with its placeholders filled; `models` replaces model ids (Hub ids downloaded to paths)."""
    if isinstance(value, list):
        return [substitute(recipe, v, where, out, models) for v in value]
    if not isinstance(value, str):
        return value

    def fill(m: re.Match) -> str:
        if models and m.group(1) == "models" and m.group(2) in models:
            return models[m.group(2)]
        return lookup(recipe, m, where, out)

    return PLACEHOLDER.sub(fill, value)


def toml_value(value: Any) -> str:
    """A value as an override's right-hand side (`section.key=<this>`) reads it back."""
    from nanoseek.train.config import _toml_value

    return _toml_value(value)


def stage_dir(out: Path, stage: Stage) -> Path:
    return out / stage.name


def stage_argv(recipe: Recipe, stage: Stage, out: Path, models: dict[str, str] | None = None) -> list[str]:
    """The arguments after the stage's command words: its recipe and overrides, or its flags; then
    `--out {out}/<stage>`."""
    where = f"{recipe.name}: stage {stage.name!r}"
    args = {k: substitute(recipe, v, where, out, models) for k, v in stage.args.items()}
    argv: list[str] = [stage.recipe] if stage.recipe else []
    if COMMANDS[stage.command].overrides:
        for key, value in args.items():
            if "." not in key:
                raise RecipeError(f"{where}: arg {key!r}: `{stage.command}` takes section.key overrides")
            argv.append(f"{key}={toml_value(value)}")
    else:
        for key, value in args.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value is False:
                continue
            elif isinstance(value, list):
                argv += [flag, *map(str, value)]
            else:
                argv += [flag, str(value)]
    return [*argv, "--out", str(stage_dir(out, stage))]


def stage_overrides(argv: list[str]) -> tuple[str | None, list[str]]:
    """(stage recipe, section.key=value overrides) of a config stage's argv (from `stage_argv`)."""
    words = argv[: argv.index("--out")]
    recipe = words[0] if words and "=" not in words[0] else None
    return recipe, [w for w in words if "=" in w]
