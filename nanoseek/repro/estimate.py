"""How long a recipe takes and what it costs, with the arithmetic shown: FLOPs from the model's accounting
(`nanoseek.model.account`), a throughput assumption, and the price of the GPUs rented.

    plan = estimate(recipe, out)              # one StageEstimate per stage, in order
    plan.total_hours, plan.dollars, plan.stages[0].lines

The rules, per stage command (every assumption is a number in the recipe file, shown in the dry run):
    pretrain, sft  tokens = train.max_steps x tokens per step (train.batch_tokens, else rows x seq_len x
                   GPUs); FLOPs = tokens x training FLOPs per token at train.seq_len, MTP modules
                   included (`nanoseek.train.cost.train_flops_per_token`, what a run's cost meter counts);
                   time = FLOPs / (GPUs x peak x assumptions.mfu).
    grpo           per step, prompts_per_step x group_size rollouts of estimate.prompt_tokens +
                   estimate.response_tokens: generation = rollouts x response_tokens x forward FLOPs per
                   token at the mean context, at assumptions.decode_mfu; training = rollouts x all tokens x
                   (grpo.mu x training FLOPs + a forward for the reference model when grpo.beta > 0), at
                   assumptions.mfu; plus the held-out evaluations (eval.problems x eval.samples every
                   eval.every steps, at the start and the end) at decode_mfu.
    eval           per task, problems x samples (k, or the protocol's per-task k) x seeds x
                   estimate.response_tokens generated, at decode_mfu.
    tokenizer train, tokenize, slice   estimate.seconds, a CPU figure the recipe states with its basis.
A stage that runs in one process keeps one GPU busy; the rented GPUs are paid for all the same, so
dollars = wall hours x hardware.gpus x hardware.price_per_gpu_hour.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from nanoseek.repro.recipe import COMMANDS, Model, Recipe, RecipeError, Stage, stage_argv, stage_overrides


@dataclass
class StageEstimate:
    stage: Stage
    argv: list[str]
    seconds: float = 0.0
    gpus_busy: int = 0  # 0: a CPU stage
    lines: list[str] = field(default_factory=list)  # the arithmetic, one line each
    architecture: Any = None  # the model config the FLOPs count (None: no model)


@dataclass
class Plan:
    recipe: Recipe
    peak_flops: float
    peak_source: str
    stages: list[StageEstimate]

    @property
    def total_hours(self) -> float:
        return sum(s.seconds for s in self.stages) / 3600

    @property
    def gpu_hours(self) -> float:
        return self.total_hours * self.recipe.hardware.gpus

    @property
    def dollars(self) -> float:
        return self.gpu_hours * self.recipe.hardware.price_per_gpu_hour


# ----------------------------------------------------------------------------------------- formatting


def sci(x: float) -> str:
    return f"{x:.2g}" if x < 1e4 else f"{x:.2e}".replace("e+", "e")


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def human(n: float) -> str:
    from nanoseek.model.accounting import human as human_

    return human_(n)


# ----------------------------------------------------------------------------------------- models


def peak(recipe: Recipe) -> tuple[float, str]:
    """Peak bf16 FLOP/s per GPU and where the number comes from."""
    from nanoseek.train.cost import KNOWN_PEAK_FLOPS

    hw = recipe.hardware
    if hw.peak_flops > 0:
        return hw.peak_flops, "hardware.peak_flops"
    for key, flops in KNOWN_PEAK_FLOPS:
        if key.lower() in hw.gpu.lower():
            return flops, f"{key} dense bf16 datasheet peak"
    raise RecipeError(
        f"{recipe.name}: hardware.gpu {hw.gpu!r}: no known peak FLOP/s (known: "
        f"{', '.join(k for k, _ in KNOWN_PEAK_FLOPS)}); set hardware.peak_flops"
    )


def model_architecture(name: str, model: Model) -> Any:
    """The config of a [models] entry: its local directory's config.json when it is one, else the shape the
    recipe states (config), else its preset."""
    from nanoseek.model import get_family, preset
    from nanoseek.model.checkpoint import read_config
    from nanoseek.model.run_dirs import resolve_model_dir

    if model.id and Path(model.id).exists():
        try:
            directory = resolve_model_dir(model.id)
        except FileNotFoundError as e:
            raise RecipeError(f"models.{name}: {e}") from None
        if directory.is_dir():
            return read_config(directory)
    try:
        if model.config:
            return get_family(model.config.get("model_type")).config_cls.from_hf_dict(model.config)
        if model.preset:
            return preset(model.preset)
    except (ValueError, KeyError) as e:
        raise RecipeError(f"models.{name}: {e}") from None
    raise RecipeError(f"models.{name}: no local directory, config or preset to count its FLOPs from")


def stage_config(stage: Stage, argv: list[str]) -> Any:
    """The resolved config of a pretrain / sft / grpo stage (its own loader; GRPO's vLLM check is left to
    the run, which has vLLM, so that a dry run works anywhere)."""
    from nanoseek.train import config as train_config

    recipe, overrides = stage_overrides(argv)
    out = ["run.out=" + argv[argv.index("--out") + 1]]
    try:
        if stage.command == "grpo":
            from nanoseek.rl.config import GRPOConfig, validate

            cfg = train_config.load_recipe(GRPOConfig, recipe, [*overrides, *out])
            validate(replace(cfg, rollout=replace(cfg.rollout, backend="native")))
            return cfg
        kind = [f"run.kind={stage.command}"]
        return train_config.load_recipe(
            train_config.TrainConfig, recipe, [*overrides, *kind, *out], train_config.validate
        )
    except train_config.ConfigError as e:
        raise RecipeError(f"stage {stage.name!r}: {e}") from None


# ----------------------------------------------------------------------------------------- stages


def _number(stage: Stage, key: str, task: str | None = None) -> float:
    """A workload assumption of the stage's `estimate` table: a number, or per task a table of them."""
    value = stage.estimate.get(key)
    name = f"estimate.{key}"
    if isinstance(value, dict) and task is not None:
        value, name = value.get(task), f"{name}.{task}"
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise RecipeError(
            f"stage {stage.name!r}: {name}: a number >= 0 is needed for the estimate, got {value!r}"
        )
    return float(value)


def train_stage(est: StageEstimate, cfg: Any, arch: Any, gpus: int, peak_flops: float, mfu: float) -> None:
    from nanoseek.train.cost import train_flops_per_token

    t = cfg.train
    per_step = t.batch_tokens or t.device_batch_size * t.seq_len * gpus
    tokens = t.max_steps * per_step
    fpt = train_flops_per_token(arch, t.seq_len)  # what the training loop's cost meter counts
    flops = tokens * fpt
    est.seconds = flops / (gpus * peak_flops * mfu)
    est.gpus_busy = gpus
    est.lines = [
        f"{t.max_steps:,} steps x {human(per_step)} tokens = {human(tokens)} tokens"
        + (" (rows of train.seq_len: an upper bound for chat data)" if cfg.run.kind == "sft" else ""),
        f"x {sci(fpt)} training FLOPs/token ({_describe(arch)}, seq {t.seq_len}) = {sci(flops)} FLOPs",
        f"/ ({gpus} GPU x {sci(peak_flops)} FLOP/s x {mfu:.0%} MFU) = {duration(est.seconds)}",
    ]


def grpo_stage(est: StageEstimate, cfg: Any, arch: Any, peak_flops: float, mfu: float, decode: float) -> None:
    from nanoseek.model import account

    stage, r, g = est.stage, cfg.rollout, cfg.grpo
    prompt, response = _number(stage, "prompt_tokens"), _number(stage, "response_tokens")
    steps, rollouts = cfg.train.max_steps, r.prompts_per_step * r.group_size
    forward = account(arch, int(prompt + response / 2)).forward_flops_per_token
    a = account(arch, int(prompt + response))
    gen_tokens = steps * rollouts * response
    gen_s = gen_tokens * forward / (peak_flops * decode)
    per_token = g.mu * a.train_flops_per_token + (a.forward_flops_per_token if g.beta > 0 else 0)
    train_tokens = steps * rollouts * (prompt + response)
    train_s = train_tokens * per_token / (peak_flops * mfu)
    every = cfg.eval.every
    evals = len({0, steps, *range(every, steps + 1, every)}) if every else 2
    eval_tokens = evals * cfg.eval.problems * cfg.eval.samples * response
    eval_s = eval_tokens * forward / (peak_flops * decode)
    est.seconds, est.gpus_busy = gen_s + train_s + eval_s, 1
    ref = " + a reference forward (grpo.beta > 0)" if g.beta > 0 else ""
    est.lines = [
        f"{steps:,} steps x {rollouts} rollouts ({r.prompts_per_step} prompts x {r.group_size}) of "
        f"~{prompt:.0f} + ~{response:.0f} tokens (estimate.prompt_tokens / response_tokens); {_describe(arch)}",
        f"generate: {human(gen_tokens)} tokens x {sci(forward)} FLOPs/token / ({sci(peak_flops)} x "
        f"{decode:.0%} decode MFU) = {duration(gen_s)}",
        f"train: {human(train_tokens)} tokens x {sci(per_token)} FLOPs/token (mu {g.mu} x fwd+bwd{ref}) / "
        f"({sci(peak_flops)} x {mfu:.0%} MFU) = {duration(train_s)}",
        f"held-out evals: {evals} x {cfg.eval.problems} problems x {cfg.eval.samples} sample(s) = "
        f"{human(eval_tokens)} tokens = {duration(eval_s)}"
        + (" (dynamic sampling's refills not counted)" if g.dynamic_sampling else ""),
    ]


def eval_stage(est: StageEstimate, arch: Any, peak_flops: float, decode: float) -> None:
    from nanoseek.eval.cli import eval_config, parser
    from nanoseek.model import account

    stage = est.stage
    try:
        cfg = eval_config(parser().parse_args(est.argv))
    except SystemExit:
        raise RecipeError(
            f"stage {stage.name!r}: its `nanoseek eval` flags do not parse (see above)"
        ) from None
    except (ValueError, KeyError) as e:
        raise RecipeError(f"stage {stage.name!r}: {e}") from None
    lines = []
    for spec in cfg.specs:
        base = spec.name.partition(":")[0]
        k = cfg.task_k.get(spec.label, cfg.k)
        n = int(_number(stage, "problems", base))
        n = min(n, cfg.max_problems) if cfg.max_problems else n
        prompt, response = _number(stage, "prompt_tokens", base), _number(stage, "response_tokens", base)
        forward = account(arch, int(prompt + response / 2)).forward_flops_per_token
        tokens = n * k * cfg.seeds * response
        seconds = tokens * forward / (peak_flops * decode)
        est.seconds += seconds
        lines.append(
            f"{base}: {n} problems x {k} sample(s) x {cfg.seeds} seed(s) x ~{response:.0f} tokens = {human(tokens)} "
            f"tokens x {sci(forward)} FLOPs/token / ({sci(peak_flops)} x {decode:.0%} decode MFU) = {duration(seconds)}"
        )
    est.gpus_busy = 1
    est.lines = [f"{_describe(arch)}", *lines]


def cpu_stage(est: StageEstimate) -> None:
    est.seconds = _number(est.stage, "seconds")
    basis = est.stage.estimate.get("basis", "")
    est.lines = [f"{duration(est.seconds)} on the node's CPUs" + (f": {basis}" if basis else "")]


def _describe(arch: Any) -> str:
    from nanoseek.model import account

    a = account(arch, 1)
    if a.active_params != a.total_params:
        return f"{arch.model_type} {human(a.total_params)} params, {human(a.active_params)} active"
    return f"{arch.model_type} {human(a.total_params)} params"


def estimate(recipe: Recipe, out: Path, models: dict[str, str] | None = None) -> Plan:
    """Every stage's command line and estimate (module docstring), touching no network and no GPU."""
    peak_flops, source = peak(recipe)
    a = recipe.assumptions
    archs: dict[str, Any] = {}
    stages = []
    for stage in recipe.stages:
        argv = stage_argv(recipe, stage, out, models)
        est = StageEstimate(stage, argv)
        gpus = recipe.hardware.gpus if stage.distributed else 1
        cfg = stage_config(stage, argv) if COMMANDS[stage.command].overrides else None
        if stage.model in recipe.models:
            est.architecture = model_architecture(stage.model, recipe.models[stage.model])
        elif stage.model:
            est.architecture = archs[stage.model]
        elif stage.command == "pretrain":
            est.architecture = fresh_architecture(stage, cfg)
        if est.architecture is None and stage.command in ("pretrain", "sft", "grpo", "eval"):
            raise RecipeError(f"stage {stage.name!r}: model = ... is needed to count its FLOPs")
        if stage.command in ("pretrain", "sft"):
            train_stage(est, cfg, est.architecture, gpus, peak_flops, a.mfu)
        elif stage.command == "grpo":
            grpo_stage(est, cfg, est.architecture, peak_flops, a.mfu, a.decode_mfu)
        elif stage.command == "eval":
            eval_stage(est, est.architecture, peak_flops, a.decode_mfu)
        else:
            cpu_stage(est)
        archs[stage.name] = est.architecture
        stages.append(est)
    return Plan(recipe, peak_flops, source, stages)


def fresh_architecture(stage: Stage, cfg: Any) -> Any:
    """The model a pretrain stage builds from scratch (`nanoseek.train.inputs.model_config`), with the
    vocabulary of the tokenizer an earlier stage trains (estimate.vocab_size)."""
    from nanoseek.train.inputs import model_config

    vocab = int(_number(stage, "vocab_size"))
    return model_config(cfg, SimpleNamespace(vocab_size=vocab, bos_id=0, eos_id=1))
