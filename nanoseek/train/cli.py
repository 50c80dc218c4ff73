"""`nanoseek pretrain` and `nanoseek sft`: a recipe plus overrides in, a run directory out.

    nanoseek pretrain recipes/cpu_toy.toml train.max_steps=50 --out runs/toy
    nanoseek pretrain --out runs/toy --resume                    # continues with runs/toy/config.toml
    nanoseek pretrain recipes/cpu_toy.toml --data corpus/ --out runs/mine
    nanoseek sft recipes/cpu_toy_sft.toml --init runs/toy --out runs/toy-sft
    nanoseek sft recipes/cpu_toy_sft.toml --init runs/toy --data chat.parquet --format sharegpt --out runs/s
    torchrun --nproc_per_node 2 -m nanoseek.train.cli pretrain recipes/cpu_toy.toml --out runs/ddp

Arguments: an optional recipe (`*.toml`), any number of `section.key=value` overrides (see
`nanoseek.train.config`), and flags that are shortcuts for overrides: --out (run.out), --init
(model.init), --data PATH (data.train; repeat it for more paths; it also clears data.synthetic; a
file, a folder or a Hub dataset id, in any format `nanoseek.records` reads), --skip-bad (data.skip_bad),
--format (sft: data.format, the shape of a chat record; `nanoseek.data.chat`). --resume continues from the newest complete checkpoint in --out; without
a recipe it reuses the run's own config.toml, and a directory with neither is an error (nothing to
resume). Errors in the recipe, the data or an --init model are reported in one line naming the key,
file or record, with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from nanoseek.data import DataError
from nanoseek.data.chat import FORMATS
from nanoseek.model import CheckpointError
from nanoseek.model.run_dirs import latest_checkpoint
from nanoseek.train.config import ConfigError, command_config, load_config, recipe_parser
from nanoseek.train.distributed import teardown
from nanoseek.train.loop import train


def _parser(kind: str) -> argparse.ArgumentParser:
    what = {
        "pretrain": "Pretrain a DeepSeek-V3 model on corpus files or token shards.",
        "sft": "Supervised fine-tuning on chat data (OpenAI messages with optional reasoning_content or "
        "<think> in content, ShareGPT conversations, OpenR1-Math, prompt/response pairs) in JSONL, JSON, "
        "parquet, arrow, CSV (.gz/.zst too), folders of them or a Hub dataset id.",
    }[kind]
    p = recipe_parser(f"nanoseek {kind}", what, "start from this model/checkpoint/run directory")
    p.add_argument(
        "--data",
        action="append",
        metavar="PATH",
        help="training data (data.train), repeat for more: "
        + (
            "corpus files/dirs/Hub ids or a token-shard dir"
            if kind == "pretrain"
            else "chat data files/dirs or Hub ids (org/name[:config][@split])"
        ),
    )
    p.add_argument("--skip-bad", action="store_true", help="skip malformed chat records (data.skip_bad)")
    if kind == "sft":
        p.add_argument(
            "--format",
            choices=FORMATS,
            help="the shape of a chat record (data.format; default auto: decided per record); "
            "data.messages_field / prompt_field / response_field / reasoning_field name other fields",
        )
    return p


def parse_args(kind: str, argv: list[str] | None):
    """(TrainConfig, resume) from a command line."""
    args = _parser(kind).parse_intermixed_args(argv)
    flags = {"run.kind": kind, "run.out": args.out, "model.init": args.init, "data.train": args.data}
    if args.data:
        flags["data.synthetic"] = ""  # --data replaces the recipe's data, synthetic included
    if args.skip_bad:
        flags["data.skip_bad"] = True
    if getattr(args, "format", None):
        flags["data.format"] = args.format
    cfg = command_config(load_config, kind, args.args, args.out, args.resume, flags)
    recipe_given = any("=" not in a for a in args.args) or (Path(cfg.run.out) / "config.toml").is_file()
    if args.resume and not recipe_given and cfg.run.out and latest_checkpoint(cfg.run.out) is None:
        raise ConfigError(  # nothing to resume and no config.toml: the defaults would start a new run
            f"--resume: no checkpoint in {cfg.run.out} to resume from (and no config.toml); "
            "to start a new run there, pass a recipe"
        )
    return cfg, args.resume


def main(kind: str, argv: list[str] | None = None) -> int:
    """Run `nanoseek {kind}` with `argv` (the arguments after the command); returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv is None:  # the arguments after `nanoseek pretrain` / `python -m nanoseek.train.cli sft`
        argv = sys.argv[1:]
        argv = argv[1:] if argv[:1] == [kind] else argv
    try:
        cfg, resume = parse_args(kind, argv)
        summary = train(
            cfg, resume=resume, command=" ".join(shlex.quote(a) for a in ["nanoseek", kind, *argv])
        )
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as e:
        print(f"nanoseek {kind}: error: {e}", file=sys.stderr)
        return 2
    finally:
        teardown()
    if summary.get("train_loss") is not None:
        val = "" if summary["val_loss"] is None else f", val loss {summary['val_loss']:.4f}"
        cost = summary["cost"]
        print(
            f"done: step {summary['step']}, train loss {summary['train_loss']:.4f}{val}; "
            f"{cost['tokens']:,} tokens, {cost['device_hours']:.3g} device-hours, MFU {100 * cost['mfu']:.1f}%; "
            f"report: {summary['run_dir']}/report.md"
        )
    return 0


def pretrain_main(argv: list[str] | None = None) -> int:
    return main("pretrain", argv)


def sft_main(argv: list[str] | None = None) -> int:
    return main("sft", argv)


if __name__ == "__main__":  # python -m nanoseek.train.cli {pretrain|sft} ... (e.g. under torchrun)
    if len(sys.argv) < 2 or sys.argv[1] not in ("pretrain", "sft"):
        sys.exit("usage: python -m nanoseek.train.cli {pretrain|sft} [RECIPE.toml] [key=value ...] [flags]")
    sys.exit(main(sys.argv[1]))
