"""`nanoseek eval`: evaluate a checkpoint or an OpenAI-compatible endpoint as DeepSeek reports R1.

    nanoseek eval --model runs/sft --tasks gsm8k,math500 --k 8 --benchmarks-dir /data/benchmarks
    nanoseek eval --model https://api.deepseek.com --remote-model deepseek-reasoner \\
        --api-key-env DEEPSEEK_API_KEY --split-n --tasks aime24 --k 4 --max-new-tokens 32768
    nanoseek eval --model runs/base --tasks mmlu --likelihood          # multiple choice by log-likelihood
    nanoseek eval --model runs/sft --tasks gsm8k --backend vllm       # generate with vLLM (nanoseek[vllm])
    nanoseek eval --model runs/sft --tasks "arithmetic?digits=3" --max-problems 200 --out runs/eval/a3
    nanoseek eval --model runs/sft --tasks aime24,math500 --protocol r1 --seeds 4   # R1's protocol
    nanoseek eval --compare runs/eval/sft runs/eval/grpo       # do two runs differ beyond noise?

Rerunning the same command continues a killed eval (`--out` defaults to runs/eval/<model>-<tasks>).
Outputs in --out: samples.jsonl (per sample: prompt, completion, reasoning, extracted answer,
verdict), problems.csv (per problem: samples, correct, pass rate, majority answer), summary.json
(metrics with standard errors and 95% intervals), report.md (the table also printed here),
config.json, timing.jsonl; with --seeds N, one such directory per seed (seed-<s>/) and the summary over
all of them. `--protocol r1` sets DeepSeek-R1's protocol (nanoseek.eval.config.protocol_settings);
every flag given explicitly overrides it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from nanoseek.eval.compare import compare_runs, compare_table
from nanoseek.eval.config import PROTOCOLS, R1_INPUT_PRICE, R1_OUTPUT_PRICE, EvalConfig, protocol_settings
from nanoseek.eval.generators import is_url, load_generator
from nanoseek.eval.report import markdown_table
from nanoseek.eval.runner import run_eval

# flags that default to the protocol's value (or EvalConfig's): None on the command line = not given
PROTOCOL_FLAGS = ("k", "temperature", "top_p", "max_new_tokens", "think", "system", "think_prefix")
PROTOCOL_FLAGS += ("instruction",)


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nanoseek eval",
        description="Evaluate a checkpoint or an OpenAI-compatible URL: pass@1 over k samples, pass@k, "
        "cons@k (DeepSeek-R1's protocol), tokens and $. Resumable: rerun to continue.",
    )
    p.add_argument("--model", help="checkpoint / run directory, or an API base URL (http...)")
    p.add_argument("--tasks", help="comma-separated task specs: gsm8k,math500,arithmetic?digits=2")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=None,
        help="a published protocol: r1 = DeepSeek-R1's (temperature 0.6, top-p 0.95, k 64 for AIME and 16 "
        "otherwise, 32,768 new tokens, the \\boxed{} instruction, no system prompt, replies forced to start "
        "with <think>\\n); explicit flags override its values",
    )
    p.add_argument("--k", type=int, default=None, help="samples per problem (default 8, or the protocol's)")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="run the eval N times with seeds seed..seed+N-1; error bars over problems x seeds",
    )
    p.add_argument("--max-problems", type=int, default=None, help="the first N problems of each task")
    p.add_argument("--split", default="test")
    p.add_argument("--temperature", type=float, default=None, help="default 0.6")
    p.add_argument("--top-p", type=float, default=None, help="default 0.95")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="token budget per sample, thinking included (default 1024; R1: 32768)",
    )
    p.add_argument(
        "--no-think",
        dest="think",
        action="store_const",
        const=False,
        default=None,
        help="close the think block in the prompt: answer directly",
    )
    p.add_argument("--system", default=None, help="a system prompt (R1 recommends none)")
    p.add_argument(
        "--think-prefix",
        type=lambda text: text.replace("\\n", "\n"),
        default=None,
        help="force every reply to start with this text, \\n read as a newline (R1: '<think>\\n'; '' leaves "
        "the reply's start to the chat template)",
    )
    p.add_argument(
        "--instruction", default=None, help="appended to every question that lacks it (R1: the \\boxed{} one)"
    )
    p.add_argument("--seed", type=int, default=0, help="base of the per-sample seeds")
    p.add_argument(
        "--pass-k",
        dest="pass_ks",
        metavar="PASS_K",
        type=_ints,
        default=[1],
        help="also report pass@k for these k (e.g. 1,4)",
    )
    p.add_argument("--likelihood", action="store_true", help="score multiple-choice tasks by log-likelihood")
    p.add_argument(
        "--mc-style", choices=["cloze", "letter"], default="cloze", help="likelihood context style"
    )
    p.add_argument("--concurrency", type=int, default=32, help="samples in flight at once")
    p.add_argument("--input-price", type=float, default=R1_INPUT_PRICE, help="$ per million input tokens")
    p.add_argument("--output-price", type=float, default=R1_OUTPUT_PRICE, help="$ per million output tokens")
    p.add_argument("--device-hour-price", type=float, default=0.0, help="$ per device-hour (native engine)")
    p.add_argument("--out", default=None, help="run directory (default runs/eval/<model>-<tasks>)")
    p.add_argument("--remote-model", default=None, help="model name at the URL (default: the first listed)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--split-n", action="store_true", help="one HTTP request per sample (APIs without n)")
    p.add_argument("--int8", action="store_true", help="int8 weights for the native engine")
    p.add_argument(
        "--backend",
        choices=("native", "vllm"),
        default="native",
        help="what generates from a checkpoint: nanoseek's engine, or vLLM in this process (nanoseek[vllm])",
    )
    p.add_argument("--benchmarks-dir", default=None, help="folder of benchmark JSONL files")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the error bars")
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        default=None,
        help="compare two earlier runs (their --out directories) over the same problems, paired: is B - A "
        "beyond noise? Runs no model",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def default_out(model: str, tasks: str) -> Path:
    name = re.sub(r"^https?://", "", model.rstrip("/")) if is_url(model) else Path(model).resolve().name
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", f"{name}-{tasks}").strip("_")[:120]
    return Path("runs") / "eval" / slug


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """The EvalConfig of the command line: EvalConfig's defaults, then the protocol's values, then every
    flag given explicitly. Under a protocol the reply prefix applies only while thinking is on."""
    tasks = [t for t in args.tasks.split(",") if t.strip()]
    settings = protocol_settings(args.protocol, tasks)
    explicit = {name: getattr(args, name) for name in PROTOCOL_FLAGS if getattr(args, name) is not None}
    if "k" in explicit:
        settings.pop("task_k", None)  # --k is every task's k
    if explicit.get("think") is False and "think_prefix" not in explicit:
        settings.pop("think_prefix", None)
    plain = ("max_problems", "split", "seed", "pass_ks", "likelihood", "concurrency", "input_price")
    plain += ("output_price", "device_hour_price", "seeds", "bootstrap")
    return EvalConfig(
        tasks=tasks, **{name: getattr(args, name) for name in plain}, **{**settings, **explicit}
    )


def compare_main(a: str, b: str, resamples: int) -> int:
    try:
        comparison = compare_runs(a, b, resamples)
    except (ValueError, FileNotFoundError) as e:
        print(f"nanoseek eval --compare: error: {e}", file=sys.stderr)
        return 2
    print(compare_table(comparison))
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.compare:
        return compare_main(*args.compare, args.bootstrap)
    if not args.model or not args.tasks:
        p.error("--model and --tasks are required (or --compare A B)")
    if args.benchmarks_dir:
        os.environ["NANOSEEK_BENCHMARKS_DIR"] = args.benchmarks_dir
    loaded = None
    try:
        cfg = eval_config(args)
        out = Path(args.out) if args.out else default_out(args.model, args.tasks)
        options = (
            args.remote_model,
            args.api_key_env,
            args.concurrency,
            args.split_n,
            args.int8,
            args.mc_style,
        )
        loaded = load_generator(args.model, *options, backend=args.backend)
        summary = run_eval(
            loaded.generator, cfg, out, loaded.label, loaded.scorer, args.progress, loaded.tokenizer
        )
    except (KeyError, ValueError, FileNotFoundError, RuntimeError, ImportError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"nanoseek eval: error: {message}", file=sys.stderr)
        return 2
    finally:
        if loaded is not None:
            loaded.close()
    print(markdown_table(summary))
    print(
        f"samples:  {out / 'samples.jsonl' if cfg.seeds == 1 else out / 'seed-*' / 'samples.jsonl'}\n"
        f"problems: {out / 'problems.csv'}\nsummary:  {out / 'summary.json'}\nreport:   {out / 'report.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(eval_main())
