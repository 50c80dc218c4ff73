"""R1's distillation recipe end to end: teacher traces -> rejection sampling -> SFT of a dense student
-> teacher and student evaluated the same way -> a report with accuracy and the cost of every step.

    from nanoseek.distill import DistillConfig, run_distill
    result = run_distill(DistillConfig(teacher="runs/teacher", task="sort?length=3&max_value=9",
                                       out="runs/distill", student_depth=2, student_hidden=64))
    result["teacher"]["pass@1"], result["student"]["pass@1"], result["ratio"]

The run directory (every step resumes or is reused when rerun with the same config):
    traces/          the teacher's k samples per train problem (an eval run: samples.jsonl, summary)
    sft.jsonl        the kept traces, OpenAI chat JSONL with reasoning_content
    sft_student.jsonl  the same with the thinking inside the answers, for a student whose own chat
                     template has no place for reasoning_content (`traces.for_student`)
    student_init/    the fresh dense student (unless --student names a checkpoint)
    sft/             the student's SFT run (nanoseek.train: checkpoints, metrics, report.md)
    eval_teacher/    teacher on the test split, R1's protocol (k samples, temperature 0.6, top-p 0.95)
    eval_student/    student, the same
    distill.json     accuracies, sizes, counts and costs;  report.md  the same as tables

Costs: trace generation and evals are charged in tokens at API prices (the teacher may be an API) and,
for native models, in device-hours at `device_hour_price`; the SFT in device-hours and $ from the
training loop's cost meter (`nanoseek.train.cost`). Wall seconds include every resumed session.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nanoseek.data import write_jsonl
from nanoseek.distill.report import write_report
from nanoseek.distill.student import active_params, dense_config, init_student, model_config
from nanoseek.distill.traces import for_student, write_sft_dataset
from nanoseek.eval.config import R1_INPUT_PRICE, R1_OUTPUT_PRICE, EvalConfig
from nanoseek.eval.generators import LoadedGenerator, load_generator
from nanoseek.eval.runner import run_one_task
from nanoseek.model.run_dirs import latest_checkpoint, resolve_model_dir
from nanoseek.tokenizer import Tokenizer
from nanoseek.train import load_config, train

# SFT defaults for the student (a recipe file and section.key=value overrides take precedence)
STUDENT_SFT = [
    "run.device=auto",
    "train.max_steps=300",
    "train.device_batch_size=16",
    "train.warmup_steps=10",
    "train.lr=3e-3",
    "train.min_lr_ratio=0.05",
    "train.weight_decay=0",
    "eval.every=0",
    "eval.batches=4",
    "eval.num_samples=2",
    "data.val_fraction=0.02",
]

# the DistillConfig fields that every eval of the run (traces, teacher, student) takes as they are
EVAL_FIELDS = ("top_p", "max_new_tokens", "seed", "concurrency", "input_price", "output_price")
EVAL_FIELDS += ("device_hour_price",)


@dataclass
class DistillConfig:
    teacher: str  # checkpoint / run directory, or an OpenAI-compatible base URL
    task: str  # a task spec (nanoseek.tasks.parse_task_spec) whose `trace_split` the teacher solves
    out: str  # run directory
    teacher_backend: str = "native"  # what generates from a teacher checkpoint: "native" or "vllm"
    trace_split: str = "train"  # "test" for a benchmark file of training problems (files hold one split)
    eval_task: str = ""  # the task teacher and student are evaluated on (test split); default: task
    problems: int = 500  # train problems the teacher solves
    k: int = 4  # teacher samples per problem (rejection sampling keeps the verified ones)
    max_per_problem: int = 1  # kept traces per problem (0: all distinct correct ones)
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 512
    student: str = ""  # a dense checkpoint to start from; empty: a fresh dense_config student
    student_depth: int = 2
    student_hidden: int | None = None
    tokenizer: str = ""  # the student's tokenizer for a remote teacher without --student
    sft_recipe: str | None = None  # a recipes/*.toml for the student's SFT
    sft_overrides: list[str] = field(default_factory=list)  # section.key=value
    eval_problems: int = 200  # test problems for teacher and student
    eval_k: int = 4  # samples per test problem (pass@1 = mean over them)
    eval_temperature: float = 0.6
    concurrency: int = 32
    input_price: float = R1_INPUT_PRICE
    output_price: float = R1_OUTPUT_PRICE
    device_hour_price: float = 0.0
    seed: int = 0
    remote_model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    split_n: bool = False
    progress: bool = True

    def eval_config(self, task: str, split: str, n: int, k: int, temperature: float) -> EvalConfig:
        """The eval of teacher traces or of teacher and student: `task`'s first `n` problems of `split`."""
        options = {name: getattr(self, name) for name in EVAL_FIELDS}
        return EvalConfig(tasks=[task], k=k, max_problems=n, split=split, temperature=temperature, **options)


def _eval(loaded: LoadedGenerator, cfg: EvalConfig, out: Path, progress: bool) -> dict[str, Any]:
    """Run an eval step; its task metrics with tokens, $ and seconds."""
    result = run_one_task(loaded.generator, cfg, out, loaded.label, progress)
    result["device_hours"] = result["seconds"] / 3600 if loaded.model_dir is not None else 0.0
    result["device_usd"] = result["device_hours"] * cfg.device_hour_price
    return result


def student_tokenizer(cfg: DistillConfig, teacher_dir: Path | None) -> Tokenizer:
    if cfg.tokenizer:
        return Tokenizer.from_dir(cfg.tokenizer)
    if teacher_dir is not None:
        return Tokenizer.from_dir(teacher_dir)
    raise ValueError("a remote teacher has no tokenizer here: give --tokenizer DIR or --student CHECKPOINT")


def sft_config(cfg: DistillConfig, data: Path, init: Path, seq_len: int):
    """The student's TrainConfig: defaults, then the recipe, then the user's overrides."""
    base = [*STUDENT_SFT, f"train.seq_len={seq_len}"] if cfg.sft_recipe is None else []
    run = sft_run(data, init, Path(cfg.out) / "sft", cfg.seed, cfg.progress)
    return load_config(cfg.sft_recipe, [*base, *cfg.sft_overrides, *run])


def sft_run(data: Path, init: Path, out: Path, seed: int, progress: bool) -> list[str]:
    """The overrides that make a TrainConfig the SFT of `init` on the chat file `data` into `out`."""
    flag = "true" if progress else "false"
    run = ["run.kind=sft", f"run.seed={seed}", f"run.out={out}", f"run.progress={flag}"]
    return [*run, f"model.init={init}", f'data.train=["{data}"]']


def student_start(cfg: DistillConfig, teacher_dir: Path | None) -> tuple[Path | None, Tokenizer]:
    """(the student checkpoint to start from, or None for a fresh one; the student's tokenizer).
    Checked before any generation, so a bad --student fails at once."""
    if not cfg.student:
        return None, student_tokenizer(cfg, teacher_dir)
    init = resolve_model_dir(cfg.student)
    experts = getattr(model_config(init), "n_routed_experts", 0)  # a dense family has none
    if experts:
        raise ValueError(
            f"--student {cfg.student}: R1 distills into dense models; it has {experts} routed experts"
        )
    return init, Tokenizer.from_dir(init)


def run_distill(cfg: DistillConfig) -> dict[str, Any]:
    """Run (or resume) the whole recipe; returns what distill.json holds."""
    out = Path(cfg.out)
    eval_task = cfg.eval_task or cfg.task
    trace_cfg = cfg.eval_config(cfg.task, cfg.trace_split, cfg.problems, cfg.k, cfg.temperature)
    eval_cfg = cfg.eval_config(eval_task, "test", cfg.eval_problems, cfg.eval_k, cfg.eval_temperature)
    teacher = load_generator(
        cfg.teacher,
        cfg.remote_model,
        cfg.api_key_env,
        cfg.concurrency,
        cfg.split_n,
        backend=cfg.teacher_backend,
    )
    try:
        init, tokenizer = student_start(cfg, teacher.model_dir)
        out.mkdir(parents=True, exist_ok=True)
        # 1. teacher traces on the training problems, scored by the task's verifier
        traces = _eval(teacher, trace_cfg, out / "traces", cfg.progress)
        # 2. rejection sampling into chat JSONL with reasoning_content
        stats = write_sft_dataset(out / "traces" / "samples.jsonl", out / "sft.jsonl", cfg.max_per_problem)
        if stats.kept == 0:
            raise RuntimeError(f"the teacher solved none of {stats.problems} problems: nothing to distill")
        # 3. the teacher on the test split, as the student will be
        teacher_eval = _eval(teacher, eval_cfg, out / "eval_teacher", cfg.progress)
    finally:
        teacher.close()
    teacher_active = None if teacher.model_dir is None else active_params(teacher.model_dir)

    # 4. the dense student and its SFT on the kept traces
    records = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    data = out / "sft.jsonl"
    student_records = for_student(records, tokenizer)
    if student_records is not records:  # the student's template cannot show reasoning_content
        data = out / "sft_student.jsonl"
        write_jsonl(data, student_records)
    seq_len = max(len(tokenizer.render(r["messages"])[0]) for r in student_records)
    if init is None:
        student_cfg = dense_config(
            cfg.student_depth, tokenizer.vocab_size, cfg.student_hidden, max(256, 2 * seq_len)
        )
        init = init_student(out / "student_init", student_cfg, tokenizer, cfg.seed)
    resume = latest_checkpoint(out / "sft") is not None
    sft = train(
        sft_config(cfg, data, init, seq_len),
        resume=resume,
        command=f"nanoseek distill --out {out}",
    )
    student_dir = Path(sft["model_dir"])

    # 5. the student on the test split
    student = load_generator(student_dir, concurrency=cfg.concurrency)
    try:
        student_eval = _eval(student, eval_cfg, out / "eval_student", cfg.progress)
    finally:
        student.close()

    result = {
        "task": eval_task,
        "teacher": {"model": cfg.teacher, "active_params": teacher_active, **teacher_eval},
        "student": {"model": str(student_dir), "active_params": active_params(student_dir), **student_eval},
        "ratio": _ratio(student_eval["pass@1"], teacher_eval["pass@1"]),
        "size_ratio": _ratio(active_params(student_dir), teacher_active),
        "traces": {**traces, **stats.to_dict()},
        "sft": {
            "steps": sft["step"],
            "train_loss": sft["train_loss"],
            "val_loss": sft["val_loss"],
            "cost": sft["cost"],
            "run_dir": sft["run_dir"],
        },
        "config": asdict(cfg),
    }
    (out / "distill.json").write_text(json.dumps(result, indent=2) + "\n")
    write_report(out, result)
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b
