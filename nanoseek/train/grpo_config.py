"""GRPOConfig: the typed config of a GRPO run, read from a TOML recipe plus `section.key=value` overrides.

    cfg = load_grpo_config("recipes/r1_zero_micro.toml", ["grpo.beta=0.04", "run.out=runs/x"])
    cfg.rollout.group_size, cfg.grpo.eps_high, cfg.reward.random       # plain dataclasses, typed
    Path("runs/x/config.toml").write_text(to_toml(cfg))            # the resolved config, a recipe

Sections: [run] [model] [task] [rollout] [reward] [grpo] [train] [eval] [checkpoint] [cost]. The value
syntax, the error messages (`grpo.eps_hgh: unknown key (did you mean grpo.eps_high?)`) and the TOML
writer are those of the pretraining config (`nanoseek.train.config`). The [train] section uses the
pretraining config's names for the optimizer and the schedule, so `nanoseek.train.optim` serves both.

The variants people use, as settings (defaults: DeepSeekMath's GRPO with beta = 0 and mu = 1):
    GRPO (DeepSeekMath)  grpo.advantage="grpo"    grpo.aggregation="grpo"     grpo.beta=0.04
    DAPO                 grpo.eps_high=0.28       grpo.aggregation="dapo"     grpo.dynamic_sampling=true
                         reward.overlong="penalty" (or "filter")
    Dr. GRPO             grpo.advantage="dr_grpo" grpo.aggregation="dr_grpo"
    R1-Zero              rollout.template="r1_zero" (a base model; plain-text prompt, <answer> tags)
    R1                   rollout.template="chat"    (an SFT checkpoint; THE chat format)
    random-reward control  reward.random=true       (Bernoulli(reward.random_p) rewards, seeded)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nanoseek.train.config import ConfigError, get_value, read_recipe


@dataclass
class RunSection:
    out: str = ""  # run directory (the --out flag overrides it)
    seed: int = 0  # prompt order, sampling seeds, the random-reward control
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu" or "cuda"
    threads: int = 0  # torch CPU threads; 0 = torch's default (two runs side by side: 1 each)
    progress: bool = True  # tqdm progress bar


@dataclass
class ModelSection:
    init: str = ""  # the policy to start from: a model, checkpoint or run directory (required)
    reference: str = ""  # the frozen KL reference when grpo.beta > 0; default: model.init


@dataclass
class TaskSection:
    name: str = "arithmetic?digits=2&ops=+"  # a task spec: name[:path][?key=value&...] (as nanoseek eval)
    train_split: str = "train"  # prompts for rollouts
    train_problems: int = 0  # size of the prompt pool; 0 = the whole split
    eval_split: str = "test"  # held-out problems for pass@1


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


@dataclass
class RewardSection:
    correct_weight: float = 1.0  # reward for a correct answer (the task's verifier)
    format_weight: float = 0.0  # + this x format reward (<think>..</think> answer; <answer> tags for r1_zero)
    random: bool = False  # control run: rewards ~ Bernoulli(random_p), ignoring the completion
    random_p: float = 0.5
    overlong: str = "none"  # "none", "filter" (truncated samples leave the loss) or "penalty" (DAPO's soft
    # overlong punishment: linear from 0 at max_new_tokens - overlong_buffer to -overlong_penalty at the cap)
    overlong_buffer: int = 16
    overlong_penalty: float = 1.0


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


@dataclass
class TrainSection:  # the names of nanoseek.train.config.TrainSection, so nanoseek.train.optim applies
    max_steps: int = 100  # GRPO steps (one batch of rollouts each)
    lr: float = 1e-4
    min_lr_ratio: float = 1.0
    schedule: str = "constant"  # "constant", "cosine" or "wsd", after linear warmup
    warmup_steps: int = 0
    decay_fraction: float = 0.2
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 = off


@dataclass
class EvalSection:
    every: int = 10  # held-out pass@1 every N steps, at step 0 and at the end; 0 = start and end only
    problems: int = 200  # held-out problems
    temperature: float = 0.0  # 0 = greedy pass@1; > 0 samples `samples` completions per problem
    samples: int = 1  # completions per problem (pass@1 = mean correctness over them)
    max_new_tokens: int = 0  # 0 = rollout.max_new_tokens


@dataclass
class CheckpointSection:
    every: int = 0  # save every N steps (and always at the end); 0 = only at the end
    keep: int = 2


@dataclass
class CostSection:
    price_per_device_hour: float = 2.0
    peak_flops: float = 0.0  # per device; 0 = a known GPU's datasheet peak, or measured on CPU


@dataclass
class GRPOConfig:
    run: RunSection = field(default_factory=RunSection)
    model: ModelSection = field(default_factory=ModelSection)
    task: TaskSection = field(default_factory=TaskSection)
    rollout: RolloutSection = field(default_factory=RolloutSection)
    reward: RewardSection = field(default_factory=RewardSection)
    grpo: GRPOSection = field(default_factory=GRPOSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    cost: CostSection = field(default_factory=CostSection)


CHOICES = {
    "run.device": ("auto", "cpu", "cuda"),
    "rollout.template": ("r1_zero", "chat"),
    "reward.overlong": ("none", "filter", "penalty"),
    "grpo.advantage": ("grpo", "dr_grpo"),
    "grpo.aggregation": ("grpo", "dapo", "dr_grpo"),
    "train.schedule": ("constant", "cosine", "wsd"),
}
POSITIVE = [
    "rollout.group_size",
    "rollout.prompts_per_step",
    "rollout.max_new_tokens",
    "grpo.mu",
    "grpo.micro_batch",
    "train.max_steps",
    "train.lr",
    "eval.problems",
    "eval.samples",
    "checkpoint.keep",
]
NON_NEGATIVE = [
    "run.threads",
    "task.train_problems",
    "rollout.temperature",
    "rollout.max_slots",
    "reward.overlong_buffer",
    "reward.overlong_penalty",
    "grpo.eps_low",
    "grpo.eps_high",
    "grpo.beta",
    "grpo.max_refills",
    "grpo.router_bias_speed",
    "train.warmup_steps",
    "train.weight_decay",
    "train.grad_clip",
    "eval.every",
    "eval.temperature",
    "eval.max_new_tokens",
    "checkpoint.every",
    "cost.price_per_device_hour",
    "cost.peak_flops",
]


def load_grpo_config(
    recipe: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> GRPOConfig:
    """A recipe file (or the defaults when None) with `section.key=value` overrides applied, validated."""
    cfg = GRPOConfig()
    read_recipe(cfg, recipe, overrides)
    validate(cfg)
    return cfg


def validate(cfg: GRPOConfig) -> None:
    """Choices and ranges; the task spec and the init checkpoint are checked when the run starts."""
    for key, allowed in CHOICES.items():
        if get_value(cfg, key) not in allowed:
            raise ConfigError(
                f"{key}: expected one of {', '.join(map(repr, allowed))}, got {get_value(cfg, key)!r}"
            )
    for key in POSITIVE:
        if not get_value(cfg, key) > 0:
            raise ConfigError(f"{key}: must be positive, got {get_value(cfg, key)!r}")
    for key in NON_NEGATIVE:
        if get_value(cfg, key) < 0:
            raise ConfigError(f"{key}: must be >= 0, got {get_value(cfg, key)!r}")
    for key in ("reward.random_p", "train.min_lr_ratio", "train.decay_fraction", "rollout.top_p"):
        if not 0 <= get_value(cfg, key) <= 1:
            raise ConfigError(f"{key}: must be in [0, 1], got {get_value(cfg, key)!r}")
    if cfg.rollout.group_size < 2:
        raise ConfigError("rollout.group_size: GRPO compares samples within a group; need at least 2")
    if cfg.rollout.temperature == 0:
        raise ConfigError(
            "rollout.temperature: greedy rollouts make every group's samples identical; use > 0"
        )
    if cfg.reward.overlong == "penalty" and not 0 < cfg.reward.overlong_buffer <= cfg.rollout.max_new_tokens:
        raise ConfigError(
            "reward.overlong_buffer: must be in (0, rollout.max_new_tokens] for the soft penalty"
        )
    for key in ("train.beta1", "train.beta2"):
        if not 0 <= get_value(cfg, key) < 1:
            raise ConfigError(f"{key}: must be in [0, 1), got {get_value(cfg, key)!r}")
