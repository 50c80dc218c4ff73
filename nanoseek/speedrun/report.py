"""The speedrun's report.md: one table of every stage, the plots, serving cost, and DeepSeek's figures.

    path = write_report(ctx, records)      # records: stage name -> its stages/<name>.json record

Plots (PNG, in the run directory, linked from the report): loss.png (pretrain, SFT and student SFT
train loss), reward.png (GRPO reward and training accuracy per step), accuracy.png (held-out pass@1
and cons@k per stage; GRPO's greedy held-out pass@1 during training), response_length.png (GRPO's
rollout length per step; mean held-out response length per stage).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nanoseek.eval.compare import compare_runs
from nanoseek.eval.config import R1_CACHED_INPUT_PRICE, R1_INPUT_PRICE, R1_OUTPUT_PRICE
from nanoseek.markdown import percent, table
from nanoseek.speedrun.stages import LABELS, MODEL_STAGES, Context, model_record
from nanoseek.train.cost import DEEPSEEK_V3, human
from nanoseek.train.report import pyplot, read_metrics, save_figure

V3_PARAMS = (671e9, 37e9)  # total, active per token (DeepSeek-V3 technical report)
V3_TOKENS = 14.8e12  # pretraining tokens
SHORT = {
    "pretrain": "MoE base",
    "student_base": "dense base",
    "sft": "SFT",
    "grpo": "GRPO",
    "distill": "student",
}


def _metrics(records: dict[str, Any], name: str) -> list[dict]:
    rec = model_record(records, name)
    return read_metrics(Path(rec["run_dir"]) / "metrics.jsonl") if rec else []


def plots(ctx: Context, records: dict[str, Any]) -> list[Path]:
    plt = pyplot()

    out, written = ctx.out, []
    k = ctx.cfg.task.k

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (("pretrain", "MoE pretrain"), ("student_base", "dense student pretrain"),
                        ("sft", "cold-start SFT"), ("distill", "student SFT on GRPO traces")):  # fmt: skip
        train = [r for r in _metrics(records, name) if r.get("type") == "train"]
        if train:
            ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label=label)
    ax.set(xlabel="step", ylabel="train loss (nats/token)", yscale="log", title="loss")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(save_figure(fig, out / "loss.png", dpi=90))

    grpo = [r for r in _metrics(records, "grpo") if r.get("type") == "train"]
    grpo_eval = [r for r in _metrics(records, "grpo") if r.get("type") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if grpo:
        ax.plot([r["step"] for r in grpo], [r["reward"] for r in grpo], label="mean reward")
        ax.plot([r["step"] for r in grpo], [r["accuracy"] for r in grpo], label="rollout accuracy")
    ax.set(xlabel="GRPO step", ylabel="per sample", title="GRPO reward (training rollouts)")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(save_figure(fig, out / "reward.png", dpi=90))

    stages = [s for s in MODEL_STAGES if f"eval_{s}" in records]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    xs = range(len(stages))
    a1.bar([x - 0.2 for x in xs], [records[f"eval_{s}"]["pass@1"] or 0 for s in stages], 0.4, label="pass@1")
    a1.bar([x + 0.2 for x in xs], [records[f"eval_{s}"].get(f"cons@{k}") or 0 for s in stages], 0.4,
           label=f"cons@{k}")  # fmt: skip
    a1.set_xticks(list(xs), [SHORT[s] for s in stages])
    a1.set(ylabel="held-out accuracy", ylim=(0, 1), title="held-out accuracy per stage")
    a1.legend()
    if grpo_eval:
        a2.plot([r["step"] for r in grpo_eval], [r["pass@1"] for r in grpo_eval], "o-")
    a2.set(xlabel="GRPO step", ylabel="greedy pass@1", ylim=(0, 1), title="held-out pass@1 during GRPO")
    a2.grid(alpha=0.3)
    written.append(save_figure(fig, out / "accuracy.png", dpi=90))

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    if grpo:
        a1.plot([r["step"] for r in grpo], [r["response_length"] for r in grpo])
    a1.set(xlabel="GRPO step", ylabel="tokens", title="GRPO rollout response length")
    a1.grid(alpha=0.3)
    a2.bar(list(xs), [records[f"eval_{s}"]["mean_completion_tokens"] or 0 for s in stages])
    a2.set_xticks(list(xs), [SHORT[s] for s in stages])
    a2.set(ylabel="tokens", title="mean held-out response length")
    written.append(save_figure(fig, out / "response_length.png", dpi=90))
    return written


def with_interval(result: dict[str, Any], metric: str) -> str:
    """A held-out figure and its 95% interval over problems: "61.1% [55.0, 67.2]" (the figure alone for
    an eval recorded before evals had error bars)."""
    ci = (result.get("error_bars") or {}).get(metric, {}).get("ci95")
    figure = percent(result.get(metric))
    return figure if ci is None else f"{figure} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def grpo_gain(ctx: Context) -> str:
    """GRPO against its SFT start on the same held-out problems, paired (`nanoseek eval --compare`)."""
    try:
        d = compare_runs(ctx.out / "eval" / "sft", ctx.out / "eval" / "grpo")["tasks"][ctx.cfg.task.name]
    except (FileNotFoundError, ValueError, KeyError):
        return ""
    lo, hi = d["ci95"]
    verdict = "beyond noise" if d["beyond_noise"] else "within noise"
    return (
        f" Paired over the same {d['problems']} problems: {100 * d['difference']:+.1f} points, 95% interval "
        f"[{100 * lo:+.1f}, {100 * hi:+.1f}] ({verdict})."
    )


def stage_table(ctx: Context, records: dict[str, Any]) -> str:
    """THE table: one row per model-making stage, and the whole run."""
    k = ctx.cfg.task.k
    benches = sorted(records.get("benchmarks", {}).get("files", {}))
    head = ["stage", "params", "active params", "tokens", "time", "device-hours", "$", "held-out pass@1",
            f"cons@{k}", "mean response length", *[f"{b} pass@1" for b in benches]]  # fmt: skip
    rows = []
    for name in MODEL_STAGES:
        rec, ev = model_record(records, name), records.get(f"eval_{name}")
        if rec is None:
            continue
        ev = ev or {}
        row = [LABELS[name], f"{rec['params']:,}", f"{rec['active_params']:,}", f"{rec['tokens']:,}",
               f"{rec['seconds']:.0f} s", f"{rec['device_hours']:.4f}", f"${rec['dollars']:.5f}",
               with_interval(ev, "pass@1"), with_interval(ev, f"cons@{k}"),
               "n/a" if ev.get("mean_completion_tokens") is None else f"{ev['mean_completion_tokens']:.1f} tokens"]  # fmt: skip
        for b in benches:
            result = records["benchmarks"]["results"].get(name, {}).get(b, {})
            row.append(with_interval(result, "pass@1"))
        rows.append(row)
    total = sum(r.get("stage_seconds", 0.0) for r in records.values())
    hours = total / 3600  # one machine
    rows.append(["**whole run** (all stages, evals included)", "", "", "", f"**{total / 60:.1f} min**",
                 f"{hours:.4f}", f"${hours * ctx.cfg.run.price_per_device_hour:.5f}", "", "", "",
                 *["" for _ in benches]])  # fmt: skip
    return table(head, rows)


def load_note(records: dict[str, Any]) -> str:
    loads = [r["load_average"] for r in records.values() if "load_average" in r]
    if not loads:
        return ""
    return (
        f" Machine load while it ran: 5-minute load average {min(loads):.1f} to {max(loads):.1f} on "
        f"{os.cpu_count()} cores (other jobs share this machine; times scale with it)."
    )


def deepseek_table(ctx: Context, records: dict[str, Any]) -> str:
    made = [r for r in (model_record(records, s) for s in MODEL_STAGES) if r]
    ours_hours = sum(r["device_hours"] for r in made)
    ours_usd = sum(r["dollars"] for r in made)
    base = records.get("pretrain", {})
    serve = records.get("serving", {})
    rows = [
        ("training compute", f"{DEEPSEEK_V3['device_hours'] / 1e6:.3f}M H800 GPU-hours (V3, all stages)",
         f"{ours_hours:.4f} CPU-hours (all five trainings)",
         f"{ours_hours / DEEPSEEK_V3['device_hours']:.1e}"),
        ("training cost", f"${DEEPSEEK_V3['dollars'] / 1e6:.3f}M at $2/GPU-hour",
         f"${ours_usd:.5f} at ${ctx.cfg.run.price_per_device_hour:g}/device-hour",
         f"{ours_usd / DEEPSEEK_V3['dollars']:.1e}"),
        ("parameters (total / active)", f"{V3_PARAMS[0] / 1e9:.0f}B / {V3_PARAMS[1] / 1e9:.0f}B",
         f"{human(base.get('params', 0))} / {human(base.get('active_params', 0))}",
         f"{base.get('params', 0) / V3_PARAMS[0]:.1e}"),
        ("pretraining tokens", f"{human(V3_TOKENS)}", f"{human(base.get('tokens', 0))}",
         f"{base.get('tokens', 0) / V3_TOKENS:.1e}"),
    ]  # fmt: skip
    if serve.get("cached_input_tokens"):
        rows.append(
            ("$ per million input tokens, cache hit", f"${R1_CACHED_INPUT_PRICE} (R1 API, cache hit)",
             f"${serve['cached_input_usd_per_million']:.4f} (measured here)",
             f"{serve['cached_input_usd_per_million'] / R1_CACHED_INPUT_PRICE:.1e}"),
        )  # fmt: skip
    if serve:
        rows += [
            ("$ per million input tokens", f"${R1_INPUT_PRICE} (R1 API, cache miss)",
             f"${serve['input_usd_per_million']:.4f} (measured here)",
             f"{serve['input_usd_per_million'] / R1_INPUT_PRICE:.1e}"),
            ("$ per million output tokens", f"${R1_OUTPUT_PRICE} (R1 API)",
             f"${serve['output_usd_per_million']:.4f} (measured here)",
             f"{serve['output_usd_per_million'] / R1_OUTPUT_PRICE:.1e}"),
        ]  # fmt: skip
    return table(["", "DeepSeek (published)", "this speedrun", "ratio"], rows)


def serving_hit_row(serve: dict[str, Any]) -> list[list[str]]:
    """The serving table's cache-hit row: prompt tokens served from the prefix cache."""
    if not serve.get("cached_input_tokens"):
        return []
    per_token = serve["cached_input_seconds_per_token"]
    return [
        [
            "input, cache hit (prefix cache)",
            f"{serve['cached_input_tokens']:,}",
            f"{1 / per_token:,.0f}" if per_token > 0 else "-",
            f"${serve['cached_input_usd_per_million']:.4f}",
        ]
    ]


def serving_notes(serve: dict[str, Any], align: dict[str, Any] | None = None) -> str:
    """The lines under the serving table: how hits were measured, and the MTP drafts' acceptance
    (and what re-aligning the draft head after GRPO changed)."""
    notes = ""
    if serve.get("cached_input_tokens"):
        notes += (
            f"\nCache hit: the same prompts sent again to an engine with the prefix cache; "
            f"{serve['cache_hit_rate']:.0%} of their tokens were served from it (whole 16-token blocks; "
            "the rest, and the last prompt token, are recomputed and priced as misses).\n"
        )
    if serve.get("mtp_acceptance_greedy") is not None:
        notes += (
            f"\nMTP: the model's drafts are accepted {serve['mtp_acceptance_greedy']:.1%} of the time at "
            "temperature 0 on these prompts (`nanoseek serve` speculates when a startup probe shows "
            "that it pays; docs/engine.md).\n"
        )
    if align:
        notes += (
            f"The draft head was re-aligned with the GRPO model after GRPO ({align['steps']} steps on its "
            f"greedy answers to {align['answers']} train problems, {align['seconds']:.0f} s): greedy "
            f"acceptance on {align['held_back']} held-back problems {align['acceptance_before']:.1%} -> "
            f"{align['acceptance_after']:.1%}"
            + ("" if align["saved"] else " (worse: the GRPO model's own head was kept)")
            + ".\n"
        )
    return notes


def next_commands(ctx: Context, records: dict[str, Any]) -> list[str]:
    """How to use the result: chat, serve, arena (the commands' real flags)."""

    def model(name: str, missing: str) -> str:
        rec = records.get(name)
        if not rec:
            return missing
        latest = Path(rec["run_dir"]) / "model"  # the run directory's link to its newest model
        return str(latest) if latest.exists() else rec["model_dir"]

    grpo, student = model("grpo", "MODEL"), model("distill", "STUDENT")
    arena = ctx.out / "arena.toml"
    return [
        f"nanoseek chat --model {grpo}",
        f"nanoseek serve --model {grpo}   # web chat and API at http://127.0.0.1:8000",
        f"nanoseek arena serve --contestants {arena}   # blind battles at http://127.0.0.1:8001",
        f'nanoseek arena headless --contestants {arena} --task "{ctx.cfg.task.name}" --battles 50',
        f"nanoseek chat --model {student}   # the distilled dense student",
    ]


def write_arena_file(ctx: Context, records: dict[str, Any]) -> Path:
    """The contestants file of the arena commands: every stage's model."""
    lines = []
    for name in ("sft", "grpo", "distill"):
        if name in records:
            path = Path(records[name]["model_dir"]).resolve()
            lines += [
                "[[contestants]]",
                f'name = "speedrun-{name}"',
                'kind = "checkpoint"',
                f'path = "{path}"',
            ]
            lines += [f"params = {{ max_new_tokens = {ctx.cfg.task.max_new_tokens} }}", ""]
    out = ctx.out / "arena.toml"
    out.write_text("\n".join(lines))
    return out


def write_report(ctx: Context, records: dict[str, Any]) -> Path:
    cfg, out = ctx.cfg, ctx.out
    pngs = plots(ctx, records)
    write_arena_file(ctx, records)
    t = cfg.task
    ev = {s: records.get(f"eval_{s}", {}).get("pass@1") for s in MODEL_STAGES}
    notes = []
    if ev["sft"] is not None and ev["grpo"] is not None:
        notes.append(
            f"GRPO over its SFT start: {100 * (ev['grpo'] - ev['sft']):+.1f} points of held-out pass@1."
            + grpo_gain(ctx)
        )
    if ev["grpo"] and ev["distill"] is not None:
        notes.append(f"The student reaches {100 * ev['distill'] / ev['grpo']:.0f}% of its teacher's pass@1.")
    data = records.get("data", {})
    serve = records.get("serving")
    parts = [
        f"# nanoseek speedrun: `{out}`\n",
        "The whole DeepSeek-R1 story at toy scale on this machine: tokenizer, pretraining of a DeepSeek-V3 "
        "MoE (MLA + DeepSeekMoE + MTP), cold-start SFT in R1's chat format, GRPO (the R1 recipe), "
        "distillation into a dense student, evaluation of every stage and the serving cost.\n",
        f"Held-out evaluation: the first {t.eval_problems} problems of the test split of `{t.name}` "
        f"(never trained on), {t.k} samples each at temperature {t.temperature}, top-p {t.top_p}, "
        f"{t.max_new_tokens} new tokens at most: pass@1 is the mean correctness over the {t.k} samples, "
        f"cons@{t.k} the majority vote (DeepSeek-R1's protocol); in brackets their 95% intervals, a "
        "bootstrap over the problems (`nanoseek eval`'s error bars, docs/eval.md). The base model has never "
        "seen the chat format, so its row shows what pretraining alone gives under that protocol.\n",
        "## Every stage\n",
        stage_table(ctx, records),
        "tokens: trained tokens (GRPO: generated rollout tokens); time: the stage's wall time (the two bases "
        f"train side by side, one process per core); device-hours and $ at ${cfg.run.price_per_device_hour:g} "
        "per hour of one process (distill includes the teacher's trace generation); the whole-run row counts "
        "the machine's wall time. " + " ".join(notes) + load_note(records) + "\n",
        "## Plots\n",
        *[f"![{p.stem}]({p.name})\n" for p in pngs],
    ]
    if data:
        p, c = data["pretrain"], data["cold_start"]
        parts += [
            "## Data\n",
            f"- pretraining corpus: {p['documents']:,} documents ({p['shortcuts']:,} answer without the worked "
            "steps) from the train split\n"
            f"- cold-start SFT: {c['conversations']:,} conversations, {c['shortcuts']:,} of them with only the "
            f"conclusion as reasoning, {cfg.sft.steps} steps: the model learns the chat format, not yet to solve "
            "the task reliably; GRPO's reward does the rest\n",
        ]
    if records.get("distill", {}).get("fallback"):
        parts.append(f"- distillation: **{records['distill']['fallback']}**\n")
    elif "distill" in records:
        d = records["distill"]
        parts.append(
            f"- distillation: the GRPO model's samples on {d['traces'].get('samples', 0):,} train attempts, "
            f"{d['traces'].get('kept', 0):,} verified traces kept (rejection sampling) for the student\n"
        )
    if serve:
        parts += [
            "\n## Serving cost on this machine (native engine)\n",
            f"{serve['requests']} held-out chat requests to the GRPO model, {serve['concurrency']} decoded "
            f"together; prefill measured alone (max_new_tokens = 1), decode as the rest:\n\n"
            + table(
                ["", "tokens", "tokens/s", "$ per million"],
                [
                    [
                        f"{name} ({step})",
                        f"{serve[f'{name}_tokens']:,}",
                        f"{serve[f'{name}_tokens_per_s']:,.0f}",
                        f"${serve[f'{name}_usd_per_million']:.4f}",
                    ]
                    for name, step in (("input", "prefill"), ("output", "decode"))
                ]
                + serving_hit_row(serve),
            )  # fmt: skip
            + serving_notes(serve, records.get("grpo", {}).get("mtp_align")),
        ]
    if "benchmarks" in records:
        b = cfg.benchmarks
        parts.append(
            f"\nGSM8K / MATH-500 columns: the first {b.problems} problems, {b.k} sample(s), {b.max_new_tokens} "
            "new tokens. A model of this size trained only on synthetic arithmetic scores near zero there; "
            "the columns show it, they are not a claim.\n"
        )
    parts += [
        "\n## Beside DeepSeek's published figures\n",
        deepseek_table(ctx, records),
        "\nThe ratios are the honest scale gap: this run is a working miniature of the pipeline, not a "
        "competitor. DeepSeek's prices include margin and serve a 671B model on H800s; ours is a sub-million-"
        "parameter model on a laptop-class CPU at a nominal hourly price.\n",
        "\n## Use the result\n",
        "```bash\n" + "\n".join(next_commands(ctx, records)) + "\n```\n",
        "\nEach stage's own report: "
        + ", ".join(
            f"[{s}]({Path(model_record(records, s)['run_dir']).relative_to(out)}/report.md)"
            for s in MODEL_STAGES
            if model_record(records, s)
        )
        + "; the resolved recipe: [speedrun.toml](speedrun.toml).\n",
    ]
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path
