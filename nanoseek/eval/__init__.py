"""nanoseek.eval: evaluate any Generator the way DeepSeek reports R1 (pass@1 over k samples, cons@k).

    from nanoseek.eval import EvalConfig, run_eval
    summary = run_eval(generator, EvalConfig(tasks=["gsm8k", "math500"], k=8), "runs/eval")
    # or: nanoseek eval --model runs/sft/model --tasks gsm8k,math500 --k 8 --out runs/eval
    compare_runs("runs/eval/a", "runs/eval/b")   # or: nanoseek eval --compare runs/eval/a runs/eval/b

Modules: `metrics` (pass@k, cons@k), `stats` (error bars: bootstrap over problems and seeds, paired
differences), `config` (EvalConfig, prices, R1's protocol; task specs are `nanoseek.tasks.spec`),
`store` (the crash-safe samples.jsonl), `runner` (tasks x problems x k samples through a Generator,
resumable, over one or several seeds), `report` (summary.json, problems.csv, report.md), `compare`
(two runs over the same problems, paired), `likelihood` (multiple choice by log-likelihood, lm-eval
style), `generators` (a Generator from a checkpoint path or an OpenAI-compatible URL), `cli` (eval_main).
"""

from nanoseek.eval.compare import compare_runs
from nanoseek.eval.config import R1_INPUT_PRICE, R1_OUTPUT_PRICE, EvalConfig, protocol_settings
from nanoseek.eval.generators import LoadedGenerator, load_generator
from nanoseek.eval.likelihood import LikelihoodScorer
from nanoseek.eval.metrics import cons_at_k, majority_vote, pass_at_k
from nanoseek.eval.report import markdown_table, summarize
from nanoseek.eval.runner import EvalRunner, problem_seed, run_eval
from nanoseek.eval.stats import error_bars, paired_difference
from nanoseek.eval.store import SampleStore

__all__ = [
    "EvalConfig",
    "EvalRunner",
    "LikelihoodScorer",
    "LoadedGenerator",
    "R1_INPUT_PRICE",
    "R1_OUTPUT_PRICE",
    "SampleStore",
    "compare_runs",
    "cons_at_k",
    "error_bars",
    "load_generator",
    "majority_vote",
    "markdown_table",
    "paired_difference",
    "pass_at_k",
    "problem_seed",
    "protocol_settings",
    "run_eval",
    "summarize",
]
