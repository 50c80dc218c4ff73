"""Model benchmark: nanoseek's model of a family against transformers' (DeepseekV3ForCausalLM, or
LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM for --family llama / qwen2 / qwen3), same
config, same weights, same batch, in one process.

    OMP_NUM_THREADS=1 python bench/model_bench.py                 # ~5M, ~15M, ~85M (presets d4, d6, d10)
    OMP_NUM_THREADS=1 python bench/model_bench.py --family qwen2  # the dense ladder at the same depths
    OMP_NUM_THREADS=1 python bench/model_bench.py --sizes d4 --steps 5 --warmup 1   # quicker
    OMP_NUM_THREADS=1 python bench/model_bench.py --sizes d4 --profile              # where the time goes

For each size it reports training-step throughput (forward + backward, tokens/s), forward latency
(ms per batch), the speedups of nanoseek over transformers, and MFU of both against this machine's
fp32 matmul peak. The two models alternate step by step (ours, theirs, ours, ...), so a change in
the machine's load hits both; speeds are medians over --steps timed repetitions after --warmup
untimed ones, and each speedup is the median of the per-pair ratios (theirs / ours for back-to-back
steps). Read the speedups: on a shared machine absolute speeds move with the load.

A dense family's size dN is `dense_config_for_depth(N, family)` (hidden 64N, GQA ratio 2, SwiGLU 8C/3;
qwen2 with q/k/v bias and tied embeddings, qwen3 with q/k norm) with the preset dN's vocabulary.

Fair comparison: the same config with MTP off in both (transformers' DeepseekV3ForCausalLM has no MTP
layers; it drops them when loading), the same fp32 weights (random: our init zeroes the output
projections, which would make the comparison meaningless), the same batch, eager mode in both, and
the same loss (mean next-token cross-entropy over the B x (T - 1) shifted targets: ours are the
rolled ids with the last position ignored, transformers shifts the labels itself). A one-off check
asserts both compute the same logits before anything is timed.

The peak. MFU divides model FLOPs/s by the machine's fp32 matmul peak, which is measured here, in
this process, with the thread count the models use, as the best of many short (~1-20 ms) square
matmuls at three sizes, once before each size and again after it; the highest value wins. A peak
cached from another run is not trusted: measured under load it is too low (a cached one-thread value
once made MFU read 150%), and it may come from another thread count. Short runs catch the quiet
moments a long one averages away, so the best of them approaches what the core can do. Should an
MFU still come out above 100% the bench says that the peak was underestimated instead of printing it.

The ceiling column is the speedup over transformers that nanoseek would reach running every FLOP it
must do at the measured peak: transformers' step time / (minimal step FLOPs / peak), where minimal
counts causal attention at half the full-context FLOPs that MFU (PaLM's convention) counts. When
transformers already runs near the peak no implementation of the same model in the same precision
can be 2x faster; the column says how close to that bound each size is.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable

import torch

from nanoseek.model import DenseConfig, account, dense_config_for_depth, get_family, preset

PEAK_SIZES = (256, 512, 1024)


def matmul_peak(rounds: int = 12) -> float:
    """Best fp32 FLOP/s of square matmuls of PEAK_SIZES over `rounds` short runs each (no cache)."""
    best = 0.0
    for n in PEAK_SIZES:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b  # warm up
        for _ in range(rounds):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def randomize(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)


def interleaved(fns: dict[str, Callable[[], object]], steps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each run of each fn, run alternately (a, b, a, b, ...) so load changes hit all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = defaultdict(list)
    for _ in range(steps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def paired_speedup(times: dict[str, list[float]]) -> float:
    """Median over repetitions of theirs / ours for back-to-back runs: each pair saw about the same
    load, so this is steadier on a shared machine than the ratio of the two medians."""
    return statistics.median(t / o for o, t in zip(times["ours"], times["theirs"]))


FAMILIES = ("deepseek_v3", "llama", "qwen2", "qwen3")


def config(name: str, seq: int, family: str = "deepseek_v3"):
    """The config of size `name` (a preset: d4, d6, ...) for `family`, positions for `seq` tokens."""
    base = preset(name)
    positions = max(seq, 256)
    if family == "deepseek_v3":
        return base.replace(num_nextn_predict_layers=0, max_position_embeddings=positions)
    depth = base.num_hidden_layers
    return dense_config_for_depth(
        depth, family, vocab_size=base.vocab_size, max_position_embeddings=positions
    )


def build(name: str, batch: int, seq: int, family: str = "deepseek_v3"):
    """Both models with the same weights, a batch and its targets."""
    from transformers import AutoModelForCausalLM

    cfg = config(name, seq, family)
    torch.manual_seed(0)
    ours = get_family(cfg.model_type).model_cls(cfg)
    randomize(ours)
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        theirs = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    targets = torch.roll(ids, -1, dims=1)
    targets[:, -1] = -100  # the same B x (T - 1) targets as transformers' shifted labels
    with torch.no_grad():  # same weights, same function
        diff = (ours.eval()(ids) - theirs.eval()(ids).logits).abs().max().item()
    assert diff < 1e-3, f"models disagree by {diff}"
    return cfg, ours, theirs, ids, targets


def step_fns(ours, theirs, ids, targets):
    def ours_step():
        ours.zero_grad(set_to_none=True)
        ours(ids, targets=targets).total.backward()

    def theirs_step():
        theirs.zero_grad(set_to_none=True)
        theirs(ids, labels=ids).loss.backward()  # transformers shifts labels itself

    return ours_step, theirs_step


def attention_flops(cfg, seq: int) -> float:
    """Training FLOPs per token of attention's scores and values over the full context (3 x forward)."""
    if isinstance(cfg, DenseConfig):
        per_head = 2 * cfg.head_dim  # q.k and p.v, D each
    else:
        per_head = cfg.qk_head_dim + cfg.v_head_dim
    return 3 * 2 * cfg.num_attention_heads * per_head * seq * cfg.num_hidden_layers


def bench_size(name: str, batch: int, seq: int, steps: int, warmup: int, family: str = "deepseek_v3") -> dict:
    peak_before = matmul_peak()
    cfg, ours, theirs, ids, targets = build(name, batch, seq, family)
    ours_step, theirs_step = step_fns(ours, theirs, ids, targets)
    ours.train(), theirs.train()
    train = interleaved({"ours": ours_step, "theirs": theirs_step}, steps, warmup)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        fwd = interleaved({"ours": lambda: ours(ids), "theirs": lambda: theirs(ids)}, steps, warmup)
    peak = max(peak_before, matmul_peak())
    speedup, fwd_speedup = paired_speedup(train), paired_speedup(fwd)
    train, fwd = ({k: statistics.median(v) for k, v in d.items()} for d in (train, fwd))
    acct = account(cfg, seq_len=seq)
    flops = acct.train_flops_per_token * batch * seq  # per step, full-context attention (MFU convention)
    minimal = flops - attention_flops(cfg, seq) / 2 * batch * seq  # causal attention needs half of it
    return {
        "size": name,
        "total": acct.total_params,
        "active": acct.active_params,
        "ours_tok_s": batch * seq / train["ours"],
        "hf_tok_s": batch * seq / train["theirs"],
        "speedup": speedup,
        "fwd_speedup": fwd_speedup,
        "ours_fwd_ms": fwd["ours"] * 1000,
        "hf_fwd_ms": fwd["theirs"] * 1000,
        "mfu": flops / train["ours"] / peak,
        "hf_mfu": flops / train["theirs"] / peak,
        "ceiling": train["theirs"] / (minimal / peak),
        "peak": peak,
        "experts_impl": getattr(theirs.config, "_experts_implementation", None) or "eager",
    }


def percent(mfu: float) -> str:
    return f"{100 * mfu:.1f}%" if mfu <= 1 else "peak underestimated"


# profile categories: aten op name -> what it is part of
CATEGORIES = {
    "matmul": ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::_grouped_mm", "mkldnn"),
    "softmax / loss": ("softmax", "log_softmax", "nll_loss", "exp", "amax", "logsumexp"),
    "index / dispatch": ("index", "scatter", "gather", "argsort", "sort", "bincount", "topk", "embedding"),
    "copy / cat / fill": ("copy_", "cat", "fill_", "zero_", "contiguous", "clone", "empty"),
}


def category(op: str) -> str:
    for cat, keys in CATEGORIES.items():
        if any(k in op for k in keys):
            return cat
    return "elementwise / other"


def profile_size(name: str, batch: int, seq: int, rows: int, family: str = "deepseek_v3") -> None:
    """torch.profiler over one training step of each model: per-op self CPU time and categories."""
    from torch.profiler import ProfilerActivity, profile

    _, ours, theirs, ids, targets = build(name, batch, seq, family)
    ours.train(), theirs.train()
    for label, fn in zip(("nanoseek", "transformers"), step_fns(ours, theirs, ids, targets)):
        fn()  # warm up
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            fn()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        by_cat = defaultdict(float)
        for e in events:
            if e.key.startswith("aten::") or e.key.startswith("mkldnn"):
                by_cat[category(e.key)] += e.self_cpu_time_total
        by_cat["autograd / python / other"] = total - sum(by_cat.values())
        print(f"\n## {name} {label}: one training step, {total / 1e3:.0f} ms self CPU time\n")
        print(
            " | ".join(f"{c} {100 * t / total:.1f}%" for c, t in sorted(by_cat.items(), key=lambda x: -x[1]))
        )
        share = by_cat["matmul"] / total
        print(
            f"matmul kernels take {100 * share:.1f}%: with all else free the step would be {1 / share:.2f}x faster"
        )
        print(events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=36))
        print(
            prof.key_averages(group_by_input_shape=True).table(
                sort_by="self_cpu_time_total",
                row_limit=rows,
                max_name_column_width=24,
                max_shapes_column_width=60,
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--family", choices=FAMILIES, default="deepseek_v3", help="the model family to compare"
    )
    parser.add_argument("--sizes", nargs="+", default=["d4", "d6", "d10"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="profile one step of each model instead")
    parser.add_argument("--rows", type=int, default=25, help="ops per profile table")
    args = parser.parse_args()
    if args.profile:
        for name in args.sizes:
            profile_size(name, args.batch, args.seq, args.rows, args.family)
        return
    what = "MTP off in both models" if args.family == "deepseek_v3" else "dense GQA"
    print(f"{args.family}: torch {torch.__version__}, {torch.get_num_threads()} threads, {what}, fp32, eager")
    print(
        f"batch {args.batch} x seq {args.seq}, median of {args.steps} interleaved steps after {args.warmup} warmup\n"
    )
    header = (
        "| size | total / active params | train tok/s nanoseek | transformers | speedup | fwd ms nanoseek "
        "| transformers | speedup | MFU nanoseek | transformers | ceiling | fp32 peak |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for name in args.sizes:
        r = bench_size(name, args.batch, args.seq, args.steps, args.warmup, args.family)
        print(
            f"| {r['size']} | {r['total'] / 1e6:.1f}M / {r['active'] / 1e6:.1f}M "
            f"| {r['ours_tok_s']:.0f} | {r['hf_tok_s']:.0f} | {r['speedup']:.2f}x "
            f"| {r['ours_fwd_ms']:.1f} | {r['hf_fwd_ms']:.1f} | {r['fwd_speedup']:.2f}x "
            f"| {percent(r['mfu'])} | {percent(r['hf_mfu'])} | {r['ceiling']:.2f}x | {r['peak'] / 1e9:.1f} GFLOP/s |",
            flush=True,
        )
    if args.family == "deepseek_v3":
        print(f"\ntransformers experts implementation: {r['experts_impl']}")


if __name__ == "__main__":
    main()
