"""The config schema of every training command: sections defined once, composed into TrainConfig
(`nanoseek pretrain` / `sft`), GRPOConfig (`nanoseek.rl.config`) and SpeedrunConfig, each read from a
TOML recipe plus `section.key=value` overrides by the same functions.

    cfg = load_config("recipes/cpu_toy.toml", ["train.max_steps=50", "run.out=runs/x"])
    cfg.train.lr, cfg.model.depth, cfg.data.train          # plain dataclasses, typed
    Path("runs/x/config.toml").write_text(to_toml(cfg))     # the resolved config, itself a recipe
    cfg = load_recipe(GRPOConfig, "recipes/grpo_r1.toml", overrides)   # any config made of sections

A recipe has one TOML table per section ([run], [model], [data], [train], [eval], [checkpoint], [cost],
[lora] here); every key must be a field of that section's dataclass. An override `section.key=value` parses
`value` as a TOML value (`50`, `3e-4`, `true`, `["a", "b"]`), and a bare word is taken as a string
(`run.device=cpu`). Unknown keys, wrong types and out-of-range values raise `ConfigError` naming the
key, e.g. `train.max_step: unknown key (did you mean train.max_steps?)`.

Sections shared by the commands are defined here once: RunSection, CheckpointSection, CostSection
and OptimSection (the optimizer and schedule, [train] of GRPO; TrainSection adds the batch shape).
A config that wants other defaults composes them (GRPO keeps 2 checkpoints, pretraining 3:
`field(default_factory=lambda: CheckpointSection(keep=2))`). Every number must be >= 0; a section's
`rules` name its choices and stricter ranges (`check_rules`); checks across fields are `validate`'s.

A recipe path that does not exist as written but names a packaged recipe (`recipes/cpu_toy.toml`, or
just `cpu_toy.toml`) is read from the recipes shipped inside the package (`find_recipe`), so the
documented commands work from any directory after a plain `pip install`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.resources
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

POSITIVE = "> 0"  # a rule; choices are a tuple, an interval is written "[0, 1]", "[0, 1)", ...


class ConfigError(ValueError):
    """A bad recipe or override; the message names the key (`section.key`) and what was expected."""


@dataclass
class RunSection:
    kind: str = "pretrain"  # the command the recipe is for: "pretrain", "sft" (distillation is sft on
    # traces) or "grpo"; set by the command
    out: str = ""  # run directory (the --out flag overrides it)
    seed: int = 0  # model init and data order (GRPO: prompt order, sampling seeds, random rewards)
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu" or "cuda"
    threads: int = 0  # torch CPU threads; 0 = torch's default (two runs side by side: 1 each)
    progress: bool = True  # tqdm progress bar on the main process
    rules: ClassVar = {"device": ("auto", "cpu", "cuda")}


@dataclass
class ModelSection:
    family: str = "deepseek_v3"  # the architecture of a fresh model: deepseek_v3, or a dense GQA decoder
    # shaped like llama, qwen2 or qwen3 (nanoseek.model.dense); ignored with init (the checkpoint's own)
    depth: int = 2  # the one size knob (nanoseek.model.config_for_depth); ignored with preset or init
    preset: str = ""  # a named rung of the size ladder ("d4", "d16", ...) instead of depth (deepseek_v3)
    init: str = ""  # start from this checkpoint (a model directory or a run directory); sft needs one
    # deepseek_v3 only
    mtp: int | None = None  # MTP depths (num_nextn_predict_layers); default: the preset's (1)
    n_routed_experts: int | None = None  # 0 gives a dense model; default: derived from depth
    aux_loss_alpha: float | None = None  # sequence-wise balance loss weight; default 0 (V3 used 1e-4)
    bias_update_speed: float | None = None  # gamma of aux-loss-free balancing; default 1e-3
    mtp_loss_weight: float | None = None  # lambda of the MTP loss; default 0.3
    mtp_loss_weight_late: float | None = None  # lambda from model.mtp_switch of the steps on (DeepSeek-V3:
    # 0.3 for the first 10T of 14.8T tokens, then 0.1); default: mtp_loss_weight throughout
    mtp_switch: float = 0.7  # fraction of train.max_steps after which mtp_loss_weight_late applies
    mtp_rows: int = 0  # the MTP loss on the first N rows of each micro-batch only (cheaper); 0 = every row
    # dense families only (nanoseek.model.dense_config_for_depth)
    kv_heads: int | None = None  # num_key_value_heads; default: half the query heads (GQA ratio 2)
    tie_embeddings: bool | None = None  # lm_head shares embed_tokens; default: qwen2 yes, others no
    rules: ClassVar = {"family": ("deepseek_v3", "llama", "qwen2", "qwen3"), "kv_heads": POSITIVE}
    rules |= {"mtp_switch": "[0, 1]"}

    # keys that make sense for one kind of family only (set for the other: a ConfigError)
    DEEPSEEK_ONLY: ClassVar = ("preset", "mtp", "n_routed_experts", "aux_loss_alpha", "bias_update_speed")
    DEEPSEEK_ONLY += ("mtp_loss_weight", "mtp_loss_weight_late")
    DENSE_ONLY: ClassVar = ("kv_heads", "tie_embeddings")


@dataclass
class DataSection:
    train: list[str] = field(default_factory=list)  # pretrain: corpus files/dirs/Hub ids or a token-shard
    # dir; sft: chat data files/dirs/Hub ids (any format nanoseek.records reads)
    val: list[str] = field(default_factory=list)  # sft: held-out chat data (default: data.val_fraction)
    synthetic: str = ""  # a nanoseek.tasks synthetic task ("arithmetic", "countdown", "linear", "sort",
    # or a comma-separated mix): generate its problems + solution traces into the run dir as data
    synthetic_examples: int = 20000  # documents (pretrain) or conversations (sft) to generate
    tokenizer: str = ""  # tokenizer directory; default: train one (pretrain) or the init checkpoint's
    vocab_size: int = 512  # when a tokenizer is trained
    text_field: str = "text"  # JSONL key / parquet column of corpus files
    val_fraction: float = 0.01  # held out for validation, of documents / conversations
    skip_bad: bool = False  # sft: skip malformed chat records instead of failing
    num_workers: int = 0  # tokenizing processes; 0 = all cores
    # sft: the shape of a chat record (nanoseek.data.chat): auto (per record), messages (OpenAI), sharegpt,
    # openr1_math (problem + verified generations) or pairs (prompt/response); "" fields: the usual names
    format: str = "auto"
    messages_field: str = ""  # messages / sharegpt: "" = "messages" / "conversations"
    prompt_field: str = ""  # pairs: "" = prompt, instruction, question, query or problem
    response_field: str = ""  # pairs: "" = response, completion, output, answer or solution
    reasoning_field: str = ""  # pairs: "" = reasoning_content or reasoning, where present
    rules: ClassVar = {"synthetic_examples": POSITIVE, "vocab_size": POSITIVE, "val_fraction": "[0, 0.5]"}
    rules |= {"format": ("auto", "messages", "sharegpt", "openr1_math", "pairs")}


@dataclass
class OptimSection:  # AdamW and the learning-rate schedule (nanoseek.train.optim); GRPO's [train]
    max_steps: int = 1000  # optimizer steps (GRPO: steps, one batch of rollouts each)
    lr: float = 3e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # final lr = min_lr_ratio x lr
    schedule: str = "cosine"  # "cosine", "wsd" (warmup-stable-decay) or "constant", after linear warmup
    warmup_steps: int = 20
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays linearly
    weight_decay: float = 0.1  # decoupled (AdamW); never on norms, embeddings or router biases
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    rules: ClassVar = {
        "max_steps": POSITIVE,
        "lr": POSITIVE,
        "min_lr_ratio": "[0, 1]",
        "decay_fraction": "[0, 1]",
    }
    rules |= {"schedule": ("cosine", "wsd", "constant"), "beta1": "[0, 1)", "beta2": "(0, 1)"}


@dataclass
class TrainSection(OptimSection):  # pretraining and SFT: the optimizer plus the batch shape
    seq_len: int = 256  # tokens per row (sft: the longest conversation kept)
    device_batch_size: int = 8  # rows per forward on one device
    batch_tokens: int = 0  # global tokens per optimizer step (device_batch_size x seq_len x world x
    # accumulation); 0 = no gradient accumulation
    dtype: str = "auto"  # "auto" (bf16 autocast on GPU, fp32 on CPU), "bf16" or "fp32"
    compile: bool = False  # torch.compile the model
    fsdp: bool = False  # shard parameters with FSDP2 (fully_shard) instead of DDP under torchrun
    rules: ClassVar = {**OptimSection.rules, "seq_len": POSITIVE, "device_batch_size": POSITIVE}
    rules |= {"dtype": ("auto", "bf16", "fp32")}


@dataclass
class EvalSection:
    every: int = 100  # validate every N steps (and at the end); 0 = only at the end
    batches: int = 20  # at most this many validation batches per rank; 0 = the whole val split
    sample_every: int = 0  # sample generations every N steps (and at the end); 0 = only at the end
    sample_prompts: list[str] = field(default_factory=list)  # pretrain: text prompts to continue
    num_samples: int = 4  # sft: greedy answers to this many held-out conversations' prompts
    sample_tokens: int = 64  # max new tokens per sample
    rules: ClassVar = {"sample_tokens": POSITIVE}


@dataclass
class CheckpointSection:
    every: int = 0  # save every N steps (and always at the end); 0 = only at the end
    keep: int = 3  # keep the last K complete checkpoints
    rules: ClassVar = {"keep": POSITIVE}


@dataclass
class CostSection:
    price_per_device_hour: float = 2.0  # dollars (DeepSeek-V3 assumed $2 per H800 hour)
    peak_flops: float = 0.0  # per device; 0 = the declared bf16 peak of a known GPU, or measured on CPU


@dataclass
class LoRASection:  # low-rank adapters instead of full fine-tuning (nanoseek.train.lora); sft and grpo
    rank: int = 0  # r; 0 = off (every weight trains)
    alpha: float = 16.0  # the adapters' output is scaled by alpha / rank
    dropout: float = 0.0  # on the adapters' input, in training
    targets: list[str] = field(default_factory=list)  # layer names (q_proj, kv_b_proj, down_proj, ...);
    # [] = every attention and dense-MLP projection of the decoder blocks (routed experts stay frozen)
    rules: ClassVar = {"alpha": POSITIVE, "dropout": "[0, 1)"}


@dataclass
class TrainConfig:
    run: RunSection = field(default_factory=RunSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    cost: CostSection = field(default_factory=CostSection)
    lora: LoRASection = field(default_factory=LoRASection)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(TrainConfig)}  # type: ignore[misc]
KINDS = ("pretrain", "sft")  # the run.kind of a TrainConfig


# ---------------------------------------------------------------------------------------- loading


def load_config(recipe: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A recipe file (or the defaults when None) with `section.key=value` overrides applied, validated."""
    return load_recipe(TrainConfig, recipe, overrides, validate)


def load_recipe(cls: type, recipe: str | Path | None, overrides=(), validate_fn=None) -> Any:
    """`cls()` (a config made of sections) set from a recipe and overrides, then checked: every
    section's `rules`, then `validate_fn(cfg)` for the checks across sections."""
    cfg = cls()
    read_recipe(cfg, recipe, overrides)
    check_rules(cfg)
    if validate_fn is not None:
        validate_fn(cfg)
    return cfg


def packaged_recipe(name: str) -> Path:
    """A recipe shipped inside the package (nanoseek/recipes/NAME)."""
    return Path(str(importlib.resources.files("nanoseek") / "recipes" / name))


def find_recipe(recipe: str | Path) -> Path:
    """The recipe file `recipe` names: the file itself when it exists, else the packaged recipe of that
    name when it is written `recipes/NAME.toml` or `NAME.toml` (as the docs write them)."""
    path = Path(recipe)
    if path.is_file():
        return path
    if path.suffix == ".toml" and path.parent in (Path("."), Path("recipes")):
        packaged = packaged_recipe(path.name)
        if packaged.is_file():
            return packaged
    shipped = sorted(p.name for p in packaged_recipe(".").glob("*.toml"))
    raise ConfigError(f"no recipe file at {path} (packaged recipes: {', '.join(shipped)})")


def recipe_parser(prog: str, description: str, init_help: str) -> argparse.ArgumentParser:
    """The command line every training command starts from: a recipe and overrides (`args`), --out,
    --resume and --init; `command_config` reads them."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    metavar, help_ = (
        "RECIPE.toml | section.key=value",
        "a recipe file and/or overrides, e.g. train.max_steps=50",
    )
    p.add_argument("args", nargs="*", metavar=metavar, help=help_)
    p.add_argument("--out", help="run directory (run.out)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest complete checkpoint in --out"
    )
    p.add_argument("--init", help=f"{init_help} (model.init)")
    return p


def command_config(load: Any, kind: str, words: list[str], out: str | None, resume: bool, flags: dict) -> Any:
    """The config of the command line of `nanoseek {kind}`: `words` are its positional arguments (at
    most one recipe file, any `section.key=value` overrides); with --resume and no recipe, the run's
    own config.toml is the recipe. A recipe whose run.kind names another command is refused. `flags`
    (`{"run.out": --out, ...}`, None where a flag was not given) apply last; `load(recipe, overrides)`
    reads and validates."""
    recipes = [a for a in words if "=" not in a]
    overrides = [a for a in words if "=" in a]
    if len(recipes) > 1:
        raise ConfigError(f"expected one recipe file, got {recipes}")
    recipe = find_recipe(recipes[0]) if recipes else None
    if recipe is None and resume and out and (Path(out) / "config.toml").is_file():
        recipe = Path(out) / "config.toml"
    declared = _declared_kind(recipe) if recipe is not None else None
    if declared not in (None, kind):
        raise ConfigError(f"{recipe}: run.kind is {declared!r}; run it with `nanoseek {declared}`")
    settings = [f"{key}={_toml_value(value)}" for key, value in flags.items() if value is not None]
    return load(recipe, [*overrides, *settings])


def _declared_kind(recipe: Path) -> str | None:
    try:
        return tomllib.loads(recipe.read_text()).get("run", {}).get("kind")
    except (OSError, tomllib.TOMLDecodeError):
        return None  # the loader reports it properly


# The helpers below work on any config made of dataclass sections (TrainConfig, GRPOConfig,
# SpeedrunConfig): a section is a field of the config, a key a field of its section.


def sections(cfg: Any) -> dict[str, type]:
    """Section name -> section class of a config dataclass."""
    return {f.name: type(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def read_recipe(cfg: Any, recipe: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> None:
    """Set `cfg` from a TOML recipe file (none when None), then from `section.key=value` overrides."""
    if recipe is not None:
        path = find_recipe(recipe)
        try:
            table = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from None
        apply_table(cfg, table, where=str(recipe))
    for item in overrides:
        apply_override(cfg, item)


def apply_table(cfg: Any, table: dict[str, Any], where: str = "recipe") -> None:
    known = sections(cfg)
    for name, values in table.items():
        if name not in known:
            raise ConfigError(f"{where}: {name}: unknown section{_suggest(name, known)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: {name}: expected a [{name}] table, got {_show(values)}")
        for key, value in values.items():
            set_value(cfg, f"{name}.{key}", value, where)


def apply_override(cfg: Any, item: str) -> None:
    """Apply one `section.key=value` override (the value is read as TOML, a bare word as a string)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise ConfigError(f"override {item!r}: expected section.key=value, e.g. train.max_steps=50")
    hint = _field_type(cfg, key)
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # a bare word: a string
    if hint is not None and _base_type(hint) is str and not isinstance(value, str):
        value = text.strip()  # e.g. data.tokenizer=123 names a directory "123"
    set_value(cfg, key, value, where="override")


def set_value(cfg: Any, key: str, value: Any, where: str = "override") -> None:
    section_name, _, name = key.partition(".")
    known = sections(cfg)
    if section_name not in known:
        raise ConfigError(f"{where}: {key}: unknown section {section_name!r}{_suggest(section_name, known)}")
    hints = fields_of(known[section_name])
    if name not in hints:
        keys = [f"{section_name}.{k}" for k in hints]
        raise ConfigError(f"{where}: {key}: unknown key{_suggest(key, keys)}")
    setattr(getattr(cfg, section_name), name, _coerce(value, hints[name], f"{where}: {key}"))


def fields_of(section: type) -> dict[str, Any]:
    """Key -> type of a section's fields (its `rules` and other class variables are not keys)."""
    names = {f.name for f in dataclasses.fields(section)}
    return {k: v for k, v in typing.get_type_hints(section).items() if k in names}


def _field_type(cfg: Any, key: str):
    section_name, _, name = key.partition(".")
    known = sections(cfg)
    if section_name not in known:
        return None
    return fields_of(known[section_name]).get(name)


def _base_type(hint):
    """int | None -> int; list[str] -> list; int -> int."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def _coerce(value: Any, hint, where: str) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, inner, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {_show(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # 1e6 written for a token count
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {_show(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {_show(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {_show(value)}")
    if typing.get_origin(hint) is list:
        if isinstance(value, str):  # one path given where a list is expected
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        (inner,) = typing.get_args(hint)
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where}: unsupported config type {hint}")


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else f"; known: {', '.join(choices)}"


# ---------------------------------------------------------------------------------------- checks


def check_rules(cfg: Any) -> None:
    """Every number >= 0, and every section's `rules`: choices (a tuple), POSITIVE or an interval such
    as "[0, 1)". None (a derived default) passes."""
    for section, cls in sections(cfg).items():
        rules = getattr(cls, "rules", {})
        for name, hint in fields_of(cls).items():
            key, value = f"{section}.{name}", get_value(cfg, f"{section}.{name}")
            rule = rules.get(name, ">= 0" if _base_type(hint) in (int, float) else None)
            if rule is None or value is None or _satisfies(value, rule):
                continue
            if isinstance(rule, tuple):
                raise ConfigError(f"{key}: expected one of {', '.join(map(repr, rule))}, got {value!r}")
            words = {POSITIVE: "positive", ">= 0": ">= 0"}.get(rule, f"in {rule}")
            raise ConfigError(f"{key}: must be {words}, got {value!r}")


def _satisfies(value: Any, rule: Any) -> bool:
    if isinstance(rule, tuple):
        return value in rule
    if rule in (POSITIVE, ">= 0"):
        return value > 0 if rule == POSITIVE else value >= 0
    lo, hi = (float(x) for x in rule[1:-1].split(","))
    return (value >= lo if rule[0] == "[" else value > lo) and (
        value <= hi if rule[-1] == "]" else value < hi
    )


def validate(cfg: TrainConfig) -> None:
    """The checks across fields of a TrainConfig (the sections' own rules are `check_rules`; batch
    divisibility is checked by the loop, which knows the machine)."""
    if cfg.run.kind not in KINDS:
        raise ConfigError(f"run.kind: expected one of {', '.join(map(repr, KINDS))}, got {cfg.run.kind!r}")
    if cfg.data.synthetic:
        from nanoseek.train.toy_data import SYNTHETIC_TASKS

        unknown = [t for t in cfg.data.synthetic.split(",") if t.strip() not in SYNTHETIC_TASKS]
        if unknown:
            raise ConfigError(
                f"data.synthetic: unknown task(s) {unknown}; choose from {', '.join(SYNTHETIC_TASKS)} "
                "(comma-separated to mix)"
            )
    m = cfg.model
    wrong = ModelSection.DENSE_ONLY if m.family == "deepseek_v3" else ModelSection.DEEPSEEK_ONLY
    for key in wrong:
        if getattr(m, key) not in (None, ""):
            other = "a dense family (llama, qwen2, qwen3)" if m.family == "deepseek_v3" else "deepseek_v3"
            raise ConfigError(f"model.{key}: only for {other}, but model.family is {m.family!r}")
    if cfg.lora.rank and not cfg.model.init:
        raise ConfigError("lora.rank: LoRA adapts a trained model; set model.init (--init)")
    if cfg.lora.rank and cfg.train.fsdp:
        raise ConfigError("lora.rank: LoRA runs under DDP or in one process, not with train.fsdp")
    if not cfg.model.preset and not cfg.model.init and cfg.model.depth < 1:
        raise ConfigError("model.depth: must be >= 1 (or set model.preset / model.init)")
    if cfg.model.preset:
        from nanoseek.model import PRESETS

        if cfg.model.preset not in PRESETS:
            raise ConfigError(
                f"model.preset: unknown {cfg.model.preset!r}; choose one of {', '.join(PRESETS)}"
            )


def get_value(cfg: Any, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(cfg, section), name)


# ---------------------------------------------------------------------------------------- writing


def to_dict(cfg: Any) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(cfg)  # class variables (the sections' rules) are not fields


def to_toml(cfg: Any) -> str:
    """The resolved config as TOML (a recipe: its loader reads it back to an equal config).
    Fields left at None (derived defaults) are omitted, since TOML has no null."""
    lines = []
    for section, values in to_dict(cfg).items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
