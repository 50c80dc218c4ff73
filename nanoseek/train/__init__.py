"""nanoseek.train: one training loop for pretraining and SFT, with checkpoints, DDP/FSDP2 and cost accounting.

    from nanoseek.train import load_config, train
    cfg = load_config("recipes/cpu_toy.toml", ["train.max_steps=50", "run.out=runs/toy"])
    summary = train(cfg)                 # or: nanoseek pretrain recipes/cpu_toy.toml --out runs/toy

Modules: `config` (the config schema of every training command: sections, recipes + overrides,
TrainConfig), `optim` (AdamW groups, lr schedules), `loop` (Trainer, train), `inputs` (tokenizer,
loaders, model to start from), `evaluate` (val loss, bits per byte, unigram entropy, greedy samples),
`checkpointing` (atomic checkpoints, resume), `distributed` (torchrun, DDP, FSDP2), `cost` (FLOPs,
MFU, device-hours, $), `report` (metrics.jsonl, plots, report.md), `parallel` (runs side by side as
processes), `toy_data` (synthetic corpora from nanoseek.tasks), `cli` (pretrain_main, sft_main).
GRPO, built on these, is `nanoseek.rl`.
"""

from nanoseek.train.config import ConfigError, TrainConfig, load_config, to_toml
from nanoseek.train.cost import CostMeter, measure_matmul_peak_flops, peak_flops, train_flops_per_token
from nanoseek.train.loop import Trainer, train

__all__ = [
    "ConfigError",
    "CostMeter",
    "TrainConfig",
    "Trainer",
    "load_config",
    "measure_matmul_peak_flops",
    "peak_flops",
    "to_toml",
    "train",
    "train_flops_per_token",
]
