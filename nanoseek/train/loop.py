"""The training loop, one for pretraining and SFT (and distillation, which is SFT on teacher traces).

    from nanoseek.train import load_config, train
    summary = train(load_config("recipes/cpu_toy.toml", ["run.out=runs/toy"]))
    summary = train(cfg, resume=True)               # continue from the newest complete checkpoint

Run it under `torchrun --nproc_per_node N` for data parallelism (DDP, or FSDP2 with train.fsdp).

One optimizer step:
1. every rank takes `accum` micro-batches of device_batch_size rows (accum = batch_tokens /
   (device_batch_size x seq_len x world_size)); the target tokens of all of them on all ranks are
   counted first, so each micro-batch's loss is weighted by its share of them and the step's gradient
   is that of the mean loss over every target token of the global batch, whatever the split over ranks
   and micro-batches (SFT rows have different numbers of targets);
2. forward under bf16 autocast on GPU (fp32 on CPU); the loss is lm + lambda x MTP + balance
   (`nanoseek.model.Losses`; lambda on its schedule, `Trainer.mtp_lambda`); backward, with the gradient all-reduce only after the last micro-batch;
3. clip the global gradient norm, set the scheduled lr, AdamW step;
4. auxiliary-loss-free balancing: the expert loads counted in this step's forwards are summed over
   ranks and every rank moves its router biases by gamma x sign(mean load - load).
Validation loss (and bits per byte for pretraining) every eval.every steps, greedy samples every
eval.sample_every steps, checkpoints every checkpoint.every steps; all of them again at the end.
The run directory gets config.toml, metrics.jsonl, checkpoints/, loss.png, lr.png and report.md.
"""

from __future__ import annotations

import contextlib
import functools
import shlex
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from nanoseek.model import account
from nanoseek.model.run_dirs import checkpoint_dir, latest_checkpoint
from nanoseek.train import checkpointing as ckpt_io
from nanoseek.train.config import ConfigError, TrainConfig, to_dict, to_toml
from nanoseek.train.cost import CostMeter, human, train_flops_per_token
from nanoseek.train.distributed import DistEnv, all_reduce_sum, barrier, grad_sync, setup, wrap_model
from nanoseek.train.evaluate import IGNORE_INDEX, bits_per_byte, sample, validation_loss
from nanoseek.train.inputs import build_model, prepare_pretrain, prepare_sft
from nanoseek.train.lora import add_lora
from nanoseek.train.optim import build_optimizer, lr_multiplier, mtp_weight, optimizer_step
from nanoseek.train.report import MetricsLog, plot_metrics, read_metrics, truncate_metrics, write_report


def train(cfg: TrainConfig, resume: bool = False, command: str | None = None) -> dict:
    """Run (or resume) the training run `cfg` describes; returns its summary (losses, cost, paths).
    Under torchrun this is called by every process."""
    env = setup(cfg.run.device)
    return Trainer(cfg, env, resume, command).run()


class Trainer:
    def __init__(self, cfg: TrainConfig, env: DistEnv, resume: bool = False, command: str | None = None):
        if not cfg.run.out:
            raise ConfigError("run.out: no run directory; pass --out DIR")
        self.cfg, self.env = cfg, env
        self.command = command or " ".join(shlex.quote(a) for a in ["nanoseek", *sys.argv[1:]])
        self.run_dir = run_dir = Path(cfg.run.out)
        if env.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        barrier()
        found = ckpt_io.resumable(run_dir, resume)
        if env.device.type == "cuda":
            torch.set_float32_matmul_precision("high")
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)

        t = cfg.train
        prepare = prepare_sft if cfg.run.kind == "sft" else prepare_pretrain
        self.inputs = prepare(cfg, run_dir, env)
        self.tokenizer = self.inputs.tokenizer
        self.model = build_model(cfg, self.tokenizer)  # on the CPU in fp32, sharded / moved by wrap_model
        self.model = add_lora(self.model, cfg.lora)  # lora.rank > 0: only adapters train (lora.py)
        self.checkpoint = ckpt_io.load_checkpoint(found, env) if found is not None else None
        if self.checkpoint is not None:
            self.model.load_state_dict(self.checkpoint.model_state(self.model))
        self.train_model = wrap_model(self.model, env, fsdp=t.fsdp, compile=t.compile)
        self.optimizer = build_optimizer(self.model, t, env.device.type)

        bf16 = t.dtype == "bf16" or (t.dtype == "auto" and env.device.type == "cuda")
        self.precision = "bf16 autocast" if bf16 else "fp32"
        self.autocast = (
            functools.partial(torch.autocast, env.device.type, dtype=torch.bfloat16)
            if bf16
            else contextlib.nullcontext
        )
        micro_tokens = t.device_batch_size * t.seq_len * env.world_size
        if t.batch_tokens % micro_tokens:
            raise ConfigError(
                f"train.batch_tokens: {t.batch_tokens} is not a multiple of device_batch_size x seq_len x "
                f"processes = {t.device_batch_size} x {t.seq_len} x {env.world_size} = {micro_tokens}"
            )
        self.accum = max(t.batch_tokens // micro_tokens, 1)
        if env.is_main:  # only now that the data, the model and the batch shape are known to be good:
            (run_dir / "config.toml").write_text(to_toml(cfg))  # `--resume` reuses it
        self.meter = CostMeter.for_device(
            env.device, env.world_size, cfg.cost.price_per_device_hour, cfg.cost.peak_flops
        )
        self.step = 0
        self.samples: list[dict] = []
        self.last_eval: dict = {}
        if self.checkpoint is not None:
            c = self.checkpoint
            c.restore(self.model, self.optimizer, self.meter, env)
            self.inputs.train_loader.load_state_dict(c.rank["loader"])
            self.step = c.step
            self.last_eval = c.trainer.get("last_eval", {})
        if env.is_main:
            truncate_metrics(run_dir / "metrics.jsonl", self.step if self.checkpoint else -1)
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=env.is_main)

    # ------------------------------------------------------------------------------ helpers

    def say(self, text: str) -> None:
        if self.env.is_main:
            tqdm.write(text, file=sys.stderr)

    @functools.lru_cache(maxsize=64)  # noqa: B019 (one Trainer per process)
    def flops_per_token(self, seq_len: int) -> float:
        return train_flops_per_token(self.model.config, seq_len)

    # ------------------------------------------------------------------------------ one step

    def train_step(self) -> dict:
        """One optimizer step over the global batch; returns its metrics."""
        env, t = self.env, self.cfg.train
        t0 = time.perf_counter()
        device = env.device
        batches = [next(self.inputs.train_loader) for _ in range(self.accum)]
        counts = [int((y != IGNORE_INDEX).sum()) for _, y in batches]
        total_targets = all_reduce_sum(torch.tensor([float(sum(counts))], device=device)).item()
        stats = torch.zeros(4, dtype=torch.float64, device=device)  # lm, mtp, balance (x targets), flops
        self.train_model.train()
        lam = self.mtp_lambda()
        rows = self.cfg.model.mtp_rows
        extra = {"mtp_rows": rows} if rows and len(getattr(self.model, "mtp", ())) else {}
        for i, ((x, y), n) in enumerate(zip(batches, counts)):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with grad_sync(self.train_model, self.model, env, sync=i == len(batches) - 1):
                with self.autocast():
                    losses = self.train_model(x, targets=y, **extra)
                total = losses.lm + lam * losses.mtp + losses.balance
                (total * (n / total_targets * env.world_size)).backward()
            parts = torch.stack([losses.lm, losses.mtp, losses.balance]).detach().double() * n
            stats += torch.cat([parts, parts.new_tensor([x.numel() * self.flops_per_token(x.shape[1])])])
        lr = t.lr * lr_multiplier(self.step, t)
        grad_norm = optimizer_step(self.model, self.optimizer, lr, t.grad_clip)
        self.update_router_biases()
        all_reduce_sum(stats)
        lm, mtp, balance, flops = (stats / torch.tensor([total_targets] * 3 + [1.0], device=device)).tolist()
        dt = time.perf_counter() - t0
        tokens = sum(x.numel() for x, _ in batches) * env.world_size
        self.meter.add(tokens, flops, dt)
        self.step += 1
        return {
            "type": "train",
            "step": self.step,
            "loss": lm,
            "mtp_loss": mtp,
            "mtp_lambda": lam,
            "balance_loss": balance,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": self.meter.tokens,
            "tokens_per_s": tokens / dt,
            "mfu": self.meter.mfu(flops, dt),
            "dt": dt,
            "elapsed": self.meter.elapsed(),
        }

    def mtp_lambda(self) -> float:
        """lambda of the MTP loss at this step: model.mtp_loss_weight, then model.mtp_loss_weight_late
        from model.mtp_switch of the steps on (DeepSeek-V3's 0.3 -> 0.1)."""
        m = self.cfg.model
        base = getattr(self.model.config, "mtp_loss_weight", 0.0)  # a dense family has no MTP
        return mtp_weight(self.step, base, m.mtp_loss_weight_late, m.mtp_switch, self.cfg.train.max_steps)

    @torch.no_grad()
    def update_router_biases(self) -> None:
        moes = self.model.moe_layers()
        if not moes:
            return
        loads = all_reduce_sum(torch.stack([m.expert_load for m in moes]))  # (MoE layers, experts)
        self.model.update_router_biases(None, list(loads))

    # ------------------------------------------------------------------------------ eval, samples, saving

    def evaluate(self) -> dict:
        record: dict = {"type": "eval", "step": self.step}
        if self.inputs.val_loader is not None:
            loss, n = validation_loss(
                self.model, self.inputs.val_loader(), self.cfg.eval.batches, self.autocast
            )
            record.update(val_loss=loss, val_tokens=n)
            if self.inputs.val_bytes_per_token:
                record["val_bpb"] = bits_per_byte(loss, self.inputs.val_bytes_per_token)
            self.metrics.log(record)
            bpb = f", {record['val_bpb']:.3f} bits/byte" if "val_bpb" in record else ""
            self.say(f"step {self.step}: val loss {loss:.4f}{bpb}")
        self.last_eval = record
        return record

    def sample(self) -> None:
        if not self.inputs.prompts:
            return
        rows = sample(
            self.model,
            self.tokenizer,
            self.inputs.prompts,
            self.inputs.chat,
            self.cfg.eval.sample_tokens,
            self.autocast,
        )
        for row in rows:
            self.metrics.log({"type": "sample", "step": self.step, **row})
            self.say(f"step {self.step} sample: {row['prompt']!r} -> {row['completion']!r}")
        self.samples = rows

    def save(self) -> None:
        state = {"cost": self.meter.state_dict(), "last_eval": self.last_eval, "config": to_dict(self.cfg)}
        rank_state = {"loader": self.inputs.train_loader.state_dict()}
        what = (self.model, self.optimizer, self.tokenizer, state, rank_state, self.env)
        path = ckpt_io.save_checkpoint(self.run_dir, self.step, *what, keep=self.cfg.checkpoint.keep)
        self.say(f"step {self.step}: saved {path}")

    # ------------------------------------------------------------------------------ the run

    def run(self) -> dict:
        cfg, t, env = self.cfg, self.cfg.train, self.env
        acct = account(self.model.config, t.seq_len)
        self.say(
            f"{cfg.run.kind}: {human(acct.total_params)} params ({human(acct.active_params)} active, "
            f"{human(acct.mtp_params)} MTP) on {env.world_size} x {self.meter.device}, {self.precision}, "
            f"{self.accum} micro-batch(es) of {t.device_batch_size} x {t.seq_len} per rank per step"
        )
        if self.checkpoint is not None:
            self.say(f"resumed from {self.checkpoint.path} at step {self.step}")
        elif cfg.eval.every:
            self.evaluate()
        show = env.is_main and cfg.run.progress
        progress = tqdm(
            total=t.max_steps, initial=self.step, unit="step", dynamic_ncols=True, disable=not show
        )
        last_train: dict = {}
        while self.step < t.max_steps:
            last_train = self.train_step()
            self.metrics.log(last_train)
            progress.update(1)
            progress.set_postfix(
                loss=f"{last_train['loss']:.3f}", tok_s=f"{last_train['tokens_per_s']:,.0f}", refresh=False
            )
            done = self.step == t.max_steps
            if cfg.eval.every and self.step % cfg.eval.every == 0 and not done:
                self.evaluate()
            if cfg.eval.sample_every and self.step % cfg.eval.sample_every == 0 and not done:
                self.sample()
            if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0 and not done:
                self.save()
        progress.close()
        final_eval = self.evaluate()
        self.sample()
        if latest_checkpoint(self.run_dir) != checkpoint_dir(self.run_dir, self.step):
            self.save()
        self.metrics.close()
        summary = self.summary(final_eval, acct)
        if env.is_main:
            self.write_report(summary, acct)
        barrier()
        return summary

    def summary(self, final_eval: dict, acct) -> dict:
        records = read_metrics(self.run_dir / "metrics.jsonl") if self.env.is_main else []
        train_losses = [r["loss"] for r in records if r.get("type") == "train"]
        tail = train_losses[-10:]
        return {
            "run_dir": str(self.run_dir),
            "kind": self.cfg.run.kind,
            "step": self.step,
            "train_loss": sum(tail) / len(tail) if tail else None,
            "val_loss": final_eval.get("val_loss"),
            "val_bpb": final_eval.get("val_bpb"),
            "unigram_entropy": self.inputs.unigram_entropy,
            "samples": self.samples,
            "total_params": acct.total_params,
            "active_params": acct.active_params,
            "cost": self.meter.summary(),
            "model_dir": str(checkpoint_dir(self.run_dir, self.step) / "model"),
        }

    def write_report(self, s: dict, acct) -> None:
        cfg, t = self.cfg, self.cfg.train
        plot_metrics(read_metrics(self.run_dir / "metrics.jsonl"), self.run_dir)
        m = cfg.model
        arch = (
            f"init from `{m.init}`" if m.init else (f"preset {m.preset}" if m.preset else f"depth {m.depth}")
        )
        overview = [
            ("kind", cfg.run.kind),
            ("model", f"{describe(self.model.config)}, {arch}"),
            (
                "parameters",
                f"{acct.total_params:,} total, {acct.active_params:,} active per token, "
                f"{acct.mtp_params:,} in MTP modules",
            ),
            ("training FLOPs per token", human(self.flops_per_token(t.seq_len))),
            ("steps", f"{self.step:,}"),
            (
                "global batch",
                f"{t.device_batch_size * self.accum * self.env.world_size} rows x {t.seq_len} tokens "
                f"({self.env.world_size} process(es) x {self.accum} micro-batch(es))",
            ),
            (
                "optimizer",
                f"AdamW lr {t.lr:g}, {t.schedule} schedule, warmup {t.warmup_steps}, "
                f"wd {t.weight_decay:g}, clip {t.grad_clip:g}",
            ),
            ("precision", self.precision + (", torch.compile" if t.compile else "")),
            (
                "parallelism",
                "FSDP2" if self.env.fsdp else "DDP" if self.env.distributed else "single process",
            ),
            ("model directory", f"`{s['model_dir']}`"),
        ]
        results = [("final train loss (mean of last 10 steps)", _fmt(s["train_loss"]))]
        results.append(("final val loss", _fmt(s["val_loss"])))
        if s["val_bpb"] is not None:
            results.append(("final val bits per byte", _fmt(s["val_bpb"])))
        if s["unigram_entropy"] is not None:
            results.append(
                ("unigram entropy of the corpus (no-context baseline)", _fmt(s["unigram_entropy"]))
            )
        write_report(
            self.run_dir,
            f"nanoseek {cfg.run.kind}: {self.run_dir.name}",
            self.command,
            overview,
            results,
            self.samples,
            s["cost"],
            self.inputs.notes,
        )


def describe(mc) -> str:
    """The architecture in a few words: the family and what sets its size."""
    name = {"deepseek_v3": "DeepSeek-V3", "deepseek_v2": "DeepSeek-V2"}.get(mc.model_type, mc.model_type)
    parts = [f"{mc.num_hidden_layers} layers, hidden {mc.hidden_size}"]
    if hasattr(mc, "n_routed_experts"):  # DeepSeekMoE
        parts.append(f"{mc.n_routed_experts} routed experts (top {mc.num_experts_per_tok})")
        parts.append(f"{getattr(mc, 'num_nextn_predict_layers', 0)} MTP")
    if hasattr(mc, "num_key_value_heads") and not hasattr(mc, "n_routed_experts"):  # dense GQA
        parts.append(f"{mc.num_attention_heads} heads / {mc.num_key_value_heads} K/V heads")
        parts += ["tied embeddings"] if mc.tie_word_embeddings else []
    return f"{name}: {', '.join(parts)}"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
