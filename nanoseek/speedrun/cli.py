"""`nanoseek speedrun`: the whole R1 story end to end on this machine, in one command.

    nanoseek speedrun                                   # recipes/speedrun.toml -> runs/speedrun (~15 min)
    nanoseek speedrun --quick --out runs/smoke          # recipes/speedrun_quick.toml (~30 s smoke run)
    nanoseek speedrun --gsm8k gsm8k_test.jsonl --math500 math500.jsonl    # also those benchmarks
    nanoseek speedrun grpo.steps=40 distill.steps=400   # any recipe key as section.key=value
    nanoseek speedrun --dry-run                         # print the resolved recipe and the stages, run nothing

Rerunning the same command continues a stopped run and skips finished stages.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nanoseek.speedrun.config import DEFAULT_RECIPE, QUICK_RECIPE, load_speedrun_config
from nanoseek.train.config import ConfigError, to_toml


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nanoseek speedrun",
        description="tokenizer -> pretrain (DeepSeek-V3 MoE) -> cold-start SFT -> GRPO -> distill -> eval -> "
        "report, on the embedded synthetic task, resumable",
    )
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="recipe overrides")
    p.add_argument("--out", default="runs/speedrun", help="run directory (default runs/speedrun)")
    p.add_argument("--recipe", default=None, help=f"recipe file (default {DEFAULT_RECIPE.name})")
    p.add_argument("--quick", action="store_true", help=f"the ~30-second smoke version ({QUICK_RECIPE.name})")
    p.add_argument(
        "--gsm8k", default=None, metavar="PATH", help="also evaluate every stage on this GSM8K file"
    )
    p.add_argument(
        "--math500", default=None, metavar="PATH", help="also evaluate every stage on this MATH-500 file"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (run.threads)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (run.progress=false)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and stages, run nothing")
    return p


def speedrun_main(argv: list[str] | None = None) -> int:
    """The `nanoseek speedrun` command."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.quick and args.recipe:
        print("nanoseek speedrun: error: give --quick or --recipe, not both", file=sys.stderr)
        return 2
    recipe = Path(args.recipe) if args.recipe else QUICK_RECIPE if args.quick else DEFAULT_RECIPE
    overrides = list(args.overrides)
    if args.threads is not None:
        overrides.append(f"run.threads={args.threads}")
    if args.no_progress:
        overrides.append("run.progress=false")
    try:
        cfg = load_speedrun_config(recipe, overrides)
    except ConfigError as e:
        print(f"nanoseek speedrun: error: {e}", file=sys.stderr)
        return 2
    benchmarks = {"gsm8k": args.gsm8k, "math500": args.math500}
    if args.dry_run:
        from nanoseek.speedrun.stages import STAGES

        print(to_toml(cfg))
        print(
            "stages: "
            + " -> ".join(s.name for s in STAGES if s.name != "benchmarks" or any(benchmarks.values()))
        )
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from nanoseek.speedrun.report import next_commands
    from nanoseek.speedrun.run import SpeedrunError, run_speedrun
    from nanoseek.speedrun.stages import Context

    try:
        result = run_speedrun(cfg, args.out, benchmarks)
    except KeyboardInterrupt:
        print(
            f"nanoseek speedrun: interrupted; run the same command to continue in {args.out}", file=sys.stderr
        )
        return 130
    except (SpeedrunError, ConfigError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"nanoseek speedrun: error: {e}", file=sys.stderr)
        return 2
    records = result["records"]
    print(f"\nreport: {result['report']}  (this session: {result['session_seconds'] / 60:.1f} min)")
    for name in ("pretrain", "sft", "grpo", "distill"):
        ev = records.get(f"eval_{name}", {})
        if ev:
            print(f"  {name:>8}: held-out pass@1 {100 * ev['pass@1']:.1f}%")
    print("\nnext:")
    for line in next_commands(Context(cfg, Path(args.out)), records):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(speedrun_main())
