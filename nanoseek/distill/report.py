"""The distillation report: teacher vs student accuracy and size, what rejection sampling kept, and the
cost of every step (report.md beside distill.json).

    write_report("runs/distill", result)        # result: what run_distill returns / distill.json holds
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nanoseek.markdown import percent, table


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
        table(
            ["model", "active params", "pass@1", f"pass@{k}", f"cons@{k}", "avg out tokens"],
            [
                [
                    f"{name}: `{m['model']}`",
                    _int(m["active_params"]),
                    percent(m["pass@1"]),
                    percent(m.get(f"pass@{k}")),
                    percent(m.get(f"cons@{k}")),
                    f"{m['mean_completion_tokens'] or 0:.0f}",
                ]
                for name, m in (("teacher", t), ("student", s))
            ],
        ),  # fmt: skip
    ]
    lines += [
        f"Student / teacher: pass@1 ratio **{_ratio(r['ratio'])}**, active-parameter ratio "
        f"{_ratio(r['size_ratio'])}.",
        "",
        "## Rejection sampling",
        "",
        f"The teacher answered {tr['problems']:,} train problems x {r['config']['k']} samples = "
        f"{tr['samples']:,} traces (train-split pass@1 {percent(tr['pass@1'])}): {tr['correct']:,} verified "
        f"correct, {tr['well_formed']:,} of them in R1's format, {tr['kept']:,} kept (at most "
        f"{r['config']['max_per_problem'] or 'all'} per problem), covering {tr['problems_covered']:,} problems.",
        "",
        "## Cost of each step",
        "",
    ]
    c = sft["cost"]
    rows = [
        [name, f"{m['prompt_tokens']:,} / {m['completion_tokens']:,}", f"{m['cost_usd']:.4f}",
         f"{m['seconds']:.1f}", f"{m['device_hours']:.4g}", f"{m['device_usd']:.4g}"]
        for name, m in (("teacher traces", tr), ("teacher eval", t), ("student eval", s))
    ] + [[f"student SFT ({sft['steps']} steps)", f"{c['tokens']:,} trained", "-", f"{c['wall_seconds']:.1f}",
          f"{c['device_hours']:.4g}", f"{c['dollars']:.4g}"]]  # fmt: skip
    lines += [table(["step", "tokens in / out", "API-price $", "wall s", "device-hours", "device $"], rows)]
    lines += [
        f"API-price $ at ${r['config']['input_price']:g} / ${r['config']['output_price']:g} per million input / "
        "output tokens (DeepSeek-R1's launch prices by default); device $ at "
        f"${r['config']['device_hour_price']:g} per device-hour for generation, and the training loop's price for SFT "
        f"(its report: `{sft['run_dir']}/report.md`).",
    ]
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
