"""Re-align a model's MTP module (its speculative draft head) with the model as it is now.

    from nanoseek.train.mtp_align import align_mtp
    stats = align_mtp("runs/speedrun/grpo/model", ["Sort 3, 1, 2, 9.", ...], steps=60)
    stats["acceptance_before"], stats["acceptance_after"]       # greedy drafts on held-back prompts

DeepSeek-V3 drops the MTP module after pretraining; nanoseek keeps it, because the engine drafts with
it (`nanoseek.engine.speculative`). SFT trains it with the main model (the MTP loss, lambda x MTP), but
GRPO changes the main model without it: the module reads the main model's hidden state, so its drafts
drift from what the model now says. This is the fix, a short self-distillation: the model answers the
prompts greedily (the native engine), and only the MTP module is trained, with the MTP loss on those
answers (the main model, embeddings and output head frozen, so the model's own outputs do not change
at all). The last eighth of the prompts is held back to measure the drafts' greedy acceptance before
and after; the weights are written back only if the acceptance did not drop.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import torch

from nanoseek.engine import Engine, GenerationRequest, SamplingParams
from nanoseek.model import from_pretrained
from nanoseek.model.run_dirs import resolve_model_dir
from nanoseek.tokenizer import Tokenizer

IGNORE = -100


def greedy_answers(
    engine: Engine, tok: Tokenizer, prompts: list[str], max_new_tokens: int
) -> list[list[int]]:
    """prompt ids + the model's greedy answer ids, one list per prompt; also counts draft acceptance
    in `engine.stats` when the engine speculates."""
    requests = [
        GenerationRequest(
            messages=[{"role": "user", "content": p}],
            params=SamplingParams(temperature=0, max_new_tokens=max_new_tokens),
        )
        for p in prompts
    ]
    outs = engine.generate(requests)
    return [tok.render_prompt([{"role": "user", "content": p}]) + c.token_ids for p, c in zip(prompts, outs)]


def acceptance(engine: Engine, tok: Tokenizer, prompts: list[str], max_new_tokens: int) -> float:
    engine.stats.drafted = engine.stats.accepted = 0
    greedy_answers(engine, tok, prompts, max_new_tokens)
    return engine.stats.acceptance


def batch_of(seqs: list[list[int]], prompt_lens: list[int], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) and next-token targets (B, T): only answer tokens are targets."""
    T = max(len(s) for s in seqs)
    x = torch.full((len(seqs), T), pad, dtype=torch.long)
    y = torch.full((len(seqs), T), IGNORE, dtype=torch.long)
    for i, (s, p) in enumerate(zip(seqs, prompt_lens)):
        x[i, : len(s)] = torch.tensor(s)
        y[i, p - 1 : len(s) - 1] = torch.tensor(s[p:])
    return x, y


def align_mtp(
    model_dir: str | Path,
    prompts: list[str],
    steps: int = 60,
    batch_size: int = 16,
    lr: float = 1e-3,
    max_new_tokens: int = 128,
    seed: int = 0,
    concurrency: int = 64,
) -> dict[str, Any]:
    """Train only the MTP module of the model in `model_dir` on its own greedy answers to `prompts`
    (all but the last eighth, held back for the acceptance figures); save it back if the held-back
    acceptance did not drop. Returns the figures."""
    t0 = time.perf_counter()
    path = resolve_model_dir(model_dir)
    model = from_pretrained(path, dtype=torch.float32)
    if not getattr(model.config, "num_nextn_predict_layers", 0):
        raise ValueError(f"{path}: the model has no MTP module to align")
    tok = Tokenizer.from_dir(path)
    held = max(1, len(prompts) // 8)
    train_prompts, check_prompts = prompts[:-held], prompts[-held:]
    budget = max(512, 4 * concurrency)  # no prefix cache: a plain pass leaves no MTP rows in its blocks
    engine = Engine(
        model, tok, max_slots=concurrency, token_budget=budget, speculative=True, prefix_cache_mb=0
    )
    engine.speculative = False
    seqs = greedy_answers(engine, tok, train_prompts, max_new_tokens)
    engine.speculative = True
    before = acceptance(engine, tok, check_prompts, max_new_tokens)
    prompt_lens = [len(tok.render_prompt([{"role": "user", "content": p}])) for p in train_prompts]

    mtp_params = list(model.mtp.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in mtp_params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(mtp_params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = random.Random(seed)
    order: list[int] = []
    losses = []
    model.train()
    for _ in range(steps):
        if len(order) < batch_size:
            order += rng.sample(range(len(seqs)), len(seqs))
        rows, order = order[:batch_size], order[batch_size:]
        x, y = batch_of([seqs[i] for i in rows], [prompt_lens[i] for i in rows], tok.pad_id)
        with torch.no_grad():
            h, _ = model.hidden_states(x)
        loss = model.mtp_loss(h, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    engine.sync_weights(model)
    after = acceptance(engine, tok, check_prompts, max_new_tokens)
    engine.close()
    saved = after >= before
    if saved:
        model.save_pretrained(path)
    return {
        "model_dir": str(path),
        "answers": len(seqs),
        "held_back": len(check_prompts),
        "steps": steps,
        "mtp_loss_first": losses[0] if losses else None,
        "mtp_loss_last": losses[-1] if losses else None,
        "acceptance_before": before,
        "acceptance_after": after,
        "saved": saved,
        "seconds": time.perf_counter() - t0,
    }
