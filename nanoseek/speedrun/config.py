"""SpeedrunConfig: the sizes and steps of every speedrun stage, read from a recipe plus overrides.

    cfg = load_speedrun_config()                                   # the packaged speedrun.toml, the default
                                                                   # (= the dataclass defaults below)
    cfg = load_speedrun_config(QUICK_RECIPE, ["grpo.steps=4"])     # the ~30-second smoke version
    cfg.pretrain.steps, cfg.grpo.group_size                        # plain dataclasses, typed
    Path("runs/speedrun/speedrun.toml").write_text(to_toml(cfg))

Sections: [run] [task] [data] [model] [pretrain] [sft] [grpo] [distill] [serve] [benchmarks]. They are
the pipeline's knobs, not a stage's config: each stage's own config (TrainConfig, GRPOConfig, with the
sections of `nanoseek.train.config`) is built from them as `section.key=value` overrides, so [run]
here (PipelineSection) holds what every stage shares and [model] (BaseModelSection) the shape of the
model pretraining starts from. The recipe loader, value syntax and error messages (`grpo.step:
unknown key (did you mean grpo.steps?)`) are the training config's. Each training section also takes
`overrides`, a list of `section.key=value` strings handed to that stage's own config (`nanoseek
pretrain` / `sft` / `grpo` / distill's student SFT), for the knobs this file does not name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from nanoseek.train.config import ConfigError, fields_of, get_value, load_recipe, packaged_recipe

DEFAULT_RECIPE = packaged_recipe("speedrun.toml")
QUICK_RECIPE = packaged_recipe("speedrun_quick.toml")


@dataclass
class PipelineSection:  # [run]: settings every stage gets
    seed: int = 0
    threads: int = (
        1  # torch CPU threads of in-process stages; 0 = torch's default (tiny models: 1 is fastest)
    )
    price_per_device_hour: float = 0.05  # $ per hour of this machine (a laptop's power and wear)
    progress: bool = True  # progress bars
    device: str = "cpu"  # "cpu", "cuda" or "auto" for the training stages
    rules: ClassVar = {"device": ("cpu", "cuda", "auto")}


@dataclass
class TaskSection:
    name: str = (
        "sort?length=4&max_value=9&instruction="  # a synthetic task spec (nanoseek.tasks.parse_task_spec)
    )
    eval_problems: int = 200  # held-out (test split) problems every stage is evaluated on
    k: int = 4  # samples per problem: pass@1 = mean correctness over k, cons@k = majority vote
    temperature: float = 0.6  # DeepSeek-R1's evaluation protocol
    top_p: float = 0.95
    max_new_tokens: int = 128  # per sample, thinking included
    concurrency: int = 64  # samples decoded together by the engine
    rules: ClassVar = {"top_p": "[0, 1]"}


@dataclass
class DataSection:
    pretrain_shortcut_share: float = 0.3  # pretraining documents that skip the worked steps
    pretrain_copies: int = 1  # documents per train problem
    vocab_size: int = 512
    sft_conversations: int = 100  # cold-start SFT conversations
    sft_shortcut_share: float = 0.25  # of them, answered without the worked steps
    rules: ClassVar = {"pretrain_shortcut_share": "[0, 1]", "sft_shortcut_share": "[0, 1]"}


@dataclass
class BaseModelSection:  # [model]: the untrained MoE that pretraining starts from
    depth: int = 2  # nanoseek.model.config_for_depth: hidden 64 x depth, 8 routed experts + 1 shared
    heads: int = 4  # attention heads (the rung's default is max(2, depth))
    mtp: int = 1  # multi-token prediction depths (DeepSeek-V3 used 1): the draft head of speculation
    mtp_lambda: float = 0.3  # DeepSeek-V3's MTP loss weight for the first part of pretraining...
    mtp_lambda_late: float = 0.1  # ...and after it, and through SFT
    mtp_switch: float = 0.7  # the fraction of pretraining steps at lambda (V3: 10T of 14.8T tokens)
    mtp_rows: int = 2  # pretraining's MTP loss on 2 of each batch's 8 rows: +15% step time, not +60%
    max_position_embeddings: int = 512
    rules: ClassVar = {"mtp_switch": "[0, 1]"}


@dataclass
class PretrainSection:
    steps: int = 800
    seq_len: int = 256
    batch_size: int = 8
    lr: float = 3e-3
    warmup_steps: int = 20
    overrides: list[str] = field(default_factory=list)


@dataclass
class SFTSection:
    steps: int = 100
    seq_len: int = 192  # the longest conversation kept
    batch_size: int = 16
    lr: float = 1e-3
    overrides: list[str] = field(default_factory=list)


@dataclass
class GRPOSection:
    steps: int = 60
    group_size: int = 8
    prompts_per_step: int = 16
    lr: float = 3e-4
    temperature: float = 1.0
    max_new_tokens: int = 128
    format_weight: float = 0.1
    eval_every: int = 20  # held-out greedy pass@1 during training (the curve in the plots); 0 = start, end
    eval_problems: int = 100
    mtp_align_steps: int = 0  # > 0: then re-align the MTP draft head on the GRPO model's greedy
    mtp_align_prompts: int = 256  # answers to this many train problems (an eighth held back to measure)
    overrides: list[str] = field(default_factory=list)


@dataclass
class DistillSection:
    problems: int = 1000  # train problems the teacher (the GRPO model) solves
    k: int = 2  # teacher samples per problem; rejection sampling keeps one verified trace
    student_depth: int = 2  # a dense DeepSeek-V3 (no routed experts)
    student_hidden: int = 96
    steps: int = 400
    batch_size: int = 16
    lr: float = 3e-3
    overrides: list[str] = field(default_factory=list)


@dataclass
class ServeSection:
    requests: int = 64  # held-out prompts sent to the engine to measure $ per million tokens
    max_new_tokens: int = 128
    concurrency: int = 64


@dataclass
class BenchmarksSection:
    problems: int = 50  # the first N problems of GSM8K / MATH-500 when their paths are given
    k: int = 1
    max_new_tokens: int = 256


@dataclass
class SpeedrunConfig:
    run: PipelineSection = field(default_factory=PipelineSection)
    task: TaskSection = field(default_factory=TaskSection)
    data: DataSection = field(default_factory=DataSection)
    model: BaseModelSection = field(default_factory=BaseModelSection)
    pretrain: PretrainSection = field(default_factory=PretrainSection)
    sft: SFTSection = field(default_factory=SFTSection)
    grpo: GRPOSection = field(default_factory=GRPOSection)
    distill: DistillSection = field(default_factory=DistillSection)
    serve: ServeSection = field(default_factory=ServeSection)
    benchmarks: BenchmarksSection = field(default_factory=BenchmarksSection)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(SpeedrunConfig)}  # type: ignore[misc]
NON_NEGATIVE = ("run.seed", "run.threads", "run.price_per_device_hour", "task.temperature", "grpo.eval_every")
NON_NEGATIVE += ("grpo.format_weight", "model.mtp", "model.mtp_lambda", "model.mtp_lambda_late")
NON_NEGATIVE += ("grpo.mtp_align_steps", "model.mtp_rows")


def load_speedrun_config(
    recipe: str | Path | None = DEFAULT_RECIPE, overrides: list[str] | tuple[str, ...] = ()
) -> SpeedrunConfig:
    """A recipe file (the defaults when None) with `section.key=value` overrides applied, validated."""
    return load_recipe(SpeedrunConfig, recipe, overrides, validate)


def validate(cfg: SpeedrunConfig) -> None:
    """Every number positive unless NON_NEGATIVE (the sections' rules and `>= 0` are checked before);
    the task spec is checked when the run starts (building it)."""
    for section, cls in SECTIONS.items():
        for name, hint in fields_of(cls).items():
            key = f"{section}.{name}"
            value = get_value(cfg, key)
            if hint in (int, float) and key not in NON_NEGATIVE and not value > 0:
                raise ConfigError(f"{key}: must be positive, got {value!r}")
    if cfg.grpo.group_size < 2:
        raise ConfigError("grpo.group_size: GRPO compares samples within a group; need at least 2")
    if cfg.model.heads < 1 or (64 * cfg.model.depth) % cfg.model.heads:
        raise ConfigError(f"model.heads: must divide the hidden size {64 * cfg.model.depth}")
