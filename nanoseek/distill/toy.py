"""A toy teacher for CPU demos and tests: a small MoE DeepSeekV3 SFT'd on a synthetic task's solution traces.

    model_dir = build_toy_teacher("runs/toy-teacher", "sort?length=3&max_value=9", depth=2, steps=300)
    nanoseek distill --toy-teacher --task "sort?length=3&max_value=9" --out runs/distill   # the same, inline

Steps (each skipped when its output already exists, so a rerun reuses the teacher):
1. chat data: `n_train` train-split problems as conversations whose assistant turn holds the task's
   step-by-step solution trace as `reasoning_content` and its last line (`The answer is \\boxed{..}.`)
   as `content`, exactly R1's format;
2. a byte-level BPE tokenizer (`vocab_size`) trained on those prompts and traces;
3. a freshly initialized MoE model (`config_for_depth(depth)`, no MTP) saved as the SFT starting point;
4. `nanoseek.train` SFT on the conversations.
This stands in for "a big reasoning model" in the distillation story at a size a laptop trains in a
minute or two; any checkpoint or API endpoint can be the teacher instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from nanoseek.data import write_jsonl
from nanoseek.distill.pipeline import sft_run
from nanoseek.model import DeepSeekV3, config_for_depth
from nanoseek.model.run_dirs import latest_checkpoint, resolve_model_dir
from nanoseek.tasks import SyntheticTask, parse_task_spec
from nanoseek.tokenizer import Tokenizer, train_tokenizer
from nanoseek.train import load_config, train

log = logging.getLogger(__name__)

# The default toy: sorting three digits, a task a ~0.4M-active-parameter MoE learns in a few hundred steps
# (short prompts: the answer instruction is left out, the chat format already asks for <think>).
TOY_TASK = "sort?length=3&max_value=9&instruction="

# SFT settings that teach the toy tasks quickly on a CPU; overrides (section.key=value) change them.
TOY_SFT = [
    "run.device=cpu",
    "train.device_batch_size=16",
    "train.warmup_steps=10",
    "train.lr=5e-3",
    "train.min_lr_ratio=0.05",
    "train.weight_decay=0",
    "eval.every=0",
    "eval.batches=2",
    "eval.num_samples=1",
    "data.val_fraction=0.01",
]


def trace_conversations(task_spec: str, n: int, split: str = "train") -> list[dict]:
    """Chat records of `n` problems with their solution traces (reasoning) and answer lines (content)."""
    task = parse_task_spec(task_spec).build()
    if not isinstance(task, SyntheticTask):
        raise ValueError(f"task {task_spec!r} has no solution traces (only synthetic tasks do)")
    return [task.chat_record(p) for p in task.problems(split, n)]


def longest_conversation(tokenizer: Tokenizer, records: list[dict]) -> int:
    return max(len(tokenizer.render(r["messages"])[0]) for r in records)


def build_toy_teacher(
    out_dir: str | Path,
    task_spec: str = TOY_TASK,
    depth: int = 2,
    steps: int = 400,
    n_train: int = 4000,
    vocab_size: int = 400,
    seed: int = 0,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = False,
) -> Path:
    """Build (or reuse) a toy MoE teacher in `out_dir`; returns its model directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sft_dir = out / "sft"
    done = latest_checkpoint(sft_dir)
    if done is not None and json.loads((done / "trainer.json").read_text()).get("step") == steps:
        return resolve_model_dir(sft_dir)
    data = out / "chat.jsonl"
    records = trace_conversations(task_spec, n_train)
    if not data.is_file():
        write_jsonl(data, records)
    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        corpus = out / "corpus.txt"
        messages = (m for r in records[:2000] for m in r["messages"])
        corpus.write_text("\n".join(m["content"] + "\n" + m.get("reasoning_content", "") for m in messages))
        train_tokenizer([corpus], vocab_size, tok_dir, show_progress=False)
    tokenizer = Tokenizer.from_dir(tok_dir)
    seq_len = longest_conversation(tokenizer, records) + 8
    init = out / "init"
    if not (init / "config.json").is_file():
        cfg = config_for_depth(depth, vocab_size=tokenizer.vocab_size, mtp=0)
        cfg = cfg.replace(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id)
        cfg = cfg.replace(max_position_embeddings=max(256, 2 * seq_len))
        torch.manual_seed(seed)
        DeepSeekV3(cfg).save_pretrained(init)
        tokenizer.save(init)
    run = sft_run(data, init, sft_dir, seed, progress)
    cfg = load_config(
        None, [*TOY_SFT, *run, f"train.seq_len={seq_len}", f"train.max_steps={steps}", *overrides]
    )
    log.info("training a toy teacher (depth %d, %d steps) on %s", depth, steps, task_spec)
    summary = train(cfg, resume=done is not None, command=f"build_toy_teacher({task_spec!r})")
    return Path(summary["model_dir"])
