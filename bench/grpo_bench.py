"""Seconds per GRPO step: nanoseek's `grpo` against TRL's GRPOTrainer, same model, task, G, batch, lengths.

    python bench/grpo_bench.py                                  # 8 prompts x G=8, 64 new tokens, 2 threads
    python bench/grpo_bench.py --prompts 16 --group 8 --tokens 64 --steps 3 --warmup 1 --json
    python bench/grpo_bench.py --init runs/r1zero/base          # a trained base model instead of a fresh one
    /work/venv-vllm/bin/python bench/grpo_bench.py --family llama --vllm --skip-trl   # + vLLM rollouts

The model is a tiny DeepSeek-V3 (the micro experiment's shape: depth 2, MLA, 8 routed experts, no MTP)
with a BPE trained on R1-Zero documents of the task, saved with `save_pretrained`; TRL loads the same
directory with transformers' `DeepseekV3ForCausalLM` and `PreTrainedTokenizerFast`. Both sides:
R1-Zero prompts of the same problems, G samples per prompt at temperature 1, at most --tokens new tokens
(no stop strings, so both generate until EOS or the cap), Bernoulli(0.5) rewards (a fresh model earns no
reward, and nanoseek would then skip the update of every zero-variance group: random rewards make both
sides do the full update; `--verifier` uses the task's verifier instead), beta = 0
(no reference model), mu = 1, micro-batches of 32 sequences, one AdamW step per batch of rollouts,
fp32 on the CPU with the same number of threads. A step is everything: generation, scoring, forward,
backward and the optimizer. The first --warmup steps of each are not timed; the median of the rest is
reported. The two alternate step by step (a TRL step, then a nanoseek step, from a TRL callback), so
a change in the machine's load hits both; the speedup is the median of the per-pair ratios. (Prompt token ids differ slightly: TRL's tokenizer turns the template's "<think>" text into the
control token, nanoseek encodes it as plain text like the pretraining corpus.)

--family llama makes the fresh model a dense Llama of the same width (hidden 128, 2 layers, 2 heads of
64: a head width vLLM's CPU attention takes) instead of the DeepSeek-V3 (which vLLM runs on the CPU with
its plain attention, its MLA kernels lacking this latent width: `nanoseek.engine.vllm.make_llm`).
--vllm adds nanoseek's GRPO with `rollout.backend = "vllm"` (vLLM's offline engine in this process, the
policy's weights synced into it after every update) beside the native engine's: the same config
otherwise, a step of each in turn (after a TRL step, unless --skip-trl), so its ratio is paired too;
vLLM's seconds include the weight sync. It needs a Python with vLLM (/work/venv-vllm/bin/python here,
which has no TRL: add --skip-trl). If vLLM refuses the model, its refusal is printed and the rest runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import torch

TASK = "arithmetic?digits=2&ops=+&instruction="


def build_model(out: Path, family: str = "deepseek_v3") -> Path:
    """A fresh tiny model (DeepSeek-V3, or a dense Llama of its width) and a BPE trained on R1-Zero
    documents of the task, in out/model."""
    from nanoseek.model import DeepSeekV3, DenseConfig, DenseTransformer, config_for_depth
    from nanoseek.rl.micro import write_corpus
    from nanoseek.tokenizer import train_tokenizer

    corpus = out / "corpus.jsonl"
    write_corpus(TASK, corpus, shortcut_share=0.7, worked=1, seed=0)
    model_dir = out / "model"
    tok = train_tokenizer([corpus], 512, model_dir, show_progress=False)
    torch.manual_seed(0)
    if family == "llama":
        ids = dict(vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
        cfg = DenseConfig(
            model_type="llama", hidden_size=128, intermediate_size=384, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=1024, **ids,
        )  # fmt: skip
        model = DenseTransformer(cfg)
    else:
        model = DeepSeekV3(config_for_depth(2, vocab_size=tok.vocab_size, mtp=0))
    with torch.no_grad():  # a zero output head samples uniformly; give the distribution some shape
        model.lm_head.weight.normal_(std=0.02)
    model.save_pretrained(model_dir)
    return model_dir


def nanoseek_trainer(model_dir: Path, out: Path, args, backend: str = "native"):
    from nanoseek.rl import GRPOTrainer, load_grpo_config

    cfg = load_grpo_config(
        None,
        [
            f"run.out={out / f'nanoseek-{backend}'}",
            f"rollout.backend={backend}",
            f"model.init={model_dir}",
            f'task.name="{TASK}"',
            "run.device=cpu",
            "run.progress=false",
            f"rollout.group_size={args.group}",
            f"rollout.prompts_per_step={args.prompts}",
            f"rollout.max_new_tokens={args.tokens}",
            "rollout.stop=[]",
            "grpo.micro_batch=32",
            "grpo.eps_high=0.28",
            f"train.max_steps={args.warmup + args.steps}",
            "train.lr=1e-3",
            "eval.problems=1",
            f"reward.random={'false' if args.verifier else 'true'}",
        ],
    )
    return GRPOTrainer(cfg)


def bench_nanoseek(trainer, steps: int, warmup: int = 0, label: str = "nanoseek") -> list[dict]:
    """The records of `steps` GRPO steps after `warmup` untimed ones, each with its "seconds"."""
    records = []
    for _ in range(warmup + steps):
        t0 = time.perf_counter()
        record = trainer.train_step()
        record["seconds"] = time.perf_counter() - t0
        records.append(record)
        print(
            f"  {label} step {record['step']}: {record['seconds']:.2f}s ({record['generated_tokens']} tokens; "
            f"generation {record['gen_seconds']:.2f}s, update {record['train_seconds']:.2f}s)",
            flush=True,
        )
    return records[warmup:]


def vllm_trainer(model_dir: Path, out: Path, args):
    """(nanoseek's trainer with vLLM rollouts, None), or (None, vLLM's refusal)."""
    try:
        trainer = nanoseek_trainer(model_dir, out, args, "vllm")
        bench_nanoseek(trainer, 0, args.warmup, "nanoseek+vLLM")  # a refusal comes at the first rollouts
        return trainer, None
    except Exception as err:  # noqa: BLE001 - any refusal of vLLM's is the result
        refusal = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        print(f"vLLM rollouts refused: {refusal}", flush=True)
        return None, refusal


def bench_trl(model_dir: Path, out: Path, args, after_each_step=None) -> list[float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from nanoseek.tasks import parse_task_spec
    from nanoseek.tokenizer import r1_zero_prompt

    task = parse_task_spec(TASK).build()
    problems = task.problems("train", 2000)
    by_prompt = {r1_zero_prompt(p.prompt): p for p in problems}
    dataset = Dataset.from_list([{"prompt": text} for text in by_prompt])

    rng = random.Random(0)

    def reward(prompts, completions, **kwargs):
        if not args.verifier:
            return [float(rng.random() < 0.5) for _ in completions]
        scored = task.score_batch([by_prompt[p] for p in prompts], completions)
        return [r for r, _ in scored]

    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    batch = args.prompts * args.group
    micro = min(32, batch)
    config = GRPOConfig(
        output_dir=str(out / "trl"),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=batch // micro,  # = steps_per_generation: one generation per step
        num_generations=args.group,
        max_completion_length=args.tokens,
        temperature=1.0,
        beta=0.0,
        num_iterations=1,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type="grpo",
        learning_rate=1e-3,
        max_steps=args.warmup + args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_dropout=True,
        seed=0,
    )

    class Timer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.t0 = 0.0

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.t0)
            print(f"  TRL step {len(self.times)}: {self.times[-1]:.2f}s", flush=True)
            if after_each_step is not None and len(self.times) > args.warmup:
                after_each_step()

    timer = Timer()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer],
    )
    trainer.train()
    return timer.times[args.warmup :]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", default=None, help="a nanoseek model directory (default: a fresh tiny model)")
    p.add_argument(
        "--family", choices=["deepseek_v3", "llama"], default="deepseek_v3", help="the fresh model"
    )
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--group", type=int, default=8, help="G, samples per prompt")
    p.add_argument("--tokens", type=int, default=64, help="max new tokens per sample")
    p.add_argument("--steps", type=int, default=5, help="timed steps of each")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2, help="torch threads (both sides)")
    p.add_argument("--verifier", action="store_true", help="reward with the task's verifier, not at random")
    p.add_argument("--skip-trl", action="store_true", help="time nanoseek only")
    p.add_argument("--vllm", action="store_true", help='also nanoseek with rollout.backend = "vllm"')
    p.add_argument("--json", action="store_true", help="print the result as one JSON line too")
    args = p.parse_args(argv)
    missing = [
        name
        for name, wanted in (("trl", not args.skip_trl), ("vllm", args.vllm))
        if wanted and not find_spec(name)
    ]
    if missing:
        p.error(
            f"{' and '.join(missing)} not importable in {sys.executable} (--skip-trl runs without TRL; "
            "vLLM: the Python of a venv that has it, e.g. /work/venv-vllm/bin/python)"
        )
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        model_dir = Path(args.init) if args.init else build_model(out, args.family)
        if args.init:
            from nanoseek.model.run_dirs import resolve_model_dir

            model_dir = resolve_model_dir(model_dir)
        print(
            f"model {model_dir}; {args.prompts} prompts x G={args.group}, <= {args.tokens} new tokens",
            flush=True,
        )
        # the contenders alternate step by step (a TRL step, then a nanoseek step with each rollout
        # backend, ...), so a change in the machine's load hits all; each round gives one ratio
        trainers = {"native": nanoseek_trainer(model_dir, out, args)}
        bench_nanoseek(trainers["native"], 0, args.warmup)
        refused = None
        if args.vllm:
            trainer, refused = vllm_trainer(model_dir, out, args)
            trainers |= {"vllm": trainer} if trainer is not None else {}
        ours: dict[str, list[dict]] = {name: [] for name in trainers}

        def one_round() -> None:
            for name, trainer in trainers.items():
                ours[name] += bench_nanoseek(
                    trainer, 1, label="nanoseek" if name == "native" else "nanoseek+vLLM"
                )

        if args.skip_trl:
            theirs = []
            for _ in range(args.steps):
                one_round()
        else:
            theirs = bench_trl(model_dir, out, args, one_round)
    return report(args, ours, theirs, refused)


def report(args, ours: dict[str, list[dict]], theirs: list[float], vllm_refused: str | None) -> dict:
    """Print and return s/step of each contender and the paired ratios."""
    native = [r["seconds"] for r in ours["native"]]
    result = {
        "prompts": args.prompts,
        "group": args.group,
        "max_new_tokens": args.tokens,
        "threads": args.threads,
        "nanoseek_s_per_step": statistics.median(native),
        "trl_s_per_step": statistics.median(theirs) if theirs else None,
    }
    line = f"nanoseek grpo: {result['nanoseek_s_per_step']:.2f} s/step"
    if theirs:
        ratios = sorted(t / o for t, o in zip(theirs, native))
        result["speedup"] = statistics.median(ratios)
        result["speedup_range"] = [ratios[0], ratios[-1]]
        line += (
            f"; TRL GRPOTrainer: {result['trl_s_per_step']:.2f} s/step; speedup {result['speedup']:.1f}x "
            f"(median of {len(ratios)} paired steps, range {ratios[0]:.1f}-{ratios[-1]:.1f}x)"
        )
    print(line)
    if "vllm" in ours:
        with_vllm = [r["seconds"] for r in ours["vllm"]]
        ratios = sorted(v / n for v, n in zip(with_vllm, native))
        gen = {name: statistics.median(r["gen_seconds"] for r in recs) for name, recs in ours.items()}
        result |= {
            "vllm_s_per_step": statistics.median(with_vllm),
            "vllm_over_native": statistics.median(ratios),
            "vllm_over_native_range": [ratios[0], ratios[-1]],
            "gen_seconds": gen,
        }
        faster = "native faster" if result["vllm_over_native"] > 1 else "vLLM faster"
        print(
            f"rollout backend: native {result['nanoseek_s_per_step']:.2f} s/step (generation {gen['native']:.2f} s), "
            f"vLLM {result['vllm_s_per_step']:.2f} s/step (generation {gen['vllm']:.2f} s; sync in the update): "
            f"vLLM / native {result['vllm_over_native']:.2f}x (median of {len(ratios)} paired steps, range "
            f"{ratios[0]:.2f}-{ratios[-1]:.2f}x; {faster})"
        )
    elif vllm_refused:
        result["vllm_refused"] = vllm_refused
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
