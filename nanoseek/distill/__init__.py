"""nanoseek.distill: DeepSeek-R1's distillation recipe, from a teacher into a small dense student.

    from nanoseek.distill import DistillConfig, run_distill
    result = run_distill(DistillConfig(teacher="runs/teacher", task="arithmetic?digits=2", out="runs/distill"))
    # or: nanoseek distill --teacher runs/teacher --task "arithmetic?digits=2" --out runs/distill

Modules: `traces` (rejection sampling into chat JSONL with reasoning_content), `student` (dense student
configs and initialization), `toy` (a toy MoE teacher trained on a synthetic task's solution traces),
`pipeline` (traces -> filter -> SFT -> eval, resumable), `report` (report.md), `cli` (distill_main).
"""

from nanoseek.distill.pipeline import DistillConfig, run_distill
from nanoseek.distill.student import active_params, dense_config, init_student
from nanoseek.distill.toy import build_toy_teacher, trace_conversations
from nanoseek.distill.traces import FilterStats, write_sft_dataset

__all__ = [
    "DistillConfig",
    "FilterStats",
    "active_params",
    "build_toy_teacher",
    "dense_config",
    "init_student",
    "run_distill",
    "trace_conversations",
    "write_sft_dataset",
]
