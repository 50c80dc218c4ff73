"""An eval's results: the summary (computed from the scored samples alone), the per-problem table and
the markdown report.

    summary = summarize(records, cfg, model, labels, modes, sizes)   # a JSON-able dict
    rows = problem_table(records, cfg, labels, modes)                # one dict per problem
    write_outputs(out_dir, summary, cfg, timing, rows)               # summary.json, problems.csv, report.md
    print(markdown_table(summary))

summary.json depends only on the samples and the protocol (no clocks; the bootstrap is seeded), so an
interrupted and resumed run writes the same file as an uninterrupted one. Wall time, device-hours and
their $ (which do depend on the sessions) go into report.md only.

Per generative task: pass@1 (mean over problems of the mean correctness of the k samples), pass@k
for the reported ks (unbiased estimator), cons@k (majority vote, ties to the first answer), each with
its error bars under `error_bars` (standard error over problems and a 95% bootstrap interval,
`nanoseek.eval.stats`; pass@1 also with `rerun_se`, its standard error from sampling alone), the share
of samples with the R1 format and cut at the token budget, mean completion tokens, and tokens and $.
Per likelihood task: acc and acc_norm with their error bars. Metrics count complete problems only (all
k samples scored, in every seed's run); `complete` says whether every problem was.

Records of a multi-seed run carry `run` (the seed's index): a problem's metric is then its mean over
the runs (cons@k: the mean of each run's vote), `per_seed` lists each run's score and `seed_sd` their
spread. The per-problem table pools a problem's samples over every run (its majority answer too).

Token $ = prompt tokens x input price + completion tokens x output price (per million). Prompt tokens
are counted once per sample, as an API without n > 1 bills them (DeepSeek's does).
"""

from __future__ import annotations

import csv
import functools
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanoseek.eval.config import EvalConfig
from nanoseek.eval.metrics import majority_vote, mean, pass_at_k
from nanoseek.eval.stats import error_bars, rerun_se
from nanoseek.markdown import percent, table


def token_cost(prompt_tokens: int, completion_tokens: int, cfg: EvalConfig) -> float:
    return prompt_tokens / 1e6 * cfg.input_price + completion_tokens / 1e6 * cfg.output_price


def _runs(records: Sequence[dict]) -> dict[str, dict[int, list[dict]]]:
    """problem id -> run (seed index; 0 for a single run) -> its samples in sample order."""
    groups: dict[str, dict[int, list[dict]]] = {}
    for r in records:
        groups.setdefault(r["problem_id"], {}).setdefault(int(r.get("run", 0)), []).append(r)
    for runs in groups.values():
        for samples in runs.values():
            samples.sort(key=lambda r: r["sample"])
    return groups


def complete_problems(records: Sequence[dict], k: int, seeds: int) -> dict[str, list[list[dict]]]:
    """problem id -> its runs' samples, for the problems with all k samples in every one of the seeds
    runs (in problem order)."""
    out = {}
    for pid, runs in _runs(records).items():
        if len(runs) == seeds and all(len(samples) == k for samples in runs.values()):
            out[pid] = [runs[r] for r in sorted(runs)]
    return out


def _votes(samples: Sequence[dict]) -> tuple[str | None, bool]:
    """The majority answer of samples (ties to the first) and whether it is correct."""
    answer, index = majority_vote([r["extracted"] for r in samples])
    return answer, index is not None and bool(samples[index]["correct"])


def problem_table(
    records: Sequence[dict], cfg: EvalConfig, labels: Sequence[str], modes: dict[str, str]
) -> list[dict[str, Any]]:
    """One row per complete problem of every task: samples, correct, pass rate, and the majority answer
    over all its samples (every seed, in seed then sample order) with its verdict."""
    rows = []
    for label in labels:
        task_records = [r for r in records if r["task"] == label]
        k = 1 if modes[label] == "likelihood" else cfg.k_for(label)
        for pid, runs in complete_problems(task_records, k, cfg.seeds).items():
            samples = [r for run in runs for r in run]
            correct = sum(bool(r["correct"]) for r in samples)
            answer, right = _votes(samples)
            rows.append(
                {
                    "task": label,
                    "problem_id": pid,
                    "samples": len(samples),
                    "correct": correct,
                    "pass_rate": correct / len(samples),
                    "majority_answer": answer,
                    "majority_correct": right,
                    "reference": samples[0].get("reference"),
                }
            )
    return rows


def summarize_generative(
    records: Sequence[dict], cfg: EvalConfig, num_problems: int, label: str
) -> dict[str, Any]:
    k, seeds = cfg.k_for(label), cfg.seeds
    problems = list(complete_problems(records, k, seeds).values())
    out: dict[str, Any] = {"mode": "generate", "problems": num_problems, "complete_problems": len(problems)}
    out["k"] = k  # samples per problem (in each seed's run)
    # per problem, each metric averaged over the seeds' runs (one run: the run's value)
    per_run: dict[str, list[list[float]]] = {}  # metric -> problem -> one value per run
    for runs in problems:
        counts = [sum(bool(r["correct"]) for r in run) for run in runs]
        for kk in cfg.report_ks(label):
            per_run.setdefault(f"pass@{kk}", []).append([pass_at_k(k, c, kk) for c in counts])
        per_run.setdefault(f"cons@{k}", []).append([float(_votes(run)[1]) for run in runs])
    if not problems:
        per_run = {f"pass@{kk}": [] for kk in cfg.report_ks(label)} | {f"cons@{k}": []}
    per_problem = {name: [mean(v) for v in values] for name, values in per_run.items()}
    for name, values in per_problem.items():
        out[name] = mean(values)
    out["error_bars"] = error_bars(per_problem, cfg.bootstrap)
    correct = [sum(bool(r["correct"]) for run in runs for r in run) for runs in problems]
    out["error_bars"]["pass@1"]["rerun_se"] = rerun_se(correct, [k * seeds] * len(problems))
    if seeds > 1:
        out["seeds"] = seeds
        out["per_seed"] = {
            name: [mean([v[r] for v in values]) for r in range(seeds)]
            for name, values in per_run.items()
            if name in ("pass@1", f"cons@{k}")
        }
        out["seed_sd"] = statistics.stdev(out["per_seed"]["pass@1"]) if problems else None
    samples = [r for runs in problems for run in runs for r in run]
    out["samples"] = len(samples)
    out["format_rate"] = mean([float((r.get("format_reward") or 0) > 0) for r in samples])
    out["truncated_rate"] = mean([float(r.get("finish_reason") == "length") for r in samples])
    out["mean_completion_tokens"] = mean([r["completion_tokens"] for r in samples])
    return out


def summarize_likelihood(records: Sequence[dict], cfg: EvalConfig, num_problems: int) -> dict[str, Any]:
    problems = list(complete_problems(records, 1, cfg.seeds).values())
    per_problem = {
        name: [mean([float(run[0][field]) for run in runs]) for runs in problems]
        for name, field in (("acc", "correct"), ("acc_norm", "correct_norm"))
    }
    return {
        "mode": "likelihood",
        "problems": num_problems,
        "complete_problems": len(problems),
        "samples": sum(len(runs) for runs in problems),
        **{name: mean(values) for name, values in per_problem.items()},
        "error_bars": error_bars(per_problem, cfg.bootstrap),
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
            result = summarize_likelihood(rows, cfg, sizes[label])
        else:
            result = summarize_generative(rows, cfg, sizes[label], label)
        result["prompt_tokens"] = sum(r["prompt_tokens"] for r in rows)
        result["completion_tokens"] = sum(r["completion_tokens"] for r in rows)
        result["cost_usd"] = token_cost(result["prompt_tokens"], result["completion_tokens"], cfg)
        tasks[label] = result
        for key in totals:
            totals[key] += result[key] if key != "samples" else len(rows)
    totals["cost_usd"] = token_cost(totals["prompt_tokens"], totals["completion_tokens"], cfg)
    protocol = {key: value for key, value in cfg.identity().items() if key != "tasks"}
    protocol["name"] = cfg.protocol
    protocol["bootstrap"] = cfg.bootstrap
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
PROBLEM_COLUMNS = ("task", "problem_id", "samples", "correct", "pass_rate", "majority_answer")
PROBLEM_COLUMNS += ("majority_correct", "reference")
REPORT_PROBLEM_ROWS = 100  # per task in report.md; problems.csv has them all


def _se(bars: dict[str, Any], name: str) -> str:
    se = (bars.get(name) or {}).get("se")
    return "n/a" if se is None else f"±{100 * se:.1f}"


def _ci(bars: dict[str, Any], name: str) -> str:
    ci = (bars.get(name) or {}).get("ci95")
    return "n/a" if ci is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _samples(t: dict[str, Any]) -> str:
    return f"{t['k']} x {t['seeds']} seeds" if t.get("seeds") else str(t["k"])


def markdown_table(summary: dict[str, Any]) -> str:
    """Markdown tables of a summary: generative tasks (percentages, with pass@1's standard error and the
    95% intervals of pass@1 and cons@k), likelihood tasks, notes on the error bars, and totals."""
    generative = {n: t for n, t in summary["tasks"].items() if t["mode"] == "generate"}
    likelihood = {n: t for n, t in summary["tasks"].items() if t["mode"] == "likelihood"}
    parts = []
    if generative:
        ks = sorted({int(key[5:]) for t in generative.values() for key in t if key.startswith("pass@")} - {1})
        head = ["task", "problems", "samples", "pass@1", "± SE", "95% CI", *(f"pass@{kk}" for kk in ks)]
        head += [
            "cons@k",
            "cons@k 95% CI",
            "format",
            "truncated",
            "avg out tokens",
            "in tokens",
            "out tokens",
        ]
        head += ["$"]
        rows = []
        for name, t in generative.items():
            bars, cons = t["error_bars"], f"cons@{t['k']}"
            row = [name, f"{t['complete_problems']}/{t['problems']}", _samples(t)]
            row += [_pct(t["pass@1"]), _se(bars, "pass@1"), _ci(bars, "pass@1")]
            row += [_pct(t.get(f"pass@{kk}")) for kk in ks] + [_pct(t[cons]), _ci(bars, cons)]
            row += [_pct(t["format_rate"]), _pct(t["truncated_rate"]), _num(t["mean_completion_tokens"])]
            row += [f"{t['prompt_tokens']:,}", f"{t['completion_tokens']:,}", f"{t['cost_usd']:.4f}"]
            rows.append(row)
        parts.append(table(head, rows))
    if likelihood:
        rows = [
            [n, f"{t['complete_problems']}/{t['problems']}", _pct(t["acc"]), _se(t["error_bars"], "acc")]
            + [_ci(t["error_bars"], "acc"), _pct(t["acc_norm"]), _ci(t["error_bars"], "acc_norm")]
            for n, t in likelihood.items()
        ]
        head = ["task (likelihood)", "problems", "acc", "± SE", "95% CI", "acc_norm", "acc_norm 95% CI"]
        parts.append(table(head, rows))
    notes = error_bar_notes(summary)
    if notes:
        parts.append("\n".join(notes) + "\n")
    total = summary["total"]
    parts.append(
        f"Total: {total['samples']:,} samples, {total['prompt_tokens']:,} input + "
        f"{total['completion_tokens']:,} output tokens = ${total['cost_usd']:.4f} at "
        f"${summary['protocol']['prices_per_million']['input']:g} / "
        f"${summary['protocol']['prices_per_million']['output']:g} per million input / output tokens.\n"
    )
    return "\n".join(parts)


def error_bar_notes(summary: dict[str, Any]) -> list[str]:
    """Per generative task: pass@1's standard error on these very problems (sampling alone) and, with
    several seeds, each seed's pass@1 and their spread."""
    notes = []
    for name, t in summary["tasks"].items():
        if t["mode"] != "generate":
            continue
        rerun = t["error_bars"]["pass@1"].get("rerun_se")
        parts = []
        if rerun is not None:
            parts.append(f"pass@1 ±{100 * rerun:.1f} from sampling alone (these problems, new seeds)")
        if t.get("seeds"):
            seeds = ", ".join(_pct(x) for x in t["per_seed"]["pass@1"])
            sd = "n/a" if t["seed_sd"] is None else f"{100 * t['seed_sd']:.1f}"
            parts.append(f"pass@1 per seed {seeds} (sd {sd})")
        if parts:
            notes.append(f"- {name}: " + "; ".join(parts) + ".")
    return notes


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}"


def write_problem_table(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """problems.csv: one row per problem (`problem_table`)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=PROBLEM_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "pass_rate": f"{row['pass_rate']:.6g}"})


def problem_sections(rows: Sequence[dict[str, Any]]) -> list[str]:
    """report.md's per-problem tables (the first REPORT_PROBLEM_ROWS problems of each task)."""
    parts = []
    for label in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == label]
        shown = [
            [r["problem_id"], str(r["samples"]), str(r["correct"]), _pct(r["pass_rate"])]
            + [_cell(r["majority_answer"]), "yes" if r["majority_correct"] else "no"]
            for r in mine[:REPORT_PROBLEM_ROWS]
        ]
        head = ["problem", "samples", "correct", "pass rate", "majority answer", "majority correct"]
        more = len(mine) - len(shown)
        parts += [f"### {label}", "", table(head, shown)]
        if more > 0:
            parts.append(f"... and {more} more problems in problems.csv.\n")
    return parts


def _cell(text: str | None) -> str:
    """A table cell: no answer shows as a dash, pipes and newlines escaped, long answers cut."""
    if text is None:
        return "-"
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "..."


def protocol_line(p: dict[str, Any]) -> str:
    name = f" {p['name']}" if p.get("name") else ""
    ks = sorted({p["k"], *p.get("task_k", {}).values()})
    samples = (
        f"k = {p['k']}" if len(ks) == 1 else "k = " + ", ".join(f"{v} ({t})" for t, v in p["task_k"].items())
    )
    seeds = (
        f" x {p['seeds']} seeds ({p['seed']} to {p['seed'] + p['seeds'] - 1})"
        if p.get("seeds", 1) > 1
        else ""
    )
    extras = ""
    if p.get("think_prefix"):
        extras += f", replies forced to start with {p['think_prefix']!r}"
    if p.get("instruction"):
        extras += ', questions ending with "' + p["instruction"] + '"'
    extras += ", no system prompt" if not p.get("system") else ", a system prompt"
    return (
        f"Protocol{name}: {samples} samples per problem{seeds}, temperature {p['temperature']:g}, "
        f"top-p {p['top_p']:g}, at most {p['max_new_tokens']:,} new tokens, think = {p['think']}{extras}, "
        f"seed {p['seed']}, split `{p['split']}`. pass@1 is the mean correctness over the samples; pass@k "
        "the unbiased estimator; cons@k the majority vote of each run's k samples (ties to the answer given "
        "first). Percentages. ± SE: the standard error over problems; 95% CI: a bootstrap over problems "
        f"({p.get('bootstrap', 2000):,} resamples; with seeds, of each problem's mean over them): how far the "
        "score could move on another draw of problems like these (nanoseek.eval.stats, docs/eval.md)."
    )


def write_outputs(
    out_dir: str | Path,
    summary: dict[str, Any],
    cfg: EvalConfig,
    timing: dict[str, float],
    problems: Sequence[dict[str, Any]] = (),
) -> None:
    """summary.json, problems.csv (the per-problem table) and report.md (with the compute time and its
    device-hour $) into `out_dir`."""
    out_dir = Path(out_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_problem_table(out_dir / "problems.csv", problems)
    hours = timing["seconds"] / 3600
    lines = [
        f"# nanoseek eval: {summary['model'] or out_dir.name}",
        "",
        protocol_line(summary["protocol"]),
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
    if problems:
        lines += ["", "## Per problem", "", "All of them in problems.csv.", "", *problem_sections(problems)]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
