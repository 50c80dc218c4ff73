"""`nanoseek distill`: R1's distillation recipe from a teacher checkpoint or endpoint into a dense student.

    nanoseek distill --teacher runs/teacher --task "sort?length=3&max_value=9" --out runs/distill \\
        --problems 500 --k 4 --student-depth 2 --student-hidden 64 train.max_steps=300
    nanoseek distill --toy-teacher --task "sort?length=3&max_value=9" --out runs/distill     # CPU demo
    nanoseek distill --teacher https://api.deepseek.com --remote-model deepseek-reasoner --split-n \\
        --api-key-env DEEPSEEK_API_KEY --tokenizer runs/tok --task gsm8k:/data/gsm8k_train.jsonl \
        --trace-split test --eval-task gsm8k:/data/gsm8k_test.jsonl --out runs/distill-gsm8k

Positional `section.key=value` arguments (and `--recipe FILE.toml`) configure the student's SFT as in
`nanoseek sft`. `--toy-teacher` first builds a small MoE teacher on the task's solution traces in
OUT/teacher (`nanoseek.distill.toy`). Rerunning the same command resumes every step.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from nanoseek.data import DataError
from nanoseek.distill.pipeline import DistillConfig, run_distill
from nanoseek.eval.config import R1_INPUT_PRICE, R1_OUTPUT_PRICE
from nanoseek.train.config import ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nanoseek distill",
        description="Distill a teacher (checkpoint or OpenAI-compatible URL) into a small dense student: "
        "k traces per problem, keep the verified ones, SFT, evaluate both, report accuracy and cost.",
    )
    p.add_argument("sft_overrides", nargs="*", metavar="section.key=value", help="student SFT settings")
    p.add_argument("--teacher", default=None, help="teacher checkpoint / run directory or API base URL")
    p.add_argument("--toy-teacher", action="store_true", help="build a toy MoE teacher in OUT/teacher first")
    p.add_argument("--toy-teacher-depth", type=int, default=2)
    p.add_argument("--toy-teacher-steps", type=int, default=400)
    p.add_argument("--task", required=True, help='a task with a train split, e.g. "arithmetic?digits=2"')
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument(
        "--trace-split", default="train", help='split of --task the teacher solves ("test" for a file)'
    )
    p.add_argument("--eval-task", default="", help="task to evaluate teacher and student on (default --task)")
    p.add_argument("--problems", type=int, default=500, help="train problems to sample the teacher on")
    p.add_argument("--k", type=int, default=4, help="teacher samples per problem")
    p.add_argument("--max-per-problem", type=int, default=1, help="kept traces per problem (0: all distinct)")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--student", default="", help="a dense checkpoint to start the student from")
    p.add_argument("--student-depth", type=int, default=2, help="layers of a fresh dense student")
    p.add_argument("--student-hidden", type=int, default=None, help="hidden width (default 64 x depth)")
    p.add_argument("--tokenizer", default="", help="the student's tokenizer (remote teachers)")
    p.add_argument(
        "--recipe", dest="sft_recipe", metavar="RECIPE", help="recipes/*.toml for the student's SFT"
    )
    p.add_argument("--eval-problems", type=int, default=200)
    p.add_argument("--eval-k", type=int, default=4)
    p.add_argument("--eval-temperature", type=float, default=0.6)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--input-price", type=float, default=R1_INPUT_PRICE)
    p.add_argument("--output-price", type=float, default=R1_OUTPUT_PRICE)
    p.add_argument("--device-hour-price", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--remote-model", default=None)
    p.add_argument("--api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--split-n", action="store_true", help="one HTTP request per sample (APIs without n)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def distill_main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if bool(args.teacher) == args.toy_teacher:
        print("nanoseek distill: error: give exactly one of --teacher and --toy-teacher", file=sys.stderr)
        return 2
    try:
        if args.toy_teacher:
            from nanoseek.distill.toy import build_toy_teacher

            args.teacher = str(
                build_toy_teacher(
                    Path(args.out) / "teacher",
                    args.task,
                    depth=args.toy_teacher_depth,
                    steps=args.toy_teacher_steps,
                    seed=args.seed,
                    progress=args.progress,
                )
            )
        cfg = DistillConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DistillConfig)})
        result = run_distill(cfg)
    except (ConfigError, DataError, KeyError, ValueError, FileNotFoundError, RuntimeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"nanoseek distill: error: {message}", file=sys.stderr)
        return 2
    print((Path(args.out) / "report.md").read_text())
    print(f"student pass@1 / teacher pass@1 = {result['ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(distill_main())
