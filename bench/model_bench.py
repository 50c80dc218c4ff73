"""Model benchmark: nanoseek's DeepSeekV3 against transformers' DeepseekV3ForCausalLM, same config,
same weights, same batch, in one process.

    python bench/model_bench.py                       # ~4M, ~20M, ~80M (presets d4, d6, d10)
    python bench/model_bench.py --sizes d4 --steps 5  # quicker

For each size it reports training-step throughput (forward + backward, tokens/s), forward latency
(ms per batch), the ratio nanoseek / transformers, and MFU against this machine's measured fp32
matmul peak. Medians over --steps timed repetitions after --warmup untimed ones; the machine is noisy,
so read the ratios. MTP is off (transformers' model has no MTP training path) and the weights are
random (our init zeroes the output projections, which would make the comparison meaningless).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from nanoseek.model import DeepSeekV3, account, preset
from nanoseek.train.cost import measure_matmul_peak_flops


def randomize(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)


def timed(fn, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_size(name: str, batch: int, seq: int, steps: int, warmup: int, peak: float) -> dict:
    from transformers import DeepseekV3ForCausalLM

    cfg = preset(name).replace(num_nextn_predict_layers=0, max_position_embeddings=max(seq, 256))
    torch.manual_seed(0)
    ours = DeepSeekV3(cfg)
    randomize(ours)
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        theirs = DeepseekV3ForCausalLM.from_pretrained(d, dtype=torch.float32)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    targets = torch.roll(ids, -1, dims=1)
    with torch.no_grad():  # same weights, same function
        diff = (ours.eval()(ids) - theirs.eval()(ids).logits).abs().max().item()
    assert diff < 1e-3, f"models disagree by {diff}"
    ours.train(), theirs.train()

    def ours_step():
        ours.zero_grad(set_to_none=True)
        ours(ids, targets=targets).total.backward()

    def theirs_step():
        theirs.zero_grad(set_to_none=True)
        theirs(ids, labels=ids).loss.backward()  # transformers shifts labels itself

    ours.eval(), theirs.eval()

    @torch.no_grad()
    def ours_forward():
        ours(ids)

    @torch.no_grad()
    def theirs_forward():
        theirs(ids)

    results = {}
    for label, fn, fwd, model in (
        ("nanoseek", ours_step, ours_forward, ours),
        ("transformers", theirs_step, theirs_forward, theirs),
    ):
        model.train()
        step_s = timed(fn, steps, warmup)
        model.eval()
        fwd_s = timed(fwd, steps, warmup)
        results[label] = (batch * seq / step_s, fwd_s * 1000)
    acct = account(cfg, seq_len=seq)
    tok_s = results["nanoseek"][0]
    return {
        "size": name,
        "total": acct.total_params,
        "active": acct.active_params,
        "ours_tok_s": tok_s,
        "hf_tok_s": results["transformers"][0],
        "ours_fwd_ms": results["nanoseek"][1],
        "hf_fwd_ms": results["transformers"][1],
        "mfu": acct.train_flops_per_token * tok_s / peak,
        "hf_mfu": acct.train_flops_per_token * results["transformers"][0] / peak,
        "experts_impl": getattr(theirs.config, "_experts_implementation", "eager"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["d4", "d6", "d10"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    peak = measure_matmul_peak_flops(torch.device("cpu"), torch.float32)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    print(f"batch {args.batch} x seq {args.seq}, median of {args.steps} steps after {args.warmup} warmup\n")
    header = "| size | total / active params | train tok/s nanoseek | transformers | ratio | fwd ms nanoseek | transformers | ratio | MFU nanoseek | transformers |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for name in args.sizes:
        r = bench_size(name, args.batch, args.seq, args.steps, args.warmup, peak)
        print(
            f"| {r['size']} | {r['total'] / 1e6:.1f}M / {r['active'] / 1e6:.1f}M "
            f"| {r['ours_tok_s']:.0f} | {r['hf_tok_s']:.0f} | {r['ours_tok_s'] / r['hf_tok_s']:.2f}x "
            f"| {r['ours_fwd_ms']:.1f} | {r['hf_fwd_ms']:.1f} | {r['hf_fwd_ms'] / r['ours_fwd_ms']:.2f}x "
            f"| {100 * r['mfu']:.1f}% | {100 * r['hf_mfu']:.1f}% |",
            flush=True,
        )
    print(f"\ntransformers experts implementation: {r['experts_impl']}")


if __name__ == "__main__":
    main()
