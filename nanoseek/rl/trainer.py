"""The GRPO trainer: Group Relative Policy Optimization (DeepSeekMath, DeepSeek-R1) with the common variants.

    from nanoseek.rl import GRPOTrainer, load_grpo_config
    summary = GRPOTrainer(load_grpo_config("recipes/grpo_r1_zero.toml", ["run.out=runs/x", ...])).run()
    # or: nanoseek grpo recipes/grpo_r1_zero.toml --init runs/base --out runs/x   (nanoseek.rl.cli)

One GRPO step (shapes: P prompts, G samples each, N = P x G sequences, L completion tokens):
1. rollouts (`rollout`): the rollout Generator (the native engine, or vLLM with rollout.backend="vllm",
   `nanoseek.engine.vllm`) samples G completions per prompt
   from the policy (the prompt is prefilled once and its cache forked G times); the task scores them
   into rewards r (N,); dynamic sampling drops and refills groups whose rewards are all equal;
2. advantages A (N,) = (r - mean_group) / std_group, or r - mean_group (Dr. GRPO);
3. mu policy updates on this batch: each a pass over micro-batches of sequences that computes
   logp (b, L) of the sampled tokens under the policy (one forward of prompt + completion; the output
   head only at completion positions), `policy_loss` (clipped ratio with eps_low / eps_high, k3 KL to
   the frozen reference weighted by beta, aggregated as GRPO / DAPO / Dr. GRPO), backward with the
   micro-batch's share of the aggregation's denominator, then one AdamW step. The old policy's logp
   are the first pass's, detached (exact: no update happens inside a pass). Sequences with A = 0 and
   beta = 0 contribute exactly zero to the loss, so they are not forwarded at all (they still count in
   the denominators): the gradient equals `policy_loss` over the whole batch at once (tested);
4. auxiliary-loss-free router balancing (MoE), then `generator.sync_weights(model)`: the one call that
   hands the updated policy to the rollout Generator (free for the native engine, which shares the
   model and rebuilds its decode weights; a weight load for an engine in another process), so the
   rollouts of step k+1 see update k; also once before the first rollout. With LoRA (lora.rank > 0,
   `nanoseek.train.lora`) only the adapters train, and the generator is handed a plain model of the
   family holding the merged weights W + (alpha / r) B A (refreshed in place, sharing every frozen
   tensor with the policy), so any Generator samples exactly the adapted policy;
5. metrics, held-out pass@1 every eval.every steps, checkpoints every checkpoint.every steps.
With beta = 0 no reference model is loaded. The run directory gets config.toml, metrics.jsonl,
checkpoints/ (HF model + optimizer + trainer state, atomic, resumable), plots and report.md.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from nanoseek.engine import Engine, Generator
from nanoseek.engine.engine import model_tokenizer
from nanoseek.model import from_pretrained
from nanoseek.model.accounting import account_of
from nanoseek.model.run_dirs import checkpoint_dir, latest_checkpoint, resolve_model_dir
from nanoseek.rl.config import GRPOConfig
from nanoseek.rl.loss import group_advantages, policy_loss
from nanoseek.rl.report import plot_grpo, write_grpo_report
from nanoseek.rl.rollout import RolloutBatch, RolloutSampler, evaluate, prompt_ids
from nanoseek.tasks import parse_task_spec, train_eval_overlap
from nanoseek.train import checkpointing as ckpt_io
from nanoseek.train.config import ConfigError, to_dict, to_toml
from nanoseek.train.cost import CostMeter, human
from nanoseek.train.distributed import setup
from nanoseek.train.lora import add_lora, lora_layers, merge_into, merged_model
from nanoseek.train.optim import build_optimizer, lr_multiplier, optimizer_step
from nanoseek.train.report import MetricsLog, read_metrics, truncate_metrics

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- log-probabilities


def completion_logprobs(
    model: nn.Module, prompts: list[list[int]], completions: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logp (B, L) of each completion token given its prompt and the tokens before it, the policy's
    entropy (B, L) at those positions (no gradient), and the mask (B, L) of real completion tokens.

    The G samples of a group share their prompt, so the prompt is forwarded once (prefix sharing, as
    the engine does when it samples): U distinct prompts, right-padded to P, run through the model
    writing their latents into a cache; each row's cache is then its prompt's latents (a gather, so
    gradients flow back into the shared prompt) followed by its own completion, right-padded to L, at
    positions p_i .. p_i + L - 1. Completion token j is predicted from the hidden state at p_i + j - 1:
    the prompt's last state for j = 0, the completion's state j - 1 after that, and the output head
    runs on those (B, L) states only. Exact: the same attention as one forward of prompt + completion."""
    device = model.device
    distinct: dict[tuple[int, ...], int] = {}
    owner = torch.tensor([distinct.setdefault(tuple(p), len(distinct)) for p in prompts])  # (B,)
    B, U = len(prompts), len(distinct)
    p_len = torch.tensor([len(p) for p in prompts])
    c_len = torch.tensor([len(c) for c in completions])
    P, L = int(p_len.max()), int(c_len.max())
    prompt_ids = torch.full((U, P), pad_id, dtype=torch.long)
    for p, u in distinct.items():
        prompt_ids[u, : len(p)] = torch.tensor(p)
    completion_ids = torch.full((B, L), pad_id, dtype=torch.long)
    for i, c in enumerate(completions):
        completion_ids[i, : len(c)] = torch.tensor(c)
    prompt_ids, completion_ids, owner = prompt_ids.to(device), completion_ids.to(device), owner.to(device)

    # 1. the distinct prompts, once each: (U, P, C), their latents in cache slots 0 .. U-1
    prefix = model.new_cache(U, P)
    positions = torch.arange(P, device=device).expand(U, P)
    h_prompt, _ = model.hidden_states(prompt_ids, positions, prefix, torch.arange(U, device=device))
    # 2. fork: row i's cache starts as its prompt's (U -> B rows), with room for its completion
    rows = model.new_cache(B, P + L)
    for row_kv, prompt_kv in zip(rows.kv, prefix.kv):  # per layer (slots, len, width), any cache kind
        row_kv[:, :P] = prompt_kv[owner]  # a differentiable copy: gradients reach the shared prompt
    positions = p_len.to(device)[:, None] + torch.arange(L, device=device)[None, :]  # (B, L)
    h_completion, _ = model.hidden_states(completion_ids, positions, rows, torch.arange(B, device=device))
    # 3. the states that predict completion tokens 0 .. L-1
    last = h_prompt[owner, p_len.to(device) - 1]  # (B, C)
    h = torch.cat([last[:, None], h_completion[:, : L - 1]], dim=1)  # (B, L, C)
    logp_all = model.lm_head(model.norm(h)).float().log_softmax(-1)  # (B, L, V)
    logp = logp_all.gather(-1, completion_ids[..., None]).squeeze(-1)  # (B, L)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)  # (B, L)
    mask = (torch.arange(L)[None, :] < c_len[:, None]).to(device)
    return logp, entropy, mask


# ----------------------------------------------------------------------------------- the trainer


@dataclass
class UpdatePlan:
    adv: torch.Tensor  # (N,) advantages
    keep: torch.Tensor  # (N,) bool: in the loss (False: filtered as overlong)
    active: list[int]  # rows forwarded (can carry gradient)
    chunks: list[list[int]]  # active rows by micro-batch
    N: int  # sequences in the batch (GRPO / Dr. GRPO denominators)
    total_tokens: int  # real tokens of kept rows (the DAPO denominator)


class GRPOTrainer:
    def __init__(
        self,
        cfg: GRPOConfig,
        resume: bool = False,
        command: str | None = None,
        generator: Generator | None = None,
    ):
        """`generator`: the rollout Generator (default: a native Engine sharing the policy model); any
        Generator that returns token ids with logprobs and implements `sync_weights` can roll out."""
        if not cfg.run.out:
            raise ConfigError("run.out: no run directory; pass --out DIR")
        self.cfg = cfg
        self.command = command or " ".join(shlex.quote(a) for a in ["nanoseek", "grpo", *sys.argv[1:]])
        self.run_dir = Path(cfg.run.out)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        found = ckpt_io.resumable(self.run_dir, resume)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.env = setup(cfg.run.device)
        if self.env.distributed:
            raise ConfigError(
                "nanoseek grpo runs in one process (torchrun data parallelism is not supported yet)"
            )
        (self.run_dir / "config.toml").write_text(to_toml(cfg))
        torch.manual_seed(cfg.run.seed)
        self.load_problems()  # before the model: a bad task spec or file fails fast

        if not cfg.model.init:
            raise ConfigError(
                "model.init: GRPO starts from a model; pass --init (a model, checkpoint or run dir)"
            )
        init_dir = resolve_model_dir(cfg.model.init)
        self.tokenizer = model_tokenizer(init_dir)  # a GGUF brings its own
        device = self.env.device
        self.model = from_pretrained(init_dir, device=device).eval()  # its family's class; train() in updates
        self.model = add_lora(self.model, cfg.lora)  # lora.rank > 0: the adapters alone train
        # what the generator samples: the policy itself, or (LoRA) a plain model of its merged weights
        self.rollout_model = merged_model(self.model) if lora_layers(self.model) else self.model
        self.checkpoint = ckpt_io.load_checkpoint(found, self.env) if found is not None else None
        if self.checkpoint is not None:
            self.model.load_state_dict(self.checkpoint.model_state(self.model))
        self.ref_model: nn.Module | None = None
        if cfg.grpo.beta > 0:  # the frozen reference: the starting policy (never the resumed one)
            ref_dir = resolve_model_dir(cfg.model.reference or cfg.model.init)
            self.ref_model = from_pretrained(ref_dir, device=device).eval().requires_grad_(False)
        self.optimizer = build_optimizer(self.model, cfg.train, device.type)

        r = cfg.rollout
        self.eval_tokens = cfg.eval.max_new_tokens or r.max_new_tokens
        slots = max(r.max_slots or r.prompts_per_step * r.group_size, r.group_size)
        longest = max(
            len(prompt_ids(self.tokenizer, p, r.template)) for p in self.train_problems + self.eval_problems
        )
        max_len = longest + max(r.max_new_tokens, self.eval_tokens) + 1
        if max_len > self.model.config.max_position_embeddings:
            raise ConfigError(
                f"rollout.max_new_tokens: the longest prompt ({longest} tokens) plus the completion budget exceed "
                f"the model's {self.model.config.max_position_embeddings} positions"
            )
        if generator is None and r.backend == "vllm":  # vLLM on the init weights; synced before rollouts
            from nanoseek.engine.vllm import VLLMGenerator

            generator = VLLMGenerator(init_dir, self.tokenizer, max_len=max_len, seed=cfg.run.seed)
        self.generator = generator or Engine(  # rolls out; sees new weights at each sync_weights
            self.rollout_model,
            self.tokenizer,
            max_slots=slots,
            max_len=max_len,
            token_budget=max(4096, 2 * slots + 2 * longest),
        )
        self.sampler = RolloutSampler(cfg, self.generator, self.tokenizer, self.task, self.train_problems)
        self.meter = CostMeter.for_device(device, 1, cfg.cost.price_per_device_hour, cfg.cost.peak_flops)
        self.acct = account_of(self.model, 256)

        self.step, self.cursor = 0, 0
        self.last_eval: dict = {}
        self.first_eval: dict = {}
        if self.checkpoint is not None:
            c = self.checkpoint
            c.restore(self.model, self.optimizer, self.meter, self.env)
            self.step, self.cursor = c.step, int(c.trainer["cursor"])
            self.last_eval, self.first_eval = c.trainer.get("last_eval", {}), c.trainer.get("first_eval", {})
        truncate_metrics(self.run_dir / "metrics.jsonl", self.step if self.checkpoint else -1)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl")

    def load_problems(self) -> None:
        """The task, its training prompts and its held-out problems; refuses to evaluate on problems it
        trains on (the same source, or identical prompts) unless task.allow_train_on_eval."""
        t = self.cfg.task
        self.task = parse_task_spec(t.name).build()
        self.train_problems = self.task.problems(t.train_split, t.train_problems or None)
        self.eval_problems = self.task.problems(t.eval_split, self.cfg.eval.problems)
        if not self.train_problems or not self.eval_problems:
            empty = t.train_split if not self.train_problems else t.eval_split
            raise ConfigError(f"task.name: {t.name!r} has no problems in its {empty!r} split")
        self.overlap = train_eval_overlap(
            self.task, t.train_split, t.eval_split, self.train_problems, self.eval_problems
        )
        if self.overlap and not t.allow_train_on_eval:
            name = t.name.partition("?")[0].partition(":")[0]
            raise ConfigError(
                f"task.allow_train_on_eval: task {t.name!r} would train on its evaluation problems: "
                f"{self.overlap.describe()}. Held-out pass@1 must measure problems the policy never trained "
                f"on: give separate files ('{name}?train=TRAIN.jsonl&test=TEST.jsonl') or hold out a fraction "
                f"('{name}:FILE.jsonl?holdout=0.1&seed=0'); to train on them anyway, say so: "
                "task.allow_train_on_eval=true (--allow-train-on-eval)"
            )
        log.info(
            "task %r: %d training prompts from %s; %d held-out problems from %s",
            t.name, len(self.train_problems), self.overlap.train_source,
            len(self.eval_problems), self.overlap.eval_source,
        )  # fmt: skip
        if self.overlap:
            log.warning(
                "task %r: training on evaluation problems (allowed): %s", t.name, self.overlap.describe()
            )

    # ------------------------------------------------------------------------------ one step

    def say(self, text: str) -> None:
        tqdm.write(text, file=sys.stderr)

    def train_step(self) -> dict:
        cfg, g = self.cfg, self.cfg.grpo
        t0 = time.perf_counter()
        batch, stats, self.cursor = self.sampler.collect(self.cursor)
        t_gen = time.perf_counter()
        update = self.update(batch) if len(batch) else {"skipped": True}
        lr = cfg.train.lr * lr_multiplier(self.step, cfg.train)
        dt = time.perf_counter() - t0
        trained = update.pop("trained_tokens", 0)
        flops = self.acct.forward_flops_per_token * (stats["prompt_tokens"] + stats["generated_tokens"])
        flops += self.acct.train_flops_per_token * trained * g.mu
        if self.ref_model is not None:
            flops += self.acct.forward_flops_per_token * trained
        self.meter.add(stats["generated_tokens"], flops, dt)
        self.step += 1
        return {
            "type": "train",
            "step": self.step,
            **stats,
            **update,
            "lr": lr,
            "train_seconds": time.perf_counter() - t_gen,
            "dt": dt,
            "tokens": self.meter.tokens,
            "elapsed": self.meter.elapsed(),
        }

    def plan(self, batch: RolloutBatch) -> UpdatePlan:
        """Advantages, the overlong filter, and which rows are forwarded in which micro-batch."""
        g = self.cfg.grpo
        N = len(batch)
        adv = group_advantages(torch.tensor(batch.rewards), batch.group_size, g.advantage)  # (N,)
        keep = torch.tensor(
            [not (self.cfg.reward.overlong == "filter" and t) for t in batch.truncated]
        )  # (N,)
        lengths = torch.tensor([len(c) for c in batch.completions])  # (N,)
        # rows that can carry gradient; the others add exactly 0 to the loss's numerator
        active = [i for i in range(N) if keep[i] and lengths[i] > 0 and (g.beta > 0 or adv[i] != 0)]
        chunks = [active[i : i + g.micro_batch] for i in range(0, len(active), g.micro_batch)]
        return UpdatePlan(adv, keep, active, chunks, N, max(int((lengths * keep).sum()), 1))

    def update(self, batch: RolloutBatch) -> dict:
        """mu optimizer steps on one batch of groups; returns the loss statistics (of the last pass)."""
        cfg, model = self.cfg, self.model
        plan = self.plan(batch)
        old: dict[int, torch.Tensor] = {}
        ref: dict[int, torch.Tensor] = {}
        stats: dict = {}
        for it in range(cfg.grpo.mu):
            stats = self.policy_gradient(batch, plan, old, ref)
            if it == 0:
                mismatch = stats["logp_mismatch"]
            lr = cfg.train.lr * lr_multiplier(self.step, cfg.train)
            stats["grad_norm"] = optimizer_step(model, self.optimizer, lr, cfg.train.grad_clip)
            if hasattr(model, "update_router_biases"):  # auxiliary-loss-free balancing (MoE families)
                model.update_router_biases(cfg.grpo.router_bias_speed)
        model.eval()  # sampling and evaluation next: no mode switch on every decode step
        self.sync_rollouts()  # rollouts and evaluations from now on see this update
        stats["logp_mismatch"] = mismatch
        stats["active_sequences"] = len(plan.active)
        stats["advantage_abs"] = float(plan.adv.abs().mean())
        stats["trained_tokens"] = sum(
            len(batch.prompt_of(i)) + len(batch.completions[i]) for i in plan.active
        )
        return stats

    def policy_gradient(
        self,
        batch: RolloutBatch,
        plan: UpdatePlan,
        old: dict[int, torch.Tensor],
        ref: dict[int, torch.Tensor],
    ) -> dict:
        """One pass over the micro-batches: accumulate the gradient of `policy_loss` over the whole batch
        into .grad. `old` / `ref` (micro-batch -> logp) are filled on the first pass and reused after.
        Each micro-batch's loss is weighted by its share of the aggregation's denominator: its
        sequences / N (GRPO, Dr. GRPO) or its tokens / all tokens (DAPO)."""
        g, model, pad = self.cfg.grpo, self.model, self.tokenizer.pad_id
        first = not old
        sums = dict.fromkeys(("loss", "kl", "clip_fraction", "ratio_mean", "entropy", "logp_mismatch"), 0.0)
        tokens = 0
        model.train()
        for k, rows in enumerate(plan.chunks):
            prompts = [batch.prompt_of(i) for i in rows]
            completions = [batch.completions[i] for i in rows]
            logp, entropy, mask = completion_logprobs(model, prompts, completions, pad)  # (b, L) each
            mask = mask & plan.keep[rows].to(mask.device)[:, None]
            if first:  # the policy that sampled: no update has happened yet in this pass
                old[k] = logp.detach()
                if self.ref_model is not None:
                    with torch.no_grad():
                        ref[k] = completion_logprobs(self.ref_model, prompts, completions, pad)[0]
                sums["logp_mismatch"] += self.mismatch(batch, rows, logp.detach(), mask)
            out = policy_loss(
                logp,
                old[k],
                plan.adv[rows].to(logp.device),
                mask,
                eps_low=g.eps_low,
                eps_high=g.eps_high,
                beta=g.beta,
                ref_logp=ref.get(k),
                aggregation=g.aggregation,
                max_len=self.cfg.rollout.max_new_tokens,
            )
            n = int(mask.sum())
            share = n / plan.total_tokens if g.aggregation == "dapo" else len(rows) / plan.N
            (out.loss * share).backward()
            tokens += n
            sums["loss"] += out.loss.item() * share
            sums["kl"] += out.kl * n
            sums["clip_fraction"] += out.clip_fraction * n
            sums["ratio_mean"] += out.ratio_mean * n
            sums["entropy"] += float((entropy * mask).sum())
        per_token = ("kl", "clip_fraction", "ratio_mean", "entropy", "logp_mismatch")
        return {k: v / max(tokens, 1) if k in per_token else v for k, v in sums.items()}

    @staticmethod
    def mismatch(batch: RolloutBatch, rows: list[int], logp: torch.Tensor, mask: torch.Tensor) -> float:
        """Summed |logp_engine - logp_train| over real tokens: sampler vs trainer numerics (and the
        temperature, which the trainer does not apply)."""
        total = 0.0
        for j, i in enumerate(rows):
            eng = batch.engine_logprobs[i]
            if len(eng) != len(batch.completions[i]):
                continue
            n = len(eng)
            diff = (torch.tensor(eng) - logp[j, :n].cpu()).abs() * mask[j, :n].cpu()
            total += float(diff.sum())
        return total

    def sync_rollouts(self) -> None:
        """generator.sync_weights(the policy as it is now); with LoRA, its merged plain model."""
        if self.rollout_model is not self.model:
            merge_into(self.rollout_model, self.model)
        self.generator.sync_weights(self.rollout_model)

    # ------------------------------------------------------------------------------ eval, saving

    def evaluate(self) -> dict:
        cfg = self.cfg
        result = evaluate(
            self.generator,
            self.tokenizer,
            self.task,
            self.eval_problems,
            cfg.rollout.template,
            self.eval_tokens,
            stop=cfg.rollout.stop,
            temperature=cfg.eval.temperature,
            samples=cfg.eval.samples,
            seed=cfg.run.seed,
        )
        examples = result.pop("examples")
        record = {"type": "eval", "step": self.step, **result}
        self.metrics.log(record)
        for ex in examples[:1]:
            self.metrics.log({"type": "sample", "step": self.step, **ex})
        self.last_eval = {**record, "examples": examples}
        if not self.first_eval:
            self.first_eval = dict(record)
        self.say(
            f"step {self.step}: held-out pass@1 {result['pass@1']:.3f} on {result['problems']} problems, "
            f"response length {result['response_length']:.1f} tokens, format {result['format']:.2f}"
        )
        return record

    def save(self) -> None:
        state = {"cost": self.meter.state_dict(), "cursor": self.cursor, "config": to_dict(self.cfg)}
        state |= {"last_eval": self.last_eval, "first_eval": self.first_eval}
        what = (self.model, self.optimizer, self.tokenizer, state, {}, self.env)
        path = ckpt_io.save_checkpoint(self.run_dir, self.step, *what, keep=self.cfg.checkpoint.keep)
        self.say(f"step {self.step}: saved {path}")

    # ------------------------------------------------------------------------------ the run

    def run(self) -> dict:
        cfg, r = self.cfg, self.cfg.rollout
        self.say(
            f"grpo ({r.template}): {human(self.acct.total_params)} params, task {cfg.task.name!r} "
            f"({len(self.train_problems)} train prompts, {len(self.eval_problems)} held out), G={r.group_size}, "
            f"{r.prompts_per_step} prompts/step, beta={cfg.grpo.beta:g}, mu={cfg.grpo.mu}, "
            f"reference model: {'yes' if self.ref_model is not None else 'none'}"
            + (", RANDOM REWARDS (control)" if cfg.reward.random else "")
        )
        self.sync_rollouts()  # the contract: the generator samples the policy as of now
        if self.checkpoint is not None:
            self.say(f"resumed from {self.checkpoint.path} at step {self.step}")
        else:
            self.evaluate()
        show = cfg.run.progress
        progress = tqdm(
            total=cfg.train.max_steps, initial=self.step, unit="step", dynamic_ncols=True, disable=not show
        )
        while self.step < cfg.train.max_steps:
            record = self.train_step()
            self.metrics.log(record)
            progress.update(1)
            progress.set_postfix(
                reward=f"{record['reward']:.2f}", acc=f"{record['accuracy']:.2f}",
                len=f"{record['response_length']:.0f}", refresh=False,
            )  # fmt: skip
            done = self.step == cfg.train.max_steps
            if cfg.eval.every and self.step % cfg.eval.every == 0 and not done:
                self.evaluate()
            if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0 and not done:
                self.save()
        progress.close()
        if self.last_eval.get("step") != self.step:
            self.evaluate()
        if latest_checkpoint(self.run_dir) != checkpoint_dir(self.run_dir, self.step):
            self.save()
        self.metrics.close()
        summary = self.summary()
        records = read_metrics(self.run_dir / "metrics.jsonl")
        plots = plot_grpo(records, self.run_dir)
        write_grpo_report(self.run_dir, self.command, self.cfg, self.model.config, summary, records, plots)
        return summary

    def summary(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "step": self.step,
            "start_pass@1": self.first_eval.get("pass@1"),
            "final_pass@1": self.last_eval.get("pass@1"),
            "start_response_length": self.first_eval.get("response_length"),
            "final_response_length": self.last_eval.get("response_length"),
            "eval_problems": len(self.eval_problems),
            "train_eval_overlap": self.overlap.shared,  # eval problems also trained on (allowed runs only)
            "reference_model": self.ref_model is not None,
            "random_rewards": self.cfg.reward.random,
            "examples": self.last_eval.get("examples", []),
            "cost": self.meter.summary(),
            "model_dir": str(checkpoint_dir(self.run_dir, self.step) / "model"),
        }
