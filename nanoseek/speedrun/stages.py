"""The speedrun's stages, each a function `(Context) -> record` whose record (a JSON dict) marks it done.

    ctx = Context(cfg, Path("runs/speedrun"))
    for stage in STAGES:                      # what `nanoseek speedrun` does (nanoseek.speedrun.run)
        record = stage.run(ctx)

Every stage calls the project's own stage entry points, so the speedrun is the README's commands in a
row, not a second implementation:
    data       nanoseek.speedrun.data: the pretraining corpus and the cold-start chat set (train split)
    tokenizer  a digit-splitting BPE on the corpus (nanoseek.tokenizer.train_digit_tokenizer)
    pretrain   nanoseek.train.train: a DeepSeek-V3 MoE (MLA, DeepSeekMoE, MTP) from scratch
    sft        nanoseek.train.train (run.kind = "sft"): cold start in THE chat format, from the base
    grpo       nanoseek.rl.GRPOTrainer: the R1 recipe (chat template) from the SFT checkpoint (and with
               grpo.mtp_align_steps, the MTP draft head re-aligned: nanoseek.train.mtp_align)
    distill    nanoseek.distill.run_distill: the GRPO model's verified traces -> a dense student
    eval_*     nanoseek.eval.EvalRunner on the test split, R1's protocol (k samples at temperature 0.6)
    serving    the engine's measured prefill and decode rates -> $ per million input / output tokens
    benchmarks GSM8K / MATH-500 (only when their files are given)
Inside a stage the underlying trainers and evals resume from their own checkpoints and sample files.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nanoseek.distill import DistillConfig, dense_config, init_student, run_distill
from nanoseek.distill.pipeline import sft_config
from nanoseek.eval.config import EvalConfig
from nanoseek.eval.generators import load_generator
from nanoseek.eval.runner import run_one_task
from nanoseek.model import DeepSeekV3, account, config_for_depth
from nanoseek.model.run_dirs import latest_checkpoint
from nanoseek.rl import GRPOTrainer, load_grpo_config
from nanoseek.speedrun.config import SpeedrunConfig
from nanoseek.speedrun.data import write_cold_start, write_pretrain_corpus
from nanoseek.speedrun.serving import measure_serving
from nanoseek.tasks import SyntheticTask, parse_task_spec
from nanoseek.tokenizer import Tokenizer, train_digit_tokenizer
from nanoseek.train import load_config, train
from nanoseek.train.mtp_align import align_mtp
from nanoseek.train.parallel import Job, run_parallel

# the stages that make a model each, evaluated by eval_<name>
MODEL_STAGES = ("pretrain", "student_base", "sft", "grpo", "distill")
LABELS = {
    "pretrain": "base: pretrained MoE",
    "student_base": "student base: pretrained dense",
    "sft": "cold-start SFT (from the MoE base)",
    "grpo": "GRPO, the R1 recipe (from SFT)",
    "distill": "distilled student (dense base + GRPO traces)",
}


def model_record(records: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The record of the stage that made model `name` (the dense student base is made by pretrain)."""
    if name == "student_base":
        return records.get("pretrain", {}).get("student_base")
    return records.get(name)


@dataclass
class Context:
    cfg: SpeedrunConfig
    out: Path
    benchmarks: dict[str, str] = field(default_factory=dict)  # task name -> file ("gsm8k": "gsm8k.jsonl")

    def record(self, name: str) -> dict[str, Any] | None:
        path = self.out / "stages" / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def need(self, name: str) -> dict[str, Any]:
        rec = self.record("pretrain")["student_base"] if name == "student_base" else self.record(name)
        if rec is None:
            raise RuntimeError(f"stage {name!r} has not run in {self.out}")
        return rec

    def task(self) -> SyntheticTask:
        task = parse_task_spec(self.cfg.task.name).build()
        if not isinstance(task, SyntheticTask):
            raise ValueError(
                f"task.name {self.cfg.task.name!r}: the speedrun needs a synthetic task with traces"
            )
        return task

    def set_threads(self) -> None:
        if self.cfg.run.threads:
            torch.set_num_threads(self.cfg.run.threads)


@dataclass
class Stage:
    name: str
    title: str
    run: Callable[[Context], dict[str, Any]]
    when: Callable[[Context], bool] = lambda ctx: True


# ----------------------------------------------------------------------------------- data, tokenizer


def data_stage(ctx: Context) -> dict[str, Any]:
    d, task, out, seed = ctx.cfg.data, ctx.task(), ctx.out / "data", ctx.cfg.run.seed
    pretrain = write_pretrain_corpus(
        task, out / "pretrain.jsonl", d.pretrain_shortcut_share, d.pretrain_copies, seed
    )
    sft = write_cold_start(task, out / "cold_start.jsonl", d.sft_conversations, d.sft_shortcut_share, seed)
    return {"pretrain": pretrain, "cold_start": sft}


def tokenizer_stage(ctx: Context) -> dict[str, Any]:
    t0 = time.perf_counter()
    tok = train_digit_tokenizer(
        ctx.out / "data" / "pretrain.jsonl", ctx.cfg.data.vocab_size, ctx.out / "tokenizer"
    )
    return {
        "vocab_size": tok.vocab_size,
        "seconds": time.perf_counter() - t0,
        "dir": str(ctx.out / "tokenizer"),
    }


# ----------------------------------------------------------------------------------- training stages


def _train_record(summary: dict[str, Any], model_dir: str, tokens: int | None = None) -> dict[str, Any]:
    cost = summary["cost"]
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    from nanoseek.model import ModelConfig

    acct = account(ModelConfig.from_hf_dict(cfg), 256)
    return {
        "model_dir": model_dir,
        "params": acct.total_params,
        "active_params": acct.active_params,
        "tokens": cost["tokens"] if tokens is None else tokens,
        "seconds": cost["wall_seconds"],
        "device_hours": cost["device_hours"],
        "dollars": cost["dollars"],
        "run_dir": summary["run_dir"],
    }


def initial_model(ctx: Context) -> Path:
    """The untrained base: the depth-`model.depth` rung (MLA, 8 routed experts top 2 + 1 shared, first
    layer dense) with `model.heads` heads and `model.mtp` MTP depths, saved with the tokenizer."""
    m, out = ctx.cfg.model, ctx.out / "pretrain_init"
    if (out / "model.safetensors").is_file():
        return out
    tok = Tokenizer.from_dir(ctx.out / "tokenizer")
    cfg = config_for_depth(m.depth, tok.vocab_size, m.max_position_embeddings, m.mtp)
    head = cfg.hidden_size // m.heads
    cfg = cfg.replace(num_attention_heads=m.heads, qk_nope_head_dim=head, v_head_dim=head)
    cfg = cfg.replace(qk_rope_head_dim=max(8, head // 2), bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    torch.manual_seed(ctx.cfg.run.seed)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    DeepSeekV3(cfg).save_pretrained(tmp)
    tok.save(tmp)
    tmp.replace(out)
    return out


def _common(ctx: Context) -> list[str]:
    return [
        f"run.device={ctx.cfg.run.device}",
        f"run.seed={ctx.cfg.run.seed}",
        f"run.progress={'true' if ctx.cfg.run.progress else 'false'}",
        f"cost.price_per_device_hour={ctx.cfg.run.price_per_device_hour}",
        "checkpoint.keep=1",
        "data.num_workers=1",
    ]


def _train(ctx: Context, name: str, overrides: list[str]) -> dict[str, Any]:
    run = ctx.out / name
    cfg = load_config(None, [*overrides, f"run.out={run}"])
    ctx.set_threads()
    summary = train(
        cfg, resume=latest_checkpoint(run) is not None, command=f"nanoseek speedrun --out {ctx.out}"
    )
    return _train_record(summary, summary["model_dir"])


def student_base_init(ctx: Context) -> Path:
    """The untrained dense student: `distill.student_depth` layers of width `distill.student_hidden`,
    no routed experts, no MTP (`nanoseek.distill.dense_config`), saved with the tokenizer."""
    d, out = ctx.cfg.distill, ctx.out / "student_init"
    tok = Tokenizer.from_dir(ctx.out / "tokenizer")
    cfg = dense_config(
        d.student_depth, tok.vocab_size, d.student_hidden, ctx.cfg.model.max_position_embeddings
    )
    return init_student(out, cfg, tok, ctx.cfg.run.seed)


def pretrain_overrides(ctx: Context, init: Path) -> list[str]:
    p = ctx.cfg.pretrain
    return [
        *_common(ctx),
        "run.kind=pretrain",
        f"model.init={init}",
        f'data.train=["{ctx.out / "data" / "pretrain.jsonl"}"]',
        "data.val_fraction=0.01",
        f"train.max_steps={p.steps}",
        f"train.seq_len={p.seq_len}",
        f"train.device_batch_size={p.batch_size}",
        f"train.lr={p.lr}",
        f"train.warmup_steps={min(p.warmup_steps, p.steps - 1)}",
        "train.weight_decay=0",
        *mtp_overrides(ctx),
        "eval.every=0",
        "eval.batches=5",
        f"checkpoint.every={max(p.steps // 4, 1)}",
        *p.overrides,
    ]


def mtp_overrides(ctx: Context) -> list[str]:
    """DeepSeek-V3's MTP loss weight schedule for pretraining: model.mtp_lambda for the first
    model.mtp_switch of the steps, then model.mtp_lambda_late (a model without MTP ignores both)."""
    m = ctx.cfg.model
    return [
        f"model.mtp_loss_weight={m.mtp_lambda}",
        f"model.mtp_loss_weight_late={m.mtp_lambda_late}",
        f"model.mtp_switch={m.mtp_switch}",
        f"model.mtp_rows={m.mtp_rows}",
    ]


def pretrain_stage(ctx: Context) -> dict[str, Any]:
    """The MoE base and, beside it, the dense base the student will be distilled into (R1 distilled
    into pretrained dense bases): two `nanoseek pretrain` processes of one thread each, one per core
    (`nanoseek.train.parallel`; models this small run faster on one thread each than on two threads
    together); then `_train` reads each finished run's summary."""
    runs = {"pretrain": initial_model(ctx), "student_base": student_base_init(ctx)}
    jobs = {name: pretrain_overrides(ctx, init) for name, init in runs.items()}
    command = [sys.executable, "-m", "nanoseek.train.cli", "pretrain"]
    run_parallel(
        [
            Job(name, [*command, f"run.out={ctx.out / name}", *o, "run.progress=false"], ctx.out / name)
            for name, o in jobs.items()
        ],
        ctx.cfg.pretrain.steps,
        progress=ctx.cfg.run.progress,
    )
    records = {name: _train(ctx, name, overrides) for name, overrides in jobs.items()}
    return {**records["pretrain"], "student_base": records["student_base"]}


def sft_stage(ctx: Context) -> dict[str, Any]:
    s = ctx.cfg.sft
    overrides = [
        *_common(ctx),
        "run.kind=sft",
        f"model.init={ctx.need('pretrain')['model_dir']}",
        f'data.train=["{ctx.out / "data" / "cold_start.jsonl"}"]',
        "data.val_fraction=0.05",
        f"train.max_steps={s.steps}",
        f"train.seq_len={s.seq_len}",
        f"train.device_batch_size={s.batch_size}",
        f"train.lr={s.lr}",
        f"model.mtp_loss_weight={ctx.cfg.model.mtp_lambda_late}",  # the MTP module follows the chat format
        f"train.warmup_steps={min(5, s.steps - 1)}",
        "train.min_lr_ratio=0.1",
        "train.weight_decay=0",
        "eval.every=0",
        "eval.batches=2",
        "eval.num_samples=2",
        f"eval.sample_tokens={ctx.cfg.task.max_new_tokens}",
        *s.overrides,
    ]
    return _train(ctx, "sft", overrides)


def grpo_stage(ctx: Context) -> dict[str, Any]:
    g, run = ctx.cfg.grpo, ctx.out / "grpo"
    overrides = [
        f"run.out={run}",
        f"run.seed={ctx.cfg.run.seed}",
        f"run.device={ctx.cfg.run.device}",
        f"run.threads={ctx.cfg.run.threads}",
        f"run.progress={'true' if ctx.cfg.run.progress else 'false'}",
        f"model.init={ctx.need('sft')['model_dir']}",
        f"task.name={ctx.cfg.task.name}",
        "rollout.template=chat",  # R1: THE chat format from the SFT checkpoint
        "rollout.stop=[]",  # the chat format ends at EOS
        f"rollout.group_size={g.group_size}",
        f"rollout.prompts_per_step={g.prompts_per_step}",
        f"rollout.max_new_tokens={g.max_new_tokens}",
        f"rollout.temperature={g.temperature}",
        f"reward.format_weight={g.format_weight}",
        'grpo.aggregation="dapo"',
        "grpo.eps_high=0.28",
        f"train.max_steps={g.steps}",
        f"train.lr={g.lr}",
        f"eval.every={g.eval_every}",
        f"eval.problems={g.eval_problems}",
        f"eval.max_new_tokens={ctx.cfg.task.max_new_tokens}",
        "checkpoint.keep=1",
        f"cost.price_per_device_hour={ctx.cfg.run.price_per_device_hour}",
        *g.overrides,
    ]
    cfg = load_grpo_config(None, overrides)
    summary = GRPOTrainer(
        cfg, resume=latest_checkpoint(run) is not None, command=f"nanoseek speedrun --out {ctx.out}"
    ).run()
    record = {
        **_train_record(summary, summary["model_dir"]),
        "greedy_pass@1": [summary["start_pass@1"], summary["final_pass@1"]],
    }
    if ctx.cfg.model.mtp and g.mtp_align_steps:
        record["mtp_align"] = mtp_align(ctx, summary["model_dir"])
        record["seconds"] += record["mtp_align"]["seconds"]
    return record


def mtp_align(ctx: Context, model_dir: str) -> dict[str, Any]:
    """GRPO moved the main model and not its MTP module (the server's draft head): a short
    self-distillation of the module on the GRPO model's greedy answers to train problems
    (`nanoseek.train.mtp_align`); the main model's weights are untouched."""
    g, t = ctx.cfg.grpo, ctx.cfg.task
    ctx.set_threads()
    prompts = [p.prompt for p in ctx.task().problems("train", g.mtp_align_prompts)]
    rng = random.Random(ctx.cfg.run.seed + 1)
    rng.shuffle(prompts)
    return align_mtp(
        model_dir,
        prompts,
        steps=g.mtp_align_steps,
        max_new_tokens=t.max_new_tokens,
        seed=ctx.cfg.run.seed,
        concurrency=t.concurrency,
    )


def distill_stage(ctx: Context) -> dict[str, Any]:
    d, t = ctx.cfg.distill, ctx.cfg.task
    out = ctx.out / "distill"
    teacher = ctx.need("grpo")["model_dir"]
    # the teacher's held-out eval is the GRPO stage's (same model, same protocol): reuse its samples
    if not (out / "eval_teacher").exists():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(ctx.out / "eval" / "grpo", out / "eval_teacher")
    cfg = DistillConfig(
        teacher=teacher,
        task=t.name,
        out=str(out),
        problems=d.problems,
        k=d.k,
        temperature=t.temperature,
        top_p=t.top_p,
        max_new_tokens=t.max_new_tokens,
        student=ctx.need("student_base")["model_dir"],
        sft_overrides=[
            *_common(ctx),
            f"train.max_steps={d.steps}",
            f"train.device_batch_size={d.batch_size}",
            f"train.lr={d.lr}",
            f"train.warmup_steps={min(10, d.steps - 1)}",
            *d.overrides,
        ],
        eval_problems=t.eval_problems,
        eval_k=t.k,
        eval_temperature=t.temperature,
        concurrency=t.concurrency,
        device_hour_price=ctx.cfg.run.price_per_device_hour,
        seed=ctx.cfg.run.seed,
        progress=ctx.cfg.run.progress,
    )
    ctx.set_threads()
    try:
        result = run_distill(cfg)
    except RuntimeError as e:  # an untrained teacher (the --quick smoke run): say so, go on
        if "nothing to distill" not in str(e):
            raise
        return fallback_student(ctx, cfg, str(e))
    sft = result["sft"]
    record = _train_record({"cost": sft["cost"], "run_dir": sft["run_dir"]}, result["student"]["model"])
    traces = result["traces"]
    hours = traces.get("device_hours", 0.0)
    record["seconds"] += traces["seconds"]  # the teacher's traces are part of distilling
    record["device_hours"] += hours
    record["dollars"] += hours * ctx.cfg.run.price_per_device_hour
    record["traces"] = {
        k: traces[k] for k in ("samples", "correct", "kept", "problems_covered") if k in traces
    }
    record["teacher_pass@1"] = result["teacher"]["pass@1"]
    record["ratio"] = result["ratio"]
    return record


def fallback_student(ctx: Context, cfg: DistillConfig, reason: str) -> dict[str, Any]:
    """When the teacher verified no trace at all (an untrained teacher), the student base is trained on
    the cold-start set instead (the same SFT, the same evaluation), and the record and report say so."""
    out = Path(cfg.out)
    tok = Tokenizer.from_dir(cfg.student)
    data = ctx.out / "data" / "cold_start.jsonl"
    seq_len = max(len(tok.render(json.loads(line)["messages"])[0]) for line in data.read_text().splitlines())
    sft = train(
        sft_config(cfg, data, Path(cfg.student), seq_len), resume=latest_checkpoint(out / "sft") is not None
    )
    record = _train_record(sft, sft["model_dir"])
    ev = cfg.eval_config(
        cfg.eval_task or cfg.task, "test", cfg.eval_problems, cfg.eval_k, cfg.eval_temperature
    )
    evaluate(ctx, sft["model_dir"], ev, out / "eval_student")
    record.update(traces={}, fallback=f"{reason}; the student was trained on the cold-start set instead")
    return record


# ----------------------------------------------------------------------------------- evaluation


def eval_config(ctx: Context, task: str, n: int, k: int, max_new_tokens: int) -> EvalConfig:
    t = ctx.cfg.task
    return EvalConfig(
        tasks=[task],
        k=k,
        max_problems=n,
        temperature=t.temperature,
        top_p=t.top_p,
        max_new_tokens=max_new_tokens,
        seed=ctx.cfg.run.seed,
        concurrency=t.concurrency,
        device_hour_price=ctx.cfg.run.price_per_device_hour,
    )


def evaluate(ctx: Context, model_dir: str, cfg: EvalConfig, out: Path) -> dict[str, Any]:
    """An eval run (resumable) of a checkpoint; the task's metrics with the seconds it took."""
    ctx.set_threads()
    loaded = load_generator(model_dir, concurrency=cfg.concurrency)
    try:
        return run_one_task(loaded.generator, cfg, out, loaded.label, ctx.cfg.run.progress)
    finally:
        loaded.close()


def eval_stage(name: str) -> Callable[[Context], dict[str, Any]]:
    def run(ctx: Context) -> dict[str, Any]:
        t = ctx.cfg.task
        model = ctx.need(name)["model_dir"]
        # the student's: run_distill evaluated it with this very protocol, the samples are reused
        out = ctx.out / "distill" / "eval_student" if name == "distill" else ctx.out / "eval" / name
        return evaluate(ctx, model, eval_config(ctx, t.name, t.eval_problems, t.k, t.max_new_tokens), out)

    return run


def benchmarks_stage(ctx: Context) -> dict[str, Any]:
    """Every stage's model on the given benchmark files (the first `benchmarks.problems` of each)."""
    b, out = ctx.cfg.benchmarks, {}
    for name in MODEL_STAGES:
        model = ctx.need(name)["model_dir"]
        for bench, path in sorted(ctx.benchmarks.items()):
            cfg = eval_config(ctx, f"{bench}:{path}", b.problems, b.k, b.max_new_tokens)
            out.setdefault(name, {})[bench] = evaluate(ctx, model, cfg, ctx.out / "benchmarks" / bench / name)
    return {"files": dict(ctx.benchmarks), "results": out}


def serving_stage(ctx: Context) -> dict[str, Any]:
    ctx.set_threads()
    s, t = ctx.cfg.serve, ctx.cfg.task
    problems = ctx.task().problems("test", s.requests)
    return measure_serving(
        ctx.need("grpo")["model_dir"],
        [p.prompt for p in problems],
        s.max_new_tokens,
        s.concurrency,
        t.temperature,
        ctx.cfg.run.price_per_device_hour,
        ctx.cfg.run.seed,
    )


STAGES: list[Stage] = [
    Stage("data", "synthetic corpus and cold-start chat set", data_stage),
    Stage("tokenizer", "BPE tokenizer (digits split)", tokenizer_stage),
    Stage("pretrain", "pretrain the DeepSeek-V3 MoE base and the dense student base", pretrain_stage),
    Stage("eval_pretrain", "evaluate the MoE base on held-out problems", eval_stage("pretrain")),
    Stage("eval_student_base", "evaluate the dense student base", eval_stage("student_base")),
    Stage("sft", "cold-start SFT in the chat format", sft_stage),
    Stage("eval_sft", "evaluate the SFT model", eval_stage("sft")),
    Stage("grpo", "GRPO (the R1 recipe) from the SFT model", grpo_stage),
    Stage("eval_grpo", "evaluate the GRPO model", eval_stage("grpo")),
    Stage("distill", "distill the GRPO model into a dense student", distill_stage),
    Stage("eval_distill", "evaluate the student", eval_stage("distill")),
    Stage("serving", "measure serving cost with the engine", serving_stage),
    Stage("benchmarks", "GSM8K / MATH-500", benchmarks_stage, lambda ctx: bool(ctx.benchmarks)),
]
