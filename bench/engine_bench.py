"""Engine benchmark: decode speed against transformers, int8, and continuous batching, one run.

    python bench/engine_bench.py                      # preset d10 (~90M), 1 thread, ~10 minutes
    python bench/engine_bench.py --preset d4 --repeats 2 --requests 16   # a quick look

One model with random-but-fixed weights (seeded; every matrix random, so generation is not
degenerate) is saved with save_pretrained and loaded by `transformers.DeepseekV3ForCausalLM`, so
both sides run the same weights. Measured, as medians over --repeats interleaved runs:

1. decode tokens/s at batch 1 and 16: greedy, prompts of --prompt-len tokens, --new-tokens tokens
   each; decode time = time(N tokens) - time(1 token), which removes the prefill. transformers runs
   `generate` with its default cache; the engine runs fp32, int8 weights, and fp32 + MTP speculation.
2. int8 perplexity change: on 8 x 128 tokens the fp32 model samples itself (temperature 1).
3. continuous batching: --requests requests (prompt and completion lengths drawn at random) arriving
   over time; aggregate tokens/s of the engine's background loop against serving them one after another.

Threads default to 1: on a shared 2-core machine a second thread makes every op wait on a busy core.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import tempfile
import time

import torch

from nanoseek.engine import Engine, GenerationRequest, SamplingParams
from nanoseek.engine.naive import perplexity
from nanoseek.engine.quant import quantize_int8, weight_bytes
from nanoseek.model import DeepSeekV3, preset


def random_weights(model: DeepSeekV3, seed: int = 0, head_scale: float = 4.0) -> DeepSeekV3:
    """Every matrix N(0, 1/fan_in) (our init zeroes output projections), router biases N(0, 0.1), and
    the output head `head_scale` times larger, so next-token distributions are peaked like a trained
    model's (logits with standard deviation ~head_scale) rather than nearly uniform."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = (
                    p.shape[-2]
                    if name.endswith(("experts.gate_proj", "experts.up_proj", "experts.down_proj"))
                    else p.shape[-1]
                )
                std = 1.0 if name == "embed_tokens.weight" else fan_in**-0.5
                std *= head_scale if name == "lm_head.weight" else 1.0
                p.copy_(torch.randn(p.shape, generator=gen) * std)
        for moe in model.moe_layers():
            moe.gate.e_score_correction_bias.copy_(torch.randn(moe.cfg.n_routed_experts, generator=gen) * 0.1)
    return model.eval()


def prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(5, vocab, (length,), generator=g).tolist() for _ in range(n)]


def greedy(new_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0, max_new_tokens=new_tokens, ignore_eos=True)


def engine_decode_tps(engine: Engine, batch: list[list[int]], new_tokens: int) -> float:
    def timed(n: int) -> float:
        t0 = time.perf_counter()
        engine.generate([GenerationRequest(prompt=p, params=greedy(n)) for p in batch])
        return time.perf_counter() - t0

    t1, tn = timed(1), timed(new_tokens)
    return len(batch) * (new_tokens - 1) / (tn - t1)


def hf_decode_tps(hf, batch: list[list[int]], new_tokens: int) -> float:
    ids = torch.tensor(batch)
    mask = torch.ones_like(ids)

    def timed(n: int) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            hf.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - t0

    t1, tn = timed(1), timed(new_tokens)
    return len(batch) * (new_tokens - 1) / (tn - t1)


def paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Min, median and max of a[i] / b[i] over repeats i (a and b measured back to back)."""
    ratios = [x / y for x, y in zip(a, b)]
    return min(ratios), statistics.median(ratios), max(ratios)


def continuous_batching(engine: Engine, workload, concurrent: bool) -> tuple[float, float]:
    """Serve (arrival_s, prompt, new_tokens) requests; returns (aggregate tokens/s, median latency s).
    concurrent: all submitted at their arrival times to the background loop; else one after another."""
    latencies, total = [], sum(n for _, _, n in workload)
    t0 = time.perf_counter()
    if concurrent:
        engine.start()
        handles = []
        for arrival, prompt, n in workload:
            time.sleep(max(0.0, t0 + arrival - time.perf_counter()))
            handles.append(engine.submit(GenerationRequest(prompt=prompt, params=greedy(n))))
        for handle in handles:
            handle.result()
        engine.stop()
        latencies = [h.finished_at - h.submitted_at for h in handles]
    else:
        for arrival, prompt, n in workload:
            time.sleep(max(0.0, t0 + arrival - time.perf_counter()))
            engine.generate([GenerationRequest(prompt=prompt, params=greedy(n))])
            latencies.append(time.perf_counter() - (t0 + arrival))  # from arrival, queueing included
    elapsed = time.perf_counter() - t0
    return total / elapsed, statistics.median(latencies)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="d10")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument(
        "--arrival-window", type=float, default=10.0, help="seconds over which requests arrive"
    )
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = preset(args.preset)
    model = random_weights(DeepSeekV3(cfg))
    int8_model = quantize_int8(random_weights(DeepSeekV3(cfg)))
    print(
        f"preset {args.preset}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
        f"fp32 {weight_bytes(model) / 2**20:.0f} MiB, int8 {weight_bytes(int8_model) / 2**20:.0f} MiB; "
        f"threads {args.threads}; torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}"
    )
    hf = None
    if not args.skip_hf:
        import transformers

        transformers.logging.set_verbosity_error()
        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d)
            hf = transformers.DeepseekV3ForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        print(f"transformers {transformers.__version__}")
    results: dict = {"preset": args.preset, "threads": args.threads, "decode": {}}

    # 1. decode tokens/s --------------------------------------------------------------------------
    engines = {
        "engine fp32": Engine(model, max_slots=max(args.batch_sizes), token_budget=4096),
        "engine int8": Engine(int8_model, max_slots=max(args.batch_sizes), token_budget=4096),
    }
    if cfg.num_nextn_predict_layers:
        engines["engine fp32 + MTP"] = Engine(
            model, max_slots=max(args.batch_sizes), token_budget=4096, speculative=True
        )
    for B in args.batch_sizes:
        batch = prompts(B, args.prompt_len, cfg.vocab_size, seed=B)
        runs: dict[str, list[float]] = {
            name: [] for name in ["transformers", *engines] if name != "transformers" or hf
        }
        for _ in range(args.repeats):  # interleaved, so load on the machine hits every contender alike
            if hf is not None:
                runs["transformers"].append(hf_decode_tps(hf, batch, args.new_tokens))
            for name, engine in engines.items():
                runs[name].append(engine_decode_tps(engine, batch, args.new_tokens))
        med = {name: statistics.median(v) for name, v in runs.items()}
        results["decode"][B] = med
        print(f"\ndecode, batch {B}: tokens/s (median of {args.repeats}; paired: median and range of the")
        print("  per-repeat ratios, each measured back to back, which load swings on a shared machine spare)")
        for name, value in med.items():
            ratio = ""
            if "transformers" in med:
                lo, mid, hi = paired(runs[name], runs["transformers"])
                ratio = f"  {value / med['transformers']:.2f}x transformers (paired {mid:.2f}x [{lo:.2f}-{hi:.2f}])"
            print(f"  {name:<20} {value:8.1f}{ratio}")
        lo, mid, hi = paired(runs["engine int8"], runs["engine fp32"])
        results["decode"][f"{B}_int8_over_fp32_paired"] = mid
        print(
            f"  int8 / fp32: {med['engine int8'] / med['engine fp32']:.2f}x (paired {mid:.2f}x [{lo:.2f}-{hi:.2f}])"
        )
    spec = engines.get("engine fp32 + MTP")
    if spec is not None and spec.stats["drafted"]:
        rate = spec.stats["accepted"] / spec.stats["drafted"]
        print(f"  MTP draft acceptance {rate:.0%} (random weights: the MTP module was never trained)")

    # 2. int8 perplexity --------------------------------------------------------------------------
    sampler = Engine(model, max_slots=8)
    params = SamplingParams(temperature=1.0, max_new_tokens=127, seed=0, ignore_eos=True)
    own = [
        c.token_ids
        for c in sampler.generate(
            [GenerationRequest(prompt=[p[0]], params=params) for p in prompts(8, 1, cfg.vocab_size, 1)]
        )
    ]
    texts = {
        "model's own samples": torch.tensor(
            [[p[0], *t] for p, t in zip(prompts(8, 1, cfg.vocab_size, 1), own)]
        ),
    }
    results["perplexity"] = {}
    print("\nint8 perplexity")
    for name, ids in texts.items():
        fp, q = perplexity(model, ids), perplexity(int8_model, ids)
        results["perplexity"][name] = {"fp32": fp, "int8": q}
        print(f"  {name:<20} fp32 {fp:9.3f}  int8 {q:9.3f}  change {100 * (q / fp - 1):+.2f}%")

    # 3. continuous batching ----------------------------------------------------------------------
    rng = random.Random(0)
    workload = sorted(
        (
            rng.uniform(0, args.arrival_window),
            prompts(1, rng.randint(8, 96), cfg.vocab_size, 100 + i)[0],
            rng.randint(16, 96),
        )
        for i in range(args.requests)
    )
    serial = Engine(model, max_slots=1, token_budget=4096)
    batched = Engine(model, max_slots=16, token_budget=512)
    s_tps, s_lat = continuous_batching(serial, workload, concurrent=False)
    c_tps, c_lat = continuous_batching(batched, workload, concurrent=True)
    results["continuous"] = {
        "serial_tps": s_tps,
        "batched_tps": c_tps,
        "serial_p50_s": s_lat,
        "batched_p50_s": c_lat,
    }
    print(
        f"\ncontinuous batching: {args.requests} requests arriving over {args.arrival_window:.0f} s, 16 slots"
    )
    print(f"  one after another  {s_tps:8.1f} tokens/s   median latency {s_lat:6.2f} s")
    print(
        f"  continuous batch   {c_tps:8.1f} tokens/s   median latency {c_lat:6.2f} s   {c_tps / s_tps:.2f}x"
    )
    print(f"\nload average at the end {os.getloadavg()[0]:.1f} (other processes share these cores)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                results,
                f,
                indent=2,
                default=lambda x: x if not isinstance(x, float) or math.isfinite(x) else None,
            )
    return results


if __name__ == "__main__":
    main()
