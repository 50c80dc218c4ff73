"""llama.cpp runs what `nanoseek export gguf` writes: its greedy tokens against nanoseek's engine.

    python bench/llamacpp_check.py        # tiny DeepSeek (MLA, q_lora_rank > 0), Llama (+ 3.1 rope), Qwen2, Qwen3
    python bench/llamacpp_check.py --model runs/speedrun/grpo --model SmolLM2-dir --tokens 32
    python bench/llamacpp_check.py --llama-python /work/venv-llama/bin/python --out /tmp/llamacpp_check

For each model: `export_gguf` to f32, q8_0 and q4_0; nanoseek's engine decodes 5 prompts greedily for
--tokens tokens; llama.cpp (llama-cpp-python, which builds llama.cpp from source) loads each file,
tokenizes the prompts' text (compared with nanoseek's ids: the declared pre-tokenizer at work) and
decodes greedily from nanoseek's prompt ids; the table says on how many prompts the tokens are equal
and where the first one differs. f32 should match on every prompt; q8_0/q4_0 show how far rounding
moves a greedy path. Also the first step's logits, f32: max |llama.cpp - nanoseek|.

llama-cpp-python lives in its own environment (no torch there): this script runs itself under
--llama-python with --llama-side JOB, which imports only llama_cpp and json. Without --model it builds
two tiny models with unit-scale random weights (logits O(1), so greedy ties are rare) and a BPE trained
on a few lines, saved by nanoseek as any checkpoint is; the third Llama has Llama 3.1's rope scaling
(original context 32, so the prompts reach the scaled frequencies).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROMPTS = [
    "The cat sat on the mat.",
    "What is 12 + 34? I add them",
    "<｜User｜>Tell me a story about a dog.<｜Assistant｜>",
    "Once upon a time, 3 friends",
    "  indented code = {'a': [1, 2]}\n\n",
]
TYPES = ("f32", "q8_0", "q4_0")


# ------------------------------------------------------------------------------ llama.cpp side (no torch)
def llama_side(job_file: str) -> None:
    import llama_cpp

    job = json.loads(Path(job_file).read_text())
    results = []
    for item in job["files"]:
        llm = llama_cpp.Llama(
            model_path=item["path"],
            n_ctx=512,
            n_threads=2,
            n_batch=512,
            logits_all=True,
            verbose=False,
            type_k=job["cache_type"],  # llama.cpp caches in f16 by default; f32 to compare the model alone
            type_v=job["cache_type"],
        )
        out = {"path": item["path"], "tokenized": [], "generated": [], "first_logits": None}
        for text in job["texts"]:
            out["tokenized"].append(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        for i, ids in enumerate(job["prompts"]):
            llm.reset()
            tokens = []
            for t in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
                if i == 0 and not tokens:
                    out["first_logits"] = [float(x) for x in llm.scores[len(ids) - 1]]
                tokens.append(int(t))
                if len(tokens) == job["tokens"]:
                    break
            out["generated"].append(tokens)
        results.append(out)
        del llm
    Path(job["result"]).write_text(json.dumps(results))


# ------------------------------------------------------------------------------ nanoseek side
def tiny_models(root: Path) -> list[Path]:
    """A tiny DeepSeek-V3 (MLA with q_lora_rank, MoE with V3's grouped router), two tiny Llamas (plain
    rope, Llama 3.1's), a Qwen2 (q/k/v bias) and a Qwen3 (q/k norm, head_dim 32), with a 320-token BPE,
    saved as nanoseek checkpoints."""
    import torch

    from nanoseek.model import DeepSeekV3, DenseConfig, DenseTransformer, ModelConfig
    from nanoseek.tokenizer.train import train_tokenizer

    corpus = root / "corpus.txt"
    root.mkdir(parents=True, exist_ok=True)
    corpus.write_text(
        "The cat sat on the mat. What is 12 + 34? I add them and get 46. Once upon a time, three "
        "friends told a story about a dog.\n  code = {'a': [1, 2]}\n" * 50
    )
    tok = train_tokenizer([corpus], vocab_size=320, out_dir=None, show_progress=False)
    ids = dict(vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    deepseek = ModelConfig(
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        q_lora_rank=32,
        kv_lora_rank=32,
        qk_nope_head_dim=32,
        qk_rope_head_dim=16,
        v_head_dim=32,
        n_routed_experts=4,
        num_experts_per_tok=2,
        n_group=2,
        topk_group=1,
        **ids,
    )
    llama = DenseConfig(
        model_type="llama",
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        **ids,
    )
    rope = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0)
    llama31 = llama.replace(rope_scaling=rope | {"original_max_position_embeddings": 32}, rope_theta=500000.0)
    built = [("tiny_deepseek", DeepSeekV3(deepseek)), ("tiny_llama", DenseTransformer(llama))]
    built.append(("tiny_llama31", DenseTransformer(llama31)))  # Llama 3.1 rope: llama.cpp's rope_freqs
    built.append(("tiny_qwen2", DenseTransformer(llama.replace(model_type="qwen2", attention_bias=True))))
    qwen3 = llama.replace(model_type="qwen3", head_dim=32, attention_bias=False)  # H x D != hidden
    built.append(("tiny_qwen3", DenseTransformer(qwen3)))
    out = []
    for name, model in built:
        torch.manual_seed(len(out))
        with torch.no_grad():  # unit scale: norms near 1, matrices N(0, 1/fan_in)
            for pname, p in model.named_parameters():
                if p.dim() == 1:
                    p.copy_(1 + 0.1 * torch.randn_like(p)) if "norm" in pname else p.normal_(0, 0.1)
                else:
                    p.normal_(0, p.shape[-1] ** -0.5)
        model.save_pretrained(root / name)
        tok.save(root / name)
        out.append(root / name)
    return out


def nanoseek_greedy(model_dir: Path, prompts: list[list[int]], tokens: int):
    """(greedy completions, the first step's logits of prompt 0) from nanoseek's engine (fp32)."""
    import torch

    from nanoseek.engine import Engine
    from nanoseek.engine.protocol import GenerationRequest, SamplingParams

    engine = Engine.from_pretrained(model_dir, max_slots=len(prompts))
    params = SamplingParams(temperature=0, max_new_tokens=tokens, ignore_eos=True)
    done = engine.generate([GenerationRequest(prompt=p, params=params) for p in prompts])
    with torch.no_grad():
        first = engine.model(torch.tensor([prompts[0]]))[0, -1].tolist()
    return [c.token_ids for c in done], first, engine.tokenizer


def check_model(model_dir: Path, work: Path, tokens: int, llama_python: str, cache: str) -> list[dict]:
    from nanoseek.export.llamacpp import export_gguf
    from nanoseek.model.run_dirs import resolve_model_dir

    model_dir = resolve_model_dir(model_dir)
    name = model_dir.parent.parent.parent.name if model_dir.name == "model" else model_dir.name
    texts = PROMPTS
    started = time.perf_counter()
    files = []
    for qtype in TYPES:
        f = work / f"{name}.{qtype}.gguf"
        f.unlink(missing_ok=True)
        files.append(export_gguf(model_dir, f, qtype))
    export_s = time.perf_counter() - started
    from nanoseek.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(model_dir)
    prompts = [tok.bos_prefix + tok.encode(t) for t in texts]
    ours, first, _ = nanoseek_greedy(model_dir, prompts, tokens)
    job = {
        "files": [{"path": str(f)} for f in files],
        "texts": texts,
        "prompts": prompts,
        "tokens": tokens,
        "cache_type": 0 if cache == "f32" else 1,  # GGML_TYPE_F32, GGML_TYPE_F16
        "result": str(work / f"{name}.llama.json"),
    }
    (work / f"{name}.job.json").write_text(json.dumps(job))
    run = subprocess.run(
        [llama_python, __file__, "--llama-side", str(work / f"{name}.job.json")],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    if run.returncode != 0:
        print(f"{name}: llama.cpp failed (exit {run.returncode}):\n{run.stderr[-3000:]}", file=sys.stderr)
        return [{"model": name, "type": q, "error": run.stderr.strip().splitlines()[-1:]} for q in TYPES]
    rows = []
    for qtype, f, res in zip(TYPES, files, json.loads(Path(job["result"]).read_text())):
        theirs = res["generated"]
        same = sum(a == b for a, b in zip(ours, theirs))
        diverge = [
            next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None) for a, b in zip(ours, theirs)
        ]
        tokenized = sum(res["tokenized"][i] == tok.encode(t) for i, t in enumerate(texts))
        row = {
            "model": name,
            "type": qtype,
            "MiB": round(f.stat().st_size / 2**20, 2),
            "prompts_equal": same,
            "prompts": len(prompts),
            "first_divergence": [d for d in diverge if d is not None],
            "tokenizer_equal": f"{tokenized}/{len(texts)}",
            "export_s": round(export_s, 1),
        }
        if res["first_logits"] is not None:
            worst = max(abs(a - b) for a, b in zip(first, res["first_logits"]))
            row["max_abs_dlogit_step1"] = float(f"{worst:.2e}")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", help="model, checkpoint or run directory (repeatable)")
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens per prompt (default 32)")
    parser.add_argument("--llama-python", default="/work/venv-llama/bin/python", help="python with llama_cpp")
    parser.add_argument("--out", default="/tmp/llamacpp_check", help="work directory for the files")
    parser.add_argument(
        "--cache",
        choices=("f32", "f16"),
        default="f32",
        help="llama.cpp's KV cache type (its default is f16)",
    )
    parser.add_argument("--llama-side", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.llama_side:
        llama_side(args.llama_side)
        return 0
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    models = [Path(m) for m in args.model] if args.model else tiny_models(work / "models")
    rows = [row for m in models for row in check_model(m, work, args.tokens, args.llama_python, args.cache)]
    print(json.dumps(rows, indent=1))
    f32_differs = [
        r for r in rows if "error" in r or (r["type"] == "f32" and r["prompts_equal"] < r["prompts"])
    ]
    return 1 if f32_differs else 0


if __name__ == "__main__":
    sys.exit(main())
