"""The distillation report: teacher vs student accuracy and size, what rejection sampling kept, and the
cost of every step (report.md beside distill.json).

    write_report("runs/distill", result)        # result: what run_distill returns / distill.json holds
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _int(x: int | None) -> str:
    return "n/a" if x is None else f"{x:,}"


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def write_report(out_dir: str | Path, r: dict[str, Any]) -> Path:
    t, s, tr, sft = r["teacher"], r["student"], r["traces"], r["sft"]
    k = r["config"]["eval_k"]
    lines = [
        f"# nanoseek distill: {r['task']}",
        "",
        "R1's recipe: sample the teacher k times per training problem, keep the verified traces "
        "(rejection sampling), SFT a small dense student on them, evaluate both the same way "
        f"(test split, {k} samples per problem, temperature {r['config']['eval_temperature']:g}).",
        "",
        f"| model | active params | pass@1 | pass@{k} | cons@{k} | avg out tokens |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in (("teacher", t), ("student", s)):
        lines.append(
            f"| {name}: `{m['model']}` | {_int(m['active_params'])} | {_pct(m['pass@1'])} | "
            f"{_pct(m.get(f'pass@{k}'))} | {_pct(m.get(f'cons@{k}'))} | {m['mean_completion_tokens'] or 0:.0f} |"
        )
    lines += [
        "",
        f"Student / teacher: pass@1 ratio **{_ratio(r['ratio'])}**, active-parameter ratio "
        f"{_ratio(r['size_ratio'])}.",
        "",
        "## Rejection sampling",
        "",
        f"The teacher answered {tr['problems']:,} train problems x {r['config']['k']} samples = "
        f"{tr['samples']:,} traces (train-split pass@1 {_pct(tr['pass@1'])}): {tr['correct']:,} verified "
        f"correct, {tr['well_formed']:,} of them in R1's format, {tr['kept']:,} kept (at most "
        f"{r['config']['max_per_problem'] or 'all'} per problem), covering {tr['problems_covered']:,} problems.",
        "",
        "## Cost of each step",
        "",
        "| step | tokens in / out | API-price $ | wall s | device-hours | device $ |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in (("teacher traces", tr), ("teacher eval", t), ("student eval", s)):
        lines.append(
            f"| {name} | {m['prompt_tokens']:,} / {m['completion_tokens']:,} | {m['cost_usd']:.4f} | "
            f"{m['seconds']:.1f} | {m['device_hours']:.4g} | {m['device_usd']:.4g} |"
        )
    c = sft["cost"]
    lines.append(
        f"| student SFT ({sft['steps']} steps) | {c['tokens']:,} trained | - | {c['wall_seconds']:.1f} | "
        f"{c['device_hours']:.4g} | {c['dollars']:.4g} |"
    )
    lines += [
        "",
        f"API-price $ at ${r['config']['input_price']:g} / ${r['config']['output_price']:g} per million input / "
        "output tokens (DeepSeek-R1's launch prices by default); device $ at "
        f"${r['config']['device_hour_price']:g} per device-hour for generation, and the training loop's price for SFT "
        f"(its report: `{sft['run_dir']}/report.md`).",
    ]
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
