"""Engine benchmark: decode speed against transformers, int8, and continuous batching, one run.

    python bench/engine_bench.py                      # preset d10 (~90M), 1 thread, ~10 minutes
    python bench/engine_bench.py --preset d4 --repeats 2 --requests 16   # a quick look
    python bench/engine_bench.py --family qwen2       # Qwen2.5-0.5B's shapes, scaled to ~103M (below)
    python bench/engine_bench.py --model path/to/SmolLM2-135M-Instruct.Q4_1.gguf   # a real checkpoint

One model with random-but-fixed weights (seeded; every matrix random, so generation is not
degenerate) is saved with save_pretrained and loaded by transformers' AutoModelForCausalLM, so both
sides run the same weights. --family picks it: deepseek_v3 (--preset, default d10), or a dense
family (llama, qwen2, qwen3) at Qwen2.5-0.5B's layer shapes (hidden 896, 14 heads, 2 K/V heads,
head_dim 64, intermediate 4864, tied, q/k/v bias for qwen2, q/k norm for qwen3) with 5 of its 24
layers and a 32,000-token vocabulary instead of 151,936: 103M parameters, each layer a 0.5B layer.
--model runs a checkpoint instead (a directory or a .gguf file; nanoseek and transformers each load
it). Measured, as medians over --repeats interleaved runs:

1. decode tokens/s at batch 1 and 16: greedy, prompts of --prompt-len tokens, --new-tokens tokens
   each; decode time = time(N tokens) - time(1 token), which removes the prefill. transformers runs
   `generate` with its default cache; the engine runs fp32, int8 weights, and fp32 + MTP speculation.
   Then each batch size's floor: the larger of reading the weights one step reads once (bytes per
   dtype over the bandwidth measured here: the faster of a large tensor copy and a sum over it,
   between the repeats) and, in fp32, doing the step's matmuls (batch x 2 FLOPs per weight) at this
   machine's fp32 matmul peak; each engine's step time as a multiple of it. No decode step beats its
   floor: where transformers' fp32 step is already within 3x of it, 3x transformers in fp32 is
   impossible on this machine, and the bench says so (at batch 1 memory binds, at 16 arithmetic).
2. int8 perplexity change: on 8 x 128 tokens the fp32 model samples itself (temperature 1).
3. continuous batching: --requests requests (prompt and completion lengths drawn at random) arriving
   over time; aggregate tokens/s of the engine's background loop against serving them one after another.

With --speculation --model DIR (a trained checkpoint, e.g. the speedrun's GRPO model) it measures MTP
speculation instead, on that model: the first --requests held-out problems of --task (the speedrun's task by
default) as chat prompts, greedy to the end of each answer, plain against speculative (interleaved
repeats, the same tokens both ways); it prints decode tokens/s at each batch size, the speedup, the
draft acceptance at temperature 0 overall and by position in the answer, and at --temperature.

    python bench/engine_bench.py --speculation --model runs/speedrun/grpo/model --batch-sizes 1 8

With --vllm (run by a Python that has vLLM: /work/venv-vllm/bin/python here) vLLM's offline engine
decodes beside them, in this process on the same threads, from the same weights in fp32 (saved with
save_pretrained; a .gguf --model written out as safetensors first, since vLLM 0.32 reads no GGUF), fed
the same token ids (no tokenizer: vLLM's skip_tokenizer_init): the "vllm fp32" row of each batch size,
with its ratio to transformers, the engine's ratio to it, and its place against the floor. vLLM runs
eager as the GRPO rollout backend runs it (`nanoseek.engine.vllm.make_llm`); --vllm-compile gives it
torch.compile (minutes to start). Both keep their prefix caches on (their defaults). `make_llm` gives
vLLM what a DeepSeek checkpoint needs on the CPU (plain attention where its MLA kernels lack the latent
width); a model vLLM still refuses prints the refusal, and the bench runs without it.

    /work/venv-vllm/bin/python bench/engine_bench.py --family llama --vllm --repeats 3

Threads default to 1: on a shared 2-core machine a second thread makes every op wait on a busy core.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from nanoseek.engine import Engine, GenerationRequest, SamplingParams
from nanoseek.engine.naive import perplexity
from nanoseek.engine.quant import quantize_int8, weight_bytes
from nanoseek.model import DeepSeekV3, from_pretrained, preset
from nanoseek.model.dense import DenseConfig, DenseTransformer
from nanoseek.train.cost import measure_matmul_peak_flops

DENSE_FAMILIES = ("llama", "qwen2", "qwen3")


def dense_bench_config(family: str) -> DenseConfig:
    """Qwen2.5-0.5B's layer shapes (hidden 896, 14 query heads, 2 K/V heads of 64, intermediate 4864,
    tied head) with 5 of its 24 layers and a 32,000-token vocabulary: 103M parameters. qwen2 has its
    q/k/v bias, qwen3 its q/k norm; llama neither."""
    return DenseConfig(
        model_type=family,
        vocab_size=32000,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=5,
        num_attention_heads=14,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=4096,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        eos_token_id=2,
    )


def random_weights(model: nn.Module, seed: int = 0, head_scale: float = 4.0) -> nn.Module:
    """Every matrix N(0, 1/fan_in) (our init zeroes output projections), biases N(0, 0.1), router
    biases N(0, 0.1), and the output head `head_scale` times larger, so next-token distributions are
    peaked like a trained model's (logits with standard deviation ~head_scale) rather than nearly
    uniform. A tied head is the embedding: drawn N(0, head_scale^2 / C), which gives those logits."""
    gen = torch.Generator().manual_seed(seed)
    tied = getattr(model.config, "tie_word_embeddings", False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif p.dim() >= 2:
                fan_in = (
                    p.shape[-2]
                    if name.endswith(("experts.gate_proj", "experts.up_proj", "experts.down_proj"))
                    else p.shape[-1]
                )
                std = 1.0 if name == "embed_tokens.weight" else fan_in**-0.5
                head = name == "lm_head.weight" or (tied and name == "embed_tokens.weight")
                std *= head_scale if head else 1.0
                p.copy_(torch.randn(p.shape, generator=gen) * std)
        for moe in model.moe_layers():
            moe.gate.e_score_correction_bias.copy_(torch.randn(moe.cfg.n_routed_experts, generator=gen) * 0.1)
    return model.eval()


def build_models(args) -> tuple[nn.Module, nn.Module, str]:
    """(fp32 model, its int8 copy, a name) for --model, --family or --preset."""
    if args.model:
        model = from_pretrained(args.model).float().eval()
        name = f"{Path(args.model).name} ({model.config.model_type})"
        return model, quantize_int8(copy.deepcopy(model)), name
    if args.family == "deepseek_v3":
        make = lambda: random_weights(DeepSeekV3(preset(args.preset)))  # noqa: E731
        return make(), quantize_int8(make()), f"deepseek_v3 preset {args.preset}"
    cfg = dense_bench_config(args.family)
    make = lambda: random_weights(DenseTransformer(cfg))  # noqa: E731
    shape = f"{cfg.num_hidden_layers} x Qwen2.5-0.5B layers, vocab {cfg.vocab_size}"
    return make(), quantize_int8(make()), f"{args.family} ({shape})"


def load_transformers(args, model: nn.Module):
    """transformers' model of the same weights: --model loaded by transformers itself (a .gguf with
    gguf_file=), else ours saved with save_pretrained and loaded back."""
    import transformers

    transformers.logging.set_verbosity_error()
    auto = transformers.AutoModelForCausalLM
    if args.model:
        path = Path(args.model)
        if path.suffix == ".gguf":
            hf = auto.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        else:
            hf = auto.from_pretrained(path, dtype=torch.float32)
    else:
        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d)
            hf = auto.from_pretrained(d, dtype=torch.float32)
    print(f"transformers {transformers.__version__}: {type(hf).__name__}")
    return hf.eval()


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


def step_bytes(model: nn.Module) -> int:
    """Bytes of weights one decode step reads at batch 1: every weight, less the embedding table (a
    lookup reads one row) unless the head is tied to it and reads it whole, and, in MoE layers, only
    the num_experts_per_tok of n_routed_experts routed experts one token runs."""
    total = weight_bytes(model)
    embed = model.embed_tokens.weight
    if getattr(model.lm_head, "weight", None) is not embed:
        total -= embed.numel() * embed.element_size()
    for moe in getattr(model, "moe_layers", list)():
        cfg = moe.cfg
        total -= round(weight_bytes(moe.experts) * (1 - cfg.num_experts_per_tok / cfg.n_routed_experts))
    return total


def copy_bandwidth(mib: int = 512, repeats: int = 7) -> float:
    """Bytes/s memory moves here, median of `repeats` on torch's threads: the faster of a large tensor
    copy (read + written, as STREAM counts it) and a sum over it (read only; a copy also pays for
    the writes, so a pure read, which is what a decode step does, can beat it): the yardstick for
    `step_bytes`, taken generously so that a floor above a goal is really out of reach."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.zeros_like(src)  # its pages touched: the copies time no page faults
    copies, reads = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        t1 = time.perf_counter()
        src.sum()
        copies.append(t1 - t0)
        reads.append(time.perf_counter() - t1)
    nbytes = src.numel() * 4
    return max(2 * nbytes / statistics.median(copies), nbytes / statistics.median(reads))


def step_flops(model: nn.Module) -> float:
    """Matmul FLOPs one token costs: 2 per weight it multiplies (`step_bytes`' weights: every matrix, the
    head, the active experts; not the embedding lookup). Attention over the context is left out, so
    the compute floor errs low, on the side of calling a goal possible."""
    return 2 * step_bytes(model) / 4  # fp32: 4 bytes a weight


def print_floor(
    models: dict[str, nn.Module],
    runs: dict[str, list[float]],
    bandwidths: list[float],
    batch: int = 1,
    peak: float = 0.0,
) -> dict:
    """Each contender's step time at `batch` as a multiple of its floor, and whether 3x transformers is
    above the fp32 floor at all. The floor of a step is the larger of reading its weights once (bytes
    / the bandwidth measured right after that repeat: paired, so load swings cancel) and, given the
    fp32 matmul `peak` (FLOP/s), doing its matmuls at that peak (batch x `step_flops` / peak): at
    batch 1 a step is bound by memory, at batch 16 mostly by arithmetic. int8's compute floor is not
    claimed (its peak depends on the instructions a CPU has): its floor is its bytes only."""
    bandwidth = statistics.median(bandwidths)
    print(f"  memory-bandwidth floor: {bandwidth / 1e9:.1f} GB/s (copy or sum, median between the repeats)")
    nbytes = {name: step_bytes(model) for name, model in models.items()}
    compute_s = batch * step_flops(models["fp32"]) / peak if peak else 0.0
    if peak:
        print(
            f"  compute floor: {batch} x {step_flops(models['fp32']) / 1e9:.2f} GFLOP at the fp32 matmul peak "
            f"{peak / 1e9:.0f} GFLOP/s = {compute_s * 1e3:.1f} ms per step"
        )
    for name in models:
        print(
            f"  {name:<20} reads {nbytes[name] / 2**20:7.0f} MiB per step: floor {nbytes[name] / bandwidth * 1e3:6.1f} ms"
        )

    def floor_s(dtype: str, bw: float) -> float:
        return max(nbytes[dtype] / bw, compute_s if dtype == "fp32" else 0.0)

    out = {
        "GBps": bandwidth / 1e9,
        "compute_ms": compute_s * 1e3,
        "floor_ms": {k: floor_s(k, bandwidth) * 1e3 for k in nbytes},
        "x_floor": {},
    }
    for name, tps in runs.items():
        dtype = "int8" if "int8" in name else "fp32"
        times = sorted((batch / t) / floor_s(dtype, b) for t, b in zip(tps, bandwidths))
        out["x_floor"][name] = statistics.median(times)
        print(
            f"  {name:<20} {1e3 * batch / statistics.median(tps):7.1f} ms per step = {statistics.median(times):5.2f}x "
            f"the {dtype} floor (paired [{times[0]:.2f}-{times[-1]:.2f}])"
        )
    if "transformers" in runs:
        x = out["x_floor"]["transformers"] / 3  # 3x transformers' step, in floors
        verdict = (
            "possible in fp32"
            if x >= 1
            else "BELOW the fp32 floor: 3x in fp32 is physically impossible on this machine (int8 reads fewer bytes)"
        )
        print(f"  3x transformers = {x:.2f}x the fp32 floor: {verdict}")
        out["three_x_fp32_possible"] = x >= 1
    return out


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


SPEEDRUN_TASK = "sort?length=4&max_value=9&instruction="


def chat_requests(task: str, n: int, temperature: float, max_new_tokens: int) -> list[GenerationRequest]:
    """The first n held-out problems of `task` as chat requests (seeded when sampled)."""
    from nanoseek.tasks import parse_task_spec

    problems = parse_task_spec(task).build().problems("test", n)
    return [
        GenerationRequest(
            messages=[{"role": "user", "content": p.prompt}],
            params=SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, seed=i),
        )
        for i, p in enumerate(problems)
    ]


def timed_generate(engine: Engine, requests: list[GenerationRequest]) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = engine.generate(requests)
    return time.perf_counter() - t0, out


def acceptance_by_position(
    engine: Engine, requests: list[GenerationRequest], buckets: int = 4
) -> list[float]:
    """Draft acceptance in each quarter of the answers (one request at a time: a step's drafts then
    belong to one position)."""
    hits = [[0, 0] for _ in range(buckets)]
    for r in requests:
        handle = engine.submit(r)
        while not handle.done:
            d0, a0 = engine.stats.drafted, engine.stats.accepted
            seqs = handle.state.sequences if handle.state is not None else []
            position = len(seqs[0].output) if seqs else 0
            engine.step()
            if engine.stats.drafted > d0:
                b = min(buckets - 1, position * buckets // r.params.max_new_tokens)
                hits[b][0] += engine.stats.drafted - d0
                hits[b][1] += engine.stats.accepted - a0
    return [a / d if d else float("nan") for d, a in hits]


def speculation_bench(args) -> dict:
    """Plain against MTP speculation on a trained checkpoint and held-out chat prompts."""
    from nanoseek.model import from_pretrained as load_model
    from nanoseek.tokenizer import Tokenizer

    model = load_model(args.model).eval()
    tok = Tokenizer.from_dir(args.model)
    B = max(args.batch_sizes)
    engine = Engine(model, tok, max_slots=B, token_budget=4096, speculative=True, prefix_cache_mb=0)
    print(
        f"{args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
        f"MTP depths {model.config.num_nextn_predict_layers}; threads {args.threads}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    greedy_reqs = chat_requests(args.task, args.requests, 0.0, args.max_new_tokens)
    results: dict = {"model": args.model, "decode": {}}
    engine.speculative = True
    engine.stats.drafted = engine.stats.accepted = 0
    _, outs = timed_generate(engine, greedy_reqs)
    greedy_rate = engine.stats.acceptance
    results["acceptance_t0"] = greedy_rate
    tokens = sum(len(c.token_ids) for c in outs)
    print(
        f"\ndraft acceptance, greedy, {len(greedy_reqs)} held-out prompts ({tokens} tokens): {greedy_rate:.1%}"
    )
    by_pos = acceptance_by_position(engine, greedy_reqs[: min(16, len(greedy_reqs))])
    results["acceptance_by_quarter"] = by_pos
    print("  by quarter of max_new_tokens: " + ", ".join(f"{x:.0%}" for x in by_pos))
    if args.temperature > 0:
        engine.stats.drafted = engine.stats.accepted = 0
        engine.generate(chat_requests(args.task, args.requests, args.temperature, args.max_new_tokens))
        results["acceptance_sampled"] = engine.stats.acceptance
        print(f"  at temperature {args.temperature}: {engine.stats.acceptance:.1%}")
    for b in args.batch_sizes:
        prompts_b = greedy_reqs[:b]
        first = [GenerationRequest(messages=r.messages, params=greedy(1)) for r in prompts_b]
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for mode in (False, True):
                engine.speculative = mode
                t1, _ = timed_generate(engine, first)
                tn, out = timed_generate(engine, prompts_b)
                times[mode].append(tn - t1)
        n = sum(len(c.token_ids) - 1 for c in out)
        plain, spec = statistics.median(times[False]), statistics.median(times[True])
        lo, mid, hi = paired(times[False], times[True])
        results["decode"][b] = {"plain_tps": n / plain, "spec_tps": n / spec, "speedup_paired": mid}
        print(
            f"\ndecode, batch {b} ({n} tokens, greedy to the end of the answers, median of {args.repeats}):\n"
            f"  plain {n / plain:8.1f} tokens/s\n  MTP   {n / spec:8.1f} tokens/s   "
            f"{plain / spec:.2f}x (paired {mid:.2f}x [{lo:.2f}-{hi:.2f}])"
        )
    print(f"\nload average at the end {os.getloadavg()[0]:.1f} (other processes share these cores)")
    return results


class OfflineVLLM:
    """vLLM's offline `LLM` as a decode contender: `generate` takes the bench's requests (token-id
    prompts, greedy, ignore_eos) like the Engine's, and hands vLLM the same ids."""

    def __init__(self, model_dir: Path, max_len: int, max_seqs: int, compile: bool = False, keep=None):
        from vllm import SamplingParams as VLLMParams

        from nanoseek.engine.vllm import make_llm

        self.keep = keep  # the temporary directory the model was written to, alive as long as this
        self.llm = make_llm(
            model_dir,
            max_len,
            dtype="float32",
            max_num_seqs=max_seqs,
            skip_tokenizer_init=True,
            enforce_eager=not compile,
        )
        self.params = VLLMParams

    def generate(self, requests: list[GenerationRequest]) -> list:
        params = [
            self.params(temperature=0, max_tokens=r.params.max_new_tokens, ignore_eos=True, detokenize=False)
            for r in requests
        ]
        prompts = [{"prompt_token_ids": list(r.prompt)} for r in requests]
        return self.llm.generate(prompts, params, use_tqdm=False)


def vllm_model_dir(path: str | Path, tmp: Path) -> Path:
    """A model directory vLLM reads: a model, checkpoint or run directory as nanoseek resolves it, or a
    .gguf written out as safetensors (float32) with its tokenizer (vLLM 0.32 reads no GGUF)."""
    from nanoseek.model.formats.gguf import gguf_to_hf_dir
    from nanoseek.model.run_dirs import resolve_model_dir
    from nanoseek.tokenizer.gguf_vocab import save_gguf_tokenizer

    path = resolve_model_dir(path)
    if path.suffix != ".gguf":
        return path
    out = tmp / path.stem
    print(
        f"{path.name}: vLLM reads no GGUF; writing it out as a safetensors model directory {out}", flush=True
    )
    gguf_to_hf_dir(path, out)
    save_gguf_tokenizer(path, out)
    return out


def vllm_contender(args, model: nn.Module, max_len: int) -> dict[str, OfflineVLLM]:
    """{"vllm fp32": vLLM on the bench's weights}, or {} with vLLM's refusal printed."""
    tmp = tempfile.TemporaryDirectory()
    try:
        if args.model:
            model_dir = vllm_model_dir(args.model, Path(tmp.name))
        else:
            model_dir = Path(tmp.name) / "model"
            model.save_pretrained(model_dir)
        t0 = time.perf_counter()
        vllm = OfflineVLLM(model_dir, max_len, max(args.batch_sizes), args.vllm_compile, keep=tmp)
        vllm.generate([GenerationRequest(prompt=[1, 2, 3], params=greedy(2))])  # a refusal comes here
    except Exception as err:  # noqa: BLE001 - any refusal of vLLM's is the result
        print(f"  vLLM refused this model: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
        return {}
    import vllm as vllm_package

    print(
        f"  vLLM {vllm_package.__version__}: up after {time.perf_counter() - t0:.0f} s "
        f"({'torch.compile' if args.vllm_compile else 'eager'}), torch threads {torch.get_num_threads()}"
    )
    return {"vllm fp32": vllm}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--family",
        default="deepseek_v3",
        choices=["deepseek_v3", *DENSE_FAMILIES],
        help="deepseek_v3 (--preset) or a dense family at Qwen2.5-0.5B's layer shapes (module docstring)",
    )
    parser.add_argument("--preset", default="d10", help="deepseek_v3's size")
    parser.add_argument(
        "--model", default=None, help="a checkpoint directory or .gguf file instead of random weights"
    )
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
    parser.add_argument("--vllm", action="store_true", help="also vLLM's offline engine (module docstring)")
    parser.add_argument("--vllm-compile", action="store_true", help="vLLM with torch.compile, not eager")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--speculation",
        action="store_true",
        help="with --model (a trained checkpoint): plain against MTP speculation on held-out prompts",
    )
    parser.add_argument(
        "--task", default=SPEEDRUN_TASK, help="--speculation: held-out prompts from this task"
    )
    parser.add_argument("--max-new-tokens", type=int, default=128, help="--speculation: per answer")
    parser.add_argument(
        "--temperature", type=float, default=0.6, help="--speculation: also sampled acceptance"
    )
    args = parser.parse_args(argv)
    if args.vllm and importlib.util.find_spec("vllm") is None:
        parser.error(
            f"--vllm: vLLM is not importable in {sys.executable}; run the bench with a Python that has it"
        )
    torch.set_num_threads(args.threads)
    if args.speculation:
        if not args.model:
            parser.error("--speculation needs --model: a checkpoint trained with an MTP module")
        results = speculation_bench(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        return results
    model, int8_model, name = build_models(args)
    cfg = model.config
    print(
        f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
        f"fp32 {weight_bytes(model) / 2**20:.0f} MiB, int8 {weight_bytes(int8_model) / 2**20:.0f} MiB; "
        f"threads {args.threads}; torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}"
    )
    for label, m in (("fp32", model), ("int8", int8_model)):
        reason = Engine(m, max_slots=1, max_len=8).runner.fast_decode_off
        print(f"  {label} decode path: {'the C step' if reason is None else 'the model forward: ' + reason}")
    hf = None if args.skip_hf else load_transformers(args, model)
    # cache positions per slot: what the longest request here needs (not a real model's 8k context)
    room = dict(max_len=min(cfg.max_position_embeddings, max(args.prompt_len + args.new_tokens, 192) + 8))
    results: dict = {"model": name, "threads": args.threads, "decode": {}}

    # 1. decode tokens/s --------------------------------------------------------------------------
    engines = {
        "engine fp32": Engine(model, max_slots=max(args.batch_sizes), token_budget=4096, **room),
        "engine int8": Engine(int8_model, max_slots=max(args.batch_sizes), token_budget=4096, **room),
    }
    if getattr(cfg, "num_nextn_predict_layers", 0):
        engines["engine fp32 + MTP"] = Engine(
            model, max_slots=max(args.batch_sizes), token_budget=4096, speculative=True, **room
        )
    if args.vllm:
        engines |= vllm_contender(args, model, room["max_len"])
    # this machine's fp32 matmul peak (the best measured so far: a busy machine only makes one low)
    peak = measure_matmul_peak_flops("cpu", torch.float32)
    for B in args.batch_sizes:
        batch = prompts(B, args.prompt_len, cfg.vocab_size, seed=B)
        runs: dict[str, list[float]] = {
            name: [] for name in ["transformers", *engines] if name != "transformers" or hf
        }
        bandwidths = []  # the copy bandwidth, measured between the repeats (the same load)
        for _ in range(args.repeats):  # interleaved, so load on the machine hits every contender alike
            if hf is not None:
                runs["transformers"].append(hf_decode_tps(hf, batch, args.new_tokens))
            for name, engine in engines.items():
                runs[name].append(engine_decode_tps(engine, batch, args.new_tokens))
            bandwidths.append(copy_bandwidth(repeats=3))
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
        if "vllm fp32" in med:
            lo, mid, hi = paired(runs["engine fp32"], runs["vllm fp32"])
            results["decode"][f"{B}_engine_over_vllm_paired"] = mid
            print(
                f"  engine fp32 / vLLM fp32: {med['engine fp32'] / med['vllm fp32']:.2f}x (paired {mid:.2f}x [{lo:.2f}-{hi:.2f}])"
            )
        contenders = {k: v for k, v in runs.items() if "MTP" not in k}  # the floor of this batch size
        floor = print_floor({"fp32": model, "int8": int8_model}, contenders, bandwidths, B, peak)
        results["floor" if B == 1 else f"floor_{B}"] = floor
    spec = engines.get("engine fp32 + MTP")
    if spec is not None and spec.stats["drafted"]:
        rate = spec.stats["accepted"] / spec.stats["drafted"]
        print(f"  MTP draft acceptance {rate:.0%} (random weights: the MTP module was never trained)")

    # 2. int8 perplexity --------------------------------------------------------------------------
    sampler = Engine(model, max_slots=8, **room)
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
    serial = Engine(model, max_slots=1, token_budget=4096, **room)
    batched = Engine(model, max_slots=16, token_budget=512, **room)
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
