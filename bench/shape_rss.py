"""Resident memory of an engine serving ever new (batch, prompt length) shapes (issue 19, item 3).

    OMP_NUM_THREADS=1 python bench/shape_rss.py            # --shapes 200 --passes 2

A server sees prompts of every length in batches of every size. Each new shape used to leave memory
behind: oneDNN compiles a kernel per input shape of the fp32 matmuls and caches it (two LRU caches
of 1024 entries), and glibc keeps the heap holes of prefill temporaries of ever new sizes. This runs
`--shapes` distinct (batch 1-8, prompt 40-64 tokens) shapes through an engine's background loop,
`--passes` times over the same shapes, and prints the growth of VmRSS after every 50, from a
start after warm-up. The model is tiny_config's MoE widened to 256 (random weights, no download).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402
from helpers import ragged_prompts, random_model, tiny_config  # noqa: E402

from nanoseek.engine import Engine, GenerationRequest, SamplingParams  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=200)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = tiny_config(vocab_size=4096, hidden_size=256, intermediate_size=512, max_position_embeddings=1024)
    engine = Engine(
        random_model(cfg), max_slots=8, max_len=1024, token_budget=4096, prefix_cache_mb=0
    ).start()
    shapes = [(b, n) for n in range(40, 1000) for b in range(1, 9)][: args.shapes]

    def run(batch: int, length: int, seed: int) -> None:
        params = SamplingParams(temperature=0, max_new_tokens=2, ignore_eos=True)
        prompts = ragged_prompts([length] * batch, vocab=cfg.vocab_size, seed=seed)
        engine.generate([GenerationRequest(prompt=p, params=params) for p in prompts])
        time.sleep(0.01)  # the loop goes idle between requests, as a server's does

    for batch in range(1, 9):  # warm-up: the shapes every run needs
        run(batch, 30, 0)
    start, began, marks = rss_mb(), time.perf_counter(), []
    for _ in range(args.passes):
        for i, (batch, length) in enumerate(shapes):
            run(batch, length, i)
            if i % 50 == 49:
                marks.append(round(rss_mb() - start, 1))
    engine.stop()
    print(
        f"VmRSS {start:.0f} MB after warm-up; growth after every 50 shapes, {args.passes} passes over "
        f"{len(shapes)}: {marks} MB ({time.perf_counter() - began:.0f} s)"
    )


if __name__ == "__main__":
    main()
