"""An eval's results: the summary (computed from the scored samples alone) and its markdown report.

    summary = summarize(records, cfg, model, labels, modes, sizes)   # a JSON-able dict
    write_outputs(out_dir, summary, cfg, timing)                     # summary.json + report.md
    print(markdown_table(summary))

summary.json depends only on the samples and the protocol (no clocks), so an interrupted and resumed
run writes the same file as an uninterrupted one. Wall time, device-hours and their $ (which do
depend on the sessions) go into report.md only.

Per generative task: pass@1 (mean over problems of the mean correctness of the k samples), pass@k
for the reported ks (unbiased estimator), cons@k (majority vote, ties to the first answer), the share
of samples with the R1 format and cut at the token budget, mean completion tokens, and tokens and $.
Per likelihood task: acc and acc_norm. Metrics count complete problems only (all k samples scored);
`complete` says whether every problem was.

Token $ = prompt tokens x input price + completion tokens x output price (per million). Prompt tokens
are counted once per sample, as an API without n > 1 bills them (DeepSeek's does).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanoseek.eval.config import EvalConfig
from nanoseek.eval.metrics import cons_at_k, mean, pass_at_k
from nanoseek.markdown import percent, table


def token_cost(prompt_tokens: int, completion_tokens: int, cfg: EvalConfig) -> float:
    return prompt_tokens / 1e6 * cfg.input_price + completion_tokens / 1e6 * cfg.output_price


def _group(records: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["problem_id"], []).append(r)
    return groups


def summarize_generative(records: Sequence[dict], cfg: EvalConfig, num_problems: int) -> dict[str, Any]:
    k = cfg.k
    groups = [sorted(g, key=lambda r: r["sample"]) for g in _group(records).values()]
    complete = [g for g in groups if len(g) == k]
    out: dict[str, Any] = {"mode": "generate", "problems": num_problems, "complete_problems": len(complete)}
    for kk in cfg.report_ks:
        out[f"pass@{kk}"] = mean([pass_at_k(k, sum(r["correct"] for r in g), kk) for g in complete])
    out[f"cons@{k}"] = mean(
        [float(cons_at_k([r["extracted"] for r in g], [r["correct"] for r in g])) for g in complete]
    )
    samples = [r for g in complete for r in g]
    out["samples"] = len(samples)
    out["format_rate"] = mean([float((r.get("format_reward") or 0) > 0) for r in samples])
    out["truncated_rate"] = mean([float(r.get("finish_reason") == "length") for r in samples])
    out["mean_completion_tokens"] = mean([r["completion_tokens"] for r in samples])
    return out


def summarize_likelihood(records: Sequence[dict], num_problems: int) -> dict[str, Any]:
    return {
        "mode": "likelihood",
        "problems": num_problems,
        "complete_problems": len(records),
        "samples": len(records),
        "acc": mean([float(r["correct"]) for r in records]),
        "acc_norm": mean([float(r["correct_norm"]) for r in records]),
    }


def summarize(
    records: Sequence[dict],
    cfg: EvalConfig,
    model: str,
    labels: Sequence[str],
    modes: dict[str, str],
    sizes: dict[str, int],
) -> dict[str, Any]:
    """The summary of all scored samples (`records`, sorted as `SampleStore.records` returns them)."""
    tasks: dict[str, Any] = {}
    totals = {"prompt_tokens": 0, "completion_tokens": 0, "samples": 0}
    for label in labels:
        rows = [r for r in records if r["task"] == label]
        if modes[label] == "likelihood":
            result = summarize_likelihood(rows, sizes[label])
        else:
            result = summarize_generative(rows, cfg, sizes[label])
        result["prompt_tokens"] = sum(r["prompt_tokens"] for r in rows)
        result["completion_tokens"] = sum(r["completion_tokens"] for r in rows)
        result["cost_usd"] = token_cost(result["prompt_tokens"], result["completion_tokens"], cfg)
        tasks[label] = result
        for key in totals:
            totals[key] += result[key] if key != "samples" else len(rows)
    totals["cost_usd"] = token_cost(totals["prompt_tokens"], totals["completion_tokens"], cfg)
    protocol = {key: value for key, value in cfg.identity().items() if key != "tasks"}
    protocol["prices_per_million"] = {"input": cfg.input_price, "output": cfg.output_price}
    return _no_nan(
        {
            "model": model,
            "protocol": protocol,
            "tasks": tasks,
            "total": totals,
            "complete": all(t["complete_problems"] == t["problems"] for t in tasks.values()),
        }
    )


def _no_nan(value: Any) -> Any:
    """NaN (a metric over no problems) becomes None: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value


_pct = functools.partial(percent, unit="")  # the report says the figures are percentages


def markdown_table(summary: dict[str, Any]) -> str:
    """Markdown tables of a summary: generative tasks (percentages), likelihood tasks, and totals."""
    k = summary["protocol"]["k"]
    generative = {n: t for n, t in summary["tasks"].items() if t["mode"] == "generate"}
    likelihood = {n: t for n, t in summary["tasks"].items() if t["mode"] == "likelihood"}
    parts = []
    if generative:
        ks = sorted({int(key[5:]) for t in generative.values() for key in t if key.startswith("pass@")})
        head = ["task", "problems", *(f"pass@{kk}" for kk in ks), f"cons@{k}", "format", "truncated"]
        head += ["avg out tokens", "in tokens", "out tokens", "$"]
        rows = []
        for name, t in generative.items():
            row = [name, f"{t['complete_problems']}/{t['problems']}"]
            row += [_pct(t[f"pass@{kk}"]) for kk in ks] + [_pct(t[f"cons@{k}"])]
            row += [_pct(t["format_rate"]), _pct(t["truncated_rate"]), _num(t["mean_completion_tokens"])]
            row += [f"{t['prompt_tokens']:,}", f"{t['completion_tokens']:,}", f"{t['cost_usd']:.4f}"]
            rows.append(row)
        parts.append(table(head, rows))
    if likelihood:
        rows = [
            [n, f"{t['complete_problems']}/{t['problems']}", _pct(t["acc"]), _pct(t["acc_norm"])]
            for n, t in likelihood.items()
        ]
        parts.append(table(["task (likelihood)", "problems", "acc", "acc_norm"], rows))
    total = summary["total"]
    parts.append(
        f"Total: {total['samples']:,} samples, {total['prompt_tokens']:,} input + "
        f"{total['completion_tokens']:,} output tokens = ${total['cost_usd']:.4f} at "
        f"${summary['protocol']['prices_per_million']['input']:g} / "
        f"${summary['protocol']['prices_per_million']['output']:g} per million input / output tokens.\n"
    )
    return "\n".join(parts)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}"


def write_outputs(
    out_dir: str | Path, summary: dict[str, Any], cfg: EvalConfig, timing: dict[str, float]
) -> None:
    """summary.json and report.md (with the compute time and its device-hour $) into `out_dir`."""
    out_dir = Path(out_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    p = summary["protocol"]
    hours = timing["seconds"] / 3600
    lines = [
        f"# nanoseek eval: {summary['model'] or out_dir.name}",
        "",
        f"Protocol: k = {p['k']} samples per problem, temperature {p['temperature']:g}, top-p {p['top_p']:g}, "
        f"at most {p['max_new_tokens']:,} new tokens, think = {p['think']}, seed {p['seed']}, "
        f"split `{p['split']}`. pass@1 is the mean correctness over the k samples; pass@k the unbiased "
        f"estimator; cons@{p['k']} the majority vote (ties to the answer given first). Percentages.",
        "",
        markdown_table(summary),
        f"Compute: {timing['samples']:,} samples in {timing['seconds']:.1f} s "
        f"({hours:.4g} device-hours"
        + (
            f", ${hours * cfg.device_hour_price:.4g} at ${cfg.device_hour_price:g}/device-hour"
            if cfg.device_hour_price
            else ""
        )
        + ").",
        "" if summary["complete"] else "\n**Incomplete**: some problems lack samples; rerun to finish.",
    ]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
