"""nanoseek.rl: GRPO (DeepSeekMath, R1-Zero and R1 recipes; DAPO and Dr. GRPO variants) on any task.

    from nanoseek.rl import GRPOTrainer, load_grpo_config
    cfg = load_grpo_config("recipes/grpo_r1_zero.toml", ["run.out=runs/grpo", "model.init=runs/base"])
    summary = GRPOTrainer(cfg).run()          # or: nanoseek grpo recipes/grpo_r1_zero.toml --init ... --out ...

Modules: `config` (GRPOConfig: recipes + overrides, built from nanoseek.train.config's sections),
`rollout` (prompts -> G samples from a Generator -> the task's rewards -> groups; held-out pass@1),
`loss` (advantages, the clipped objective, k3 KL, aggregations), `trainer` (GRPOTrainer: rollouts,
micro-batched updates, weight sync to the rollout Generator, checkpoints, resume), `report` (plots,
report.md), `cli` (grpo_main), `micro` (the micro R1-Zero experiment beside a random-reward control).
The optimizer, checkpoints, metrics and cost are the training loop's (`nanoseek.train`).
"""

from nanoseek.rl.config import GRPOConfig, load_grpo_config
from nanoseek.rl.trainer import GRPOTrainer, completion_logprobs

__all__ = ["GRPOConfig", "GRPOTrainer", "completion_logprobs", "load_grpo_config"]
