"""The micro R1-Zero experiment: pretrain a tiny base model, then GRPO beside a random-reward control.

    python -m nanoseek.rl.micro --out runs/r1zero                 # ~15 minutes on 2 CPU cores
    python -m nanoseek.rl.micro --out runs/r1zero --figures docs/img   # also the docs' figures

Four stages, each skipped when its output already exists (so an interrupted run continues):
1. corpus, from every problem of the task's TRAIN split (2-digit additions):
   - an R1-Zero transcript, r1_zero_prompt(question) <think> reasoning </think> <answer> sum </answer>,
     whose reasoning is the column work ("77 + 94: ones 7+4+0=11 gives 1, tens 7+9+1=17 gives 171") or, with probability
     `shortcut_share`, a guess at the sum in one go ("77 + 94 = 171");
   - `worked` textbook-style worked solutions: the question, the column work, the answer.
   Base models see both habits in pretraining data; this one takes the shortcut (the majority of its
   transcripts) and, at its size, is usually wrong when it does;
2. tokenizer (`train_digit_tokenizer`: BPE on the corpus, digits split one per token) and pretraining
   (the packaged `recipes/r1_zero_micro_pretrain.toml`, the ordinary `nanoseek pretrain` loop);
3. GRPO (`recipes/r1_zero_micro.toml`) and the same run with Bernoulli(0.5) rewards
   (`--random-rewards`), side by side as two single-threaded processes (`nanoseek.train.parallel`);
4. figures: held-out pass@1 and response length per step for both runs, and summary.json.
What GRPO has to find is the R1-Zero story in miniature: reasoning step by step (longer responses)
earns more reward than answering at once, so held-out accuracy and response length rise together,
while the control, whose rewards say nothing, stays where it started.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from nanoseek.data import write_jsonl
from nanoseek.model import DeepSeekV3, config_for_depth
from nanoseek.model.run_dirs import checkpoint_step, latest_checkpoint
from nanoseek.rl.config import load_grpo_config
from nanoseek.rl.report import plot_comparison
from nanoseek.tasks import Problem, parse_task_spec
from nanoseek.tasks.arithmetic import ArithmeticTask
from nanoseek.tokenizer import Tokenizer, r1_zero_prompt, train_digit_tokenizer
from nanoseek.train import load_config, train
from nanoseek.train.config import packaged_recipe
from nanoseek.train.parallel import Job, run_parallel
from nanoseek.train.report import read_metrics

PLACES = ["ones", "tens", "hundreds", "thousands", "ten-thousands"]


def column_reasoning(a: int, b: int) -> str:
    """Column addition written compactly, one clause per column with its carry in, and the digits of
    the sum so far after each: "77 + 94: ones 7+4+0=11 gives 1, tens 7+9+1=17 gives 171". Digits without
    spaces are one token each, every clause has the same shape, the question is restated exactly as
    asked, and each step only copies nearby tokens (the column's digits, the last total, the previous
    partial sum), so a 2-layer model learns
    it in a few minutes of CPU; the answer is then a copy of the last partial sum."""
    xs, ys = str(a)[::-1], str(b)[::-1]
    clauses, carry, written = [], 0, ""
    n = max(len(xs), len(ys))
    for i in range(n):
        x = int(xs[i]) if i < len(xs) else 0
        y = int(ys[i]) if i < len(ys) else 0
        total = x + y + carry
        written = (str(total) if i == n - 1 else str(total % 10)) + written
        clauses.append(f"{PLACES[i]} {x}+{y}+{carry}={total} gives {written}")
        carry = total // 10
    return f"{a} + {b}: " + ", ".join(clauses)


def r1_zero_document(problem: Problem, shortcut: bool) -> str:
    """An R1-Zero transcript: the prompt, the reasoning in <think> tags and the answer in <answer> tags.
    The reasoning is the column work, or with `shortcut` just the sum guessed at once ("77 + 94 = 171")."""
    a, b = problem.meta["a"], problem.meta["b"]
    reasoning = f"{a} + {b} = {problem.reference}" if shortcut else column_reasoning(a, b)
    return f"{r1_zero_prompt(problem.prompt)} <think> {reasoning} </think> <answer> {problem.reference} </answer>"


def worked_solution(problem: Problem) -> str:
    """A textbook-style worked solution: the question, the column work, the answer."""
    a, b = problem.meta["a"], problem.meta["b"]
    return f"Question: {problem.prompt}\n{column_reasoning(a, b)}, answer {problem.reference}"


def write_corpus(
    task_spec: str, path: Path, shortcut_share: float = 0.8, worked: int = 2, seed: int = 0
) -> dict[str, int]:
    """The pretraining corpus from the task's TRAIN split, shuffled: per problem one R1-Zero transcript
    (a shortcut with probability `shortcut_share`) and `worked` worked solutions. Returns the counts."""
    task = parse_task_spec(task_spec).build()
    if not isinstance(task, ArithmeticTask) or task.ops != "+":
        raise ValueError(
            f"{task_spec}: the micro experiment's corpus is written for addition ('arithmetic?ops=+')"
        )
    rng = random.Random(seed)
    problems = task.problems("train", 10**9)  # the whole split (generation stops when it runs out)
    transcripts = [r1_zero_document(p, rng.random() < shortcut_share) for p in problems]
    docs = transcripts + [worked_solution(p) for p in problems for _ in range(worked)]
    rng.shuffle(docs)
    write_jsonl(path, [{"text": d} for d in docs])
    shortcuts = sum(": ones" not in t for t in transcripts)
    return {"transcripts": len(transcripts), "shortcuts": shortcuts, "worked": len(docs) - len(transcripts)}


def initial_model(tokenizer: Tokenizer, out_dir: Path, seed: int = 0) -> Path:
    """The untrained base model: the depth-2 rung (hidden 128, MLA, 8 routed experts + 1 shared, first
    layer dense) with 4 attention heads of 32 instead of 2 of 64 (copying digits from the question to
    the right column is what a 2-layer model has to learn first, and more heads learn it sooner), no
    MTP. Saved with the tokenizer as the `model.init` of the pretraining run."""
    cfg = config_for_depth(2, vocab_size=tokenizer.vocab_size, mtp=0)
    heads, C = 4, cfg.hidden_size
    cfg = cfg.replace(num_attention_heads=heads, qk_nope_head_dim=C // heads, v_head_dim=C // heads)
    cfg = cfg.replace(qk_rope_head_dim=C // heads // 2)
    torch.manual_seed(seed)
    DeepSeekV3(cfg).save_pretrained(out_dir)
    tokenizer.save(out_dir)
    return out_dir


def pretrain(out: Path, corpus: Path, steps: int | None, threads: int, seed: int) -> Path:
    """Stage 2: tokenizer, initial model and `nanoseek pretrain` with the micro recipe; returns the run dir."""
    run = out / "base"
    recipe = packaged_recipe("r1_zero_micro_pretrain.toml")
    init = out / "init"
    if not (init / "model.safetensors").is_file():
        tokenizer = train_digit_tokenizer(corpus, 512, out / "tokenizer")
        initial_model(tokenizer, init, seed)
    overrides = [f"run.out={run}", f'data.train=["{corpus}"]', f"model.init={init}"]
    if steps:
        overrides.append(f"train.max_steps={steps}")
    cfg = load_config(recipe, overrides)
    done = latest_checkpoint(run)
    if done is not None and checkpoint_step(done) >= cfg.train.max_steps:
        return run
    if threads:
        torch.set_num_threads(threads)
    train(cfg, resume=done is not None, command=f"nanoseek pretrain {recipe} " + " ".join(overrides))
    return run


def grpo_runs(out: Path, base: Path, overrides: list[str]) -> dict[str, Path]:
    """GRPO and its random-reward control as two processes, one thread each; progress from their metrics."""
    recipe = packaged_recipe("r1_zero_micro.toml")
    cfg = load_grpo_config(recipe, overrides)
    runs = {"GRPO": out / "grpo", "random-reward control": out / "control"}
    command = [sys.executable, "-m", "nanoseek.rl.cli", str(recipe), "--init", str(base)]
    jobs = [
        Job(label, [*command, "--out", str(run), "run.progress=false", "run.threads=1", *overrides]
            + ([] if label == "GRPO" else ["--random-rewards"]), run)
        for label, run in runs.items()
    ]  # fmt: skip
    run_parallel(jobs, cfg.train.max_steps)
    return runs


def summarize(runs: dict[str, Path], figures: Path, seconds: float) -> dict:
    records = {label: read_metrics(run / "metrics.jsonl") for label, run in runs.items()}
    plots = plot_comparison(records, figures, prefix="r1_zero_micro")
    summary: dict = {"seconds": seconds, "figures": [str(p) for p in plots]}
    for label, rows in records.items():
        evals = [r for r in rows if r.get("type") == "eval"]
        summary[label] = {
            "pass@1": [(r["step"], r["pass@1"]) for r in evals],
            "response_length": [(r["step"], r["response_length"]) for r in evals],
            "start_pass@1": evals[0]["pass@1"],
            "final_pass@1": evals[-1]["pass@1"],
            "change_points": 100 * (evals[-1]["pass@1"] - evals[0]["pass@1"]),
            "problems": evals[0]["problems"],
        }
    return summary


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m nanoseek.rl.micro", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/r1zero", help="experiment directory")
    p.add_argument("--figures", default=None, help="where the comparison figures go (default: --out)")
    p.add_argument("--pretrain-steps", type=int, default=None, help="override the pretraining recipe's steps")
    p.add_argument("--threads", type=int, default=2, help="torch threads for pretraining")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides for both GRPO runs")
    args = p.parse_args(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    grpo_cfg = load_grpo_config(packaged_recipe("r1_zero_micro.toml"), args.overrides)
    corpus = out / "corpus" / "r1_zero.jsonl"
    if not corpus.is_file():
        n = write_corpus(grpo_cfg.task.name, corpus, seed=grpo_cfg.run.seed)
        print(
            f"corpus: {n['transcripts']:,} R1-Zero transcripts ({n['shortcuts']:,} shortcuts) and {n['worked']:,} "
            f"worked solutions from the train split of {grpo_cfg.task.name!r} -> {corpus}"
        )
    base = pretrain(out, corpus, args.pretrain_steps, args.threads, grpo_cfg.run.seed)
    runs = grpo_runs(out, base, args.overrides)
    summary = summarize(runs, Path(args.figures) if args.figures else out, time.perf_counter() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for label in runs:
        s = summary[label]
        print(
            f"{label:>22}: held-out pass@1 {100 * s['start_pass@1']:.1f}% -> {100 * s['final_pass@1']:.1f}% "
            f"({s['change_points']:+.1f} points, {s['problems']} problems)"
        )
    print(f"total {summary['seconds'] / 60:.1f} min; figures: {', '.join(summary['figures'])}")
    return summary


if __name__ == "__main__":
    main()
