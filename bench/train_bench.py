"""Training throughput of a recipe (default: the CPU toy): tokens/s and MFU per optimizer step, as medians.

    python bench/train_bench.py                                   # recipes/cpu_toy.toml, 30 timed steps
    python bench/train_bench.py --recipe recipes/cpu_toy.toml --steps 50 --warmup 5 train.seq_len=256
    torchrun --nproc_per_node 2 bench/train_bench.py              # data parallel (gloo on CPU)

It builds the recipe's run (data preparation included, in --out, a temporary directory by default),
then times `Trainer.train_step` alone: no evaluation, sampling or checkpoints. MFU is against the
declared peak of a known GPU or, on CPU, the fp32 matmul peak measured on this machine
(`nanoseek.train.cost.measure_matmul_peak_flops`, cached). The first --warmup steps are not counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from nanoseek.model import account
from nanoseek.train.config import load_config
from nanoseek.train.cost import human
from nanoseek.train.distributed import setup, teardown
from nanoseek.train.loop import Trainer


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", help="section.key=value overrides of the recipe")
    p.add_argument(
        "--recipe", default="recipes/cpu_toy.toml", help="a recipe file (or a packaged one's name)"
    )
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line too")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        total = args.warmup + args.steps
        cfg = load_config(
            args.recipe,
            [f"run.out={out}", "run.progress=false", f"train.max_steps={total}", *args.overrides],
        )
        env = setup(cfg.run.device)
        trainer = Trainer(cfg, env)
        steps = [trainer.train_step() for _ in range(total)][args.warmup :]
        teardown()

    acct = account(trainer.model.config, cfg.train.seq_len)
    tok_s = [r["tokens_per_s"] for r in steps]
    mfu = [r["mfu"] for r in steps]
    result = {
        "recipe": Path(args.recipe).name,
        "overrides": args.overrides,
        "device": f"{env.world_size} x {trainer.meter.device}",
        "params": acct.total_params,
        "active_params": acct.active_params,
        "tokens_per_step": cfg.train.device_batch_size * cfg.train.seq_len * trainer.accum * env.world_size,
        "peak_flops_per_device": trainer.meter.peak_flops_per_device,
        "peak_source": trainer.meter.peak_source,
        "steps": len(steps),
        "median_tokens_per_s": statistics.median(tok_s),
        "median_mfu": statistics.median(mfu),
        "p10_p90_tokens_per_s": (_quantile(tok_s, 0.1), _quantile(tok_s, 0.9)),
        "median_step_s": statistics.median(r["dt"] for r in steps),
    }
    if env.is_main:
        print(
            f"{result['recipe']} {' '.join(args.overrides)}: {human(acct.total_params)} params "
            f"({human(acct.active_params)} active), {result['tokens_per_step']:,} tokens/step on {result['device']}\n"
            f"peak {human(result['peak_flops_per_device'], 'FLOP/s')} per device ({result['peak_source']})\n"
            f"median over {len(steps)} steps: {result['median_tokens_per_s']:,.0f} tokens/s "
            f"(p10-p90 {result['p10_p90_tokens_per_s'][0]:,.0f}-{result['p10_p90_tokens_per_s'][1]:,.0f}), "
            f"MFU {100 * result['median_mfu']:.1f}%, {result['median_step_s'] * 1000:.0f} ms/step"
        )
        if args.json:
            print(json.dumps(result))
    return result


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(int(q * len(xs)), len(xs) - 1)]


if __name__ == "__main__":
    main(sys.argv[1:])
