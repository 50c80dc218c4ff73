"""`nanoseek grpo`: reinforcement learning with GRPO from a recipe plus overrides, a run directory out.

    nanoseek grpo recipes/grpo_r1_zero.toml --init runs/base --out runs/grpo          # R1-Zero from a base
    nanoseek grpo recipes/grpo_r1.toml --init runs/sft --out runs/grpo-r1             # R1 from an SFT model
    nanoseek grpo --out runs/grpo --resume                                            # continue a run
    nanoseek grpo recipes/r1_zero_micro.toml --init runs/base --out runs/ctl --random-rewards  # control
    python -m nanoseek.rl.cli ...                                                     # the same

Arguments: an optional recipe, any number of `section.key=value` overrides (`nanoseek.rl.config`), and
flags that are shortcuts for overrides: --out (run.out), --init (model.init), --task (task.name),
--random-rewards (reward.random), --allow-train-on-eval (task.allow_train_on_eval). --resume continues
from the newest complete checkpoint in --out, with the run's own config.toml when no recipe is given.
--benchmarks-dir sets $NANOSEEK_BENCHMARKS_DIR, where tasks find their default files (GSM8K's train
split in its ../train). The trainer is `nanoseek.rl.trainer`.

    nanoseek grpo recipes/grpo_r1_zero.toml --init runs/base --out runs/mine \
        --task "problems?train=mine_train.jsonl&test=mine_test.jsonl"            # your own problems
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from nanoseek.rl.config import GRPOConfig, load_grpo_config
from nanoseek.rl.trainer import GRPOTrainer
from nanoseek.tasks.files import BENCHMARKS_DIR_ENV
from nanoseek.train.config import ConfigError, command_config, recipe_parser


def _parser() -> argparse.ArgumentParser:
    what = "GRPO (DeepSeekMath / R1): reinforcement learning with verifiable rewards from a task."
    p = recipe_parser("nanoseek grpo", what, "policy to start from: a model, checkpoint or run directory")
    p.add_argument(
        "--task",
        help="task spec (task.name), e.g. 'arithmetic?digits=2&ops=+', 'gsm8k?train=a.jsonl&test=b.jsonl', "
        "'problems:mine.jsonl?holdout=0.1&seed=0'",
    )
    p.add_argument(
        "--random-rewards", action="store_true", help="the control: Bernoulli(0.5) rewards (reward.random)"
    )
    p.add_argument(
        "--allow-train-on-eval",
        action="store_true",
        help="train even where the evaluation problems are training problems (task.allow_train_on_eval)",
    )
    p.add_argument(
        "--benchmarks-dir", default=None, help=f"folder of benchmark files (${BENCHMARKS_DIR_ENV})"
    )
    return p


def parse_args(argv: list[str] | None) -> tuple[GRPOConfig, bool]:
    args = _parser().parse_intermixed_args(argv)
    if args.benchmarks_dir:
        os.environ[BENCHMARKS_DIR_ENV] = args.benchmarks_dir
    flags = {"run.out": args.out, "model.init": args.init, "task.name": args.task}
    flags["reward.random"] = True if args.random_rewards else None
    flags["task.allow_train_on_eval"] = True if args.allow_train_on_eval else None
    return command_config(load_grpo_config, "grpo", args.args, args.out, args.resume, flags), args.resume


def grpo_main(argv: list[str] | None = None) -> dict | None:
    """The `nanoseek grpo` command."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg, resume = parse_args(argv)
        command = " ".join(shlex.quote(a) for a in ["nanoseek", "grpo", *argv])
        summary = GRPOTrainer(cfg, resume=resume, command=command).run()
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"nanoseek grpo: error: {e}", file=sys.stderr)
        sys.exit(2)
    cost = summary["cost"]
    print(
        f"done: step {summary['step']}, held-out pass@1 {summary['start_pass@1']:.3f} -> {summary['final_pass@1']:.3f}, "
        f"response length {summary['start_response_length']:.1f} -> {summary['final_response_length']:.1f} tokens; "
        f"{cost['device_hours']:.3g} device-hours; report: {summary['run_dir']}/report.md"
    )
    return summary


if __name__ == "__main__":
    grpo_main()
