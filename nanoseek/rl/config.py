"""GRPOConfig: the typed config of a GRPO run, read from a TOML recipe plus `section.key=value` overrides.

    cfg = load_grpo_config("recipes/r1_zero_micro.toml", ["grpo.beta=0.04", "run.out=runs/x"])
    cfg.rollout.group_size, cfg.grpo.eps_high, cfg.reward.random       # plain dataclasses, typed
    Path("runs/x/config.toml").write_text(to_toml(cfg))            # the resolved config, a recipe

Sections: [run] [model] [task] [rollout] [reward] [grpo] [train] [eval] [checkpoint] [cost] [lora].
[run], [train] (OptimSection: the optimizer and schedule, so `nanoseek.train.optim` serves both),
[checkpoint], [cost] and [lora] (LoRA adapters, `nanoseek.train.lora`) are the training config's own
sections (`nanoseek.train.config`) with GRPO's defaults; the value syntax, the error messages
(`grpo.eps_hgh: unknown key (did you mean grpo.eps_high?)`) and the TOML writer are shared too. Every
number is >= 0; a section's `rules` add choices and stricter ranges.

The variants people use, as settings (defaults: DeepSeekMath's GRPO with beta = 0 and mu = 1):
    GRPO (DeepSeekMath)  grpo.advantage="grpo"    grpo.aggregation="grpo"     grpo.beta=0.04
    DAPO                 grpo.eps_high=0.28       grpo.aggregation="dapo"     grpo.dynamic_sampling=true
                         reward.overlong="penalty" (or "filter")
    Dr. GRPO             grpo.advantage="dr_grpo" grpo.aggregation="dr_grpo"
    R1-Zero              rollout.template="r1_zero" (a base model; plain-text prompt, <answer> tags)
    R1                   rollout.template="chat"    (an SFT checkpoint; THE chat format)
    vLLM rollouts        rollout.backend="vllm"     (vLLM in this process, weights synced every update)
    random-reward control  reward.random=true       (Bernoulli(reward.random_p) rewards, seeded)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from nanoseek.rl.loss import ADVANTAGE_MODES, AGGREGATIONS
from nanoseek.train.config import (
    POSITIVE,
    CheckpointSection,
    ConfigError,
    CostSection,
    LoRASection,
    OptimSection,
    RunSection,
    load_recipe,
)


@dataclass
class PolicySection:  # GRPO's [model]
    init: str = ""  # the policy to start from: a model, checkpoint or run directory (required)
    reference: str = ""  # the frozen KL reference when grpo.beta > 0; default: model.init


@dataclass
class TaskSection:
    name: str = "arithmetic?digits=2&ops=+"  # a task spec: name[:path][?key=value&...] (as nanoseek eval);
    # files per split: "gsm8k?train=a.jsonl&test=b.jsonl", or one held out: "problems:f.jsonl?holdout=0.1"
    train_split: str = "train"  # prompts for rollouts
    train_problems: int = 0  # size of the prompt pool; 0 = the whole split
    eval_split: str = "test"  # held-out problems for pass@1
    allow_train_on_eval: bool = False  # run even when the eval problems are (some of) the training
    # problems: the same file, or identical prompts; refused otherwise (nanoseek.tasks.overlap)


@dataclass
class RolloutSection:
    template: str = "r1_zero"  # "r1_zero": plain-text R1-Zero prompt (base models); "chat": THE chat format
    group_size: int = 8  # G samples per prompt
    prompts_per_step: int = 16  # groups per optimizer step (after dynamic sampling's filter)
    max_new_tokens: int = 64  # completion budget (L_max)
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=lambda: ["</answer>"])  # r1_zero: stop after the answer tag
    max_slots: int = 0  # engine cache slots (samples decoded together); 0 = prompts_per_step x G
    backend: str = "native"  # "native": nanoseek's engine; "vllm": vLLM in this process (nanoseek[vllm])
    rules: ClassVar = {"template": ("r1_zero", "chat"), "top_p": "[0, 1]", "backend": ("native", "vllm")}
    rules |= dict.fromkeys(("group_size", "prompts_per_step", "max_new_tokens"), POSITIVE)


@dataclass
class RewardSection:
    correct_weight: float = 1.0  # x the task's reward (1 for a correct answer, 0 else; graded tasks between)
    format_weight: float = 0.0  # + this x format reward (<think>..</think> answer; <answer> tags for r1_zero)
    random: bool = False  # control run: rewards ~ Bernoulli(random_p), ignoring the completion
    random_p: float = 0.5
    overlong: str = "none"  # "none", "filter" (truncated samples leave the loss) or "penalty" (DAPO's soft
    # overlong punishment: linear from 0 at max_new_tokens - overlong_buffer to -overlong_penalty at the cap)
    overlong_buffer: int = 16
    overlong_penalty: float = 1.0
    rules: ClassVar = {"random_p": "[0, 1]", "overlong": ("none", "filter", "penalty")}


@dataclass
class GRPOSection:
    advantage: str = "grpo"  # "grpo": (r - mean) / std per group; "dr_grpo": r - mean
    aggregation: str = "grpo"  # "grpo" sequence mean, "dapo" token mean, "dr_grpo" sum / (N x max_new_tokens)
    eps_low: float = 0.2  # clip ratio below 1 - eps_low
    eps_high: float = 0.2  # and above 1 + eps_high (clip-higher: eps_high > eps_low, DAPO uses 0.28)
    beta: float = 0.0  # KL(policy || reference) weight (k3 estimator); 0 loads no reference model
    mu: int = 1  # policy updates (optimizer steps) per batch of rollouts
    micro_batch: int = 32  # sequences per forward/backward (gradient accumulation; memory knob)
    dynamic_sampling: bool = False  # drop groups whose rewards are all equal and sample more prompts
    max_refills: int = 3  # dynamic sampling: at most this many extra rounds of prompts per step
    router_bias_speed: float = 0.0  # MoE aux-loss-free balancing gamma during RL; 0 freezes the routers'
    # biases (DeepSeek-V3 set gamma = 0 for its last 500B pretraining tokens)
    rules: ClassVar = {
        "advantage": ADVANTAGE_MODES,
        "aggregation": AGGREGATIONS,
        "mu": POSITIVE,
        "micro_batch": POSITIVE,
    }


@dataclass
class EvalSection:
    every: int = 10  # held-out pass@1 every N steps, at step 0 and at the end; 0 = start and end only
    problems: int = 200  # held-out problems
    temperature: float = 0.0  # 0 = greedy pass@1; > 0 samples `samples` completions per problem
    samples: int = 1  # completions per problem (pass@1 = mean correctness over them)
    max_new_tokens: int = 0  # 0 = rollout.max_new_tokens
    rules: ClassVar = {"problems": POSITIVE, "samples": POSITIVE}


def _optim() -> OptimSection:  # GRPO's defaults: a small constant learning rate, no weight decay
    return OptimSection(
        max_steps=100,
        lr=1e-4,
        min_lr_ratio=1.0,
        schedule="constant",
        warmup_steps=0,
        weight_decay=0.0,
        beta2=0.99,
    )


@dataclass
class GRPOConfig:
    run: RunSection = field(default_factory=lambda: RunSection(kind="grpo"))
    model: PolicySection = field(default_factory=PolicySection)
    task: TaskSection = field(default_factory=TaskSection)
    rollout: RolloutSection = field(default_factory=RolloutSection)
    reward: RewardSection = field(default_factory=RewardSection)
    grpo: GRPOSection = field(default_factory=GRPOSection)
    train: OptimSection = field(default_factory=_optim)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=lambda: CheckpointSection(keep=2))
    cost: CostSection = field(default_factory=CostSection)
    lora: LoRASection = field(default_factory=LoRASection)  # rank > 0: train adapters only


def load_grpo_config(
    recipe: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> GRPOConfig:
    """A recipe file (or the defaults when None) with `section.key=value` overrides applied, validated."""
    return load_recipe(GRPOConfig, recipe, overrides, validate)


def validate(cfg: GRPOConfig) -> None:
    """The checks across fields (`check_rules` did each field's range); the task spec and the init
    checkpoint are checked when the run starts."""
    if cfg.run.kind != "grpo":
        raise ConfigError(f"run.kind: a GRPO config has kind 'grpo', got {cfg.run.kind!r}")
    if cfg.rollout.group_size < 2:
        raise ConfigError("rollout.group_size: GRPO compares samples within a group; need at least 2")
    if cfg.rollout.temperature == 0:
        raise ConfigError(
            "rollout.temperature: greedy rollouts make every group's samples identical; use > 0"
        )
    if cfg.rollout.backend == "vllm":
        from nanoseek.engine.vllm import INSTALL_HINT, vllm_available

        if not vllm_available():
            raise ConfigError(f"rollout.backend: 'vllm' needs vLLM; {INSTALL_HINT}")
    if cfg.reward.overlong == "penalty" and not 0 < cfg.reward.overlong_buffer <= cfg.rollout.max_new_tokens:
        raise ConfigError(
            "reward.overlong_buffer: must be in (0, rollout.max_new_tokens] for the soft penalty"
        )
