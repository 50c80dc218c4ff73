"""Plots and report.md of GRPO runs, and the side-by-side figures of a GRPO run against its control.

    paths = plot_grpo(read_metrics(run_dir / "metrics.jsonl"), run_dir)   # grpo_*.png in the run dir
    write_grpo_report(run_dir, command, cfg, model_config, summary, records, paths)
    plot_comparison({"GRPO": records_a, "random-reward control": records_b}, "docs/img", prefix="r1_zero_micro")

Per-step records (`type` "train") carry reward, accuracy, response_length, kl, entropy, clip_fraction,
zero_variance, ...; held-out evaluations (`type` "eval") carry pass@1 and response_length. Plots use
matplotlib's Agg backend.
"""

from __future__ import annotations

from pathlib import Path

from nanoseek.markdown import table
from nanoseek.train.cost import cost_markdown
from nanoseek.train.report import pyplot, save_figure


def _series(records: list[dict], kind: str, key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in records if r.get("type") == kind and r.get(key) is not None]
    return [r["step"] for r in rows], [r[key] for r in rows]


def plot_grpo(records: list[dict], out_dir: str | Path) -> list[Path]:
    """grpo_accuracy.png (held-out pass@1, training reward and accuracy), grpo_length.png (response
    length) and grpo_dynamics.png (KL, entropy, clip fraction, zero-variance groups)."""
    plt = pyplot()
    out_dir = Path(out_dir)
    written = []

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*_series(records, "train", "reward"), lw=1, alpha=0.7, label="training reward")
    ax.plot(*_series(records, "train", "accuracy"), lw=1, alpha=0.7, label="training accuracy")
    ax.plot(*_series(records, "eval", "pass@1"), "o-", label="held-out pass@1")
    ax.set_xlabel("GRPO step")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(save_figure(fig, out_dir / "grpo_accuracy.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(*_series(records, "train", "response_length"), lw=1, label="rollouts (sampled)")
    ax.plot(*_series(records, "eval", "response_length"), "o-", label="held-out (eval decoding)")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("response length (tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(save_figure(fig, out_dir / "grpo_length.png"))

    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
    for ax, (key, label) in zip(
        axes.flat,
        [
            ("kl", "KL to reference (k3)"),
            ("entropy", "policy entropy (nats/token)"),
            ("clip_fraction", "clipped token share"),
            ("zero_variance", "zero-variance group share"),
        ],
    ):
        ax.plot(*_series(records, "train", key), lw=1)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("GRPO step")
    written.append(save_figure(fig, out_dir / "grpo_dynamics.png"))
    return written


def plot_comparison(runs: dict[str, list[dict]], out_dir: str | Path, prefix: str) -> list[Path]:
    """{prefix}_accuracy.png (held-out pass@1 per run) and {prefix}_length.png (response length per run:
    rollouts as thin lines, held-out as markers)."""
    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, records in runs.items():
        steps, values = _series(records, "eval", "pass@1")
        ax.plot(steps, [100 * v for v in values], "o-", label=label)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("held-out pass@1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(save_figure(fig, out_dir / f"{prefix}_accuracy.png", dpi=110))

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, records) in enumerate(runs.items()):
        color = f"C{i}"
        ax.plot(
            *_series(records, "train", "response_length"),
            lw=1,
            alpha=0.5,
            color=color,
            label=f"{label}: rollouts",
        )
        ax.plot(*_series(records, "eval", "response_length"), "o-", color=color, label=f"{label}: held-out")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("response length (tokens)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    written.append(save_figure(fig, out_dir / f"{prefix}_length.png", dpi=110))
    return written


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def write_grpo_report(
    run_dir: str | Path,
    command: str,
    cfg,
    model_config,
    summary: dict,
    records: list[dict],
    plots: list[Path],
) -> Path:
    """report.md: the algorithm's settings, held-out pass@1 before and after, final-step dynamics,
    plots, example completions and the cost."""
    run_dir = Path(run_dir)
    r, g, w = cfg.rollout, cfg.grpo, cfg.reward
    train = [x for x in records if x.get("type") == "train"]
    last = train[-1] if train else {}
    mc = model_config
    experts = getattr(mc, "n_routed_experts", None)  # a family without routers has no such field
    policy = f"`{cfg.model.init}`: {mc.num_hidden_layers} layers, hidden {mc.hidden_size}"
    overview = [
        ("policy", policy + (f", {experts} routed experts" if experts is not None else "")),
        (
            "task",
            f"`{cfg.task.name}` ({cfg.task.train_split} prompts; held out: {summary['eval_problems']} {cfg.task.eval_split} problems)",
        ),
        (
            "template",
            "R1-Zero plain-text prompt, <answer> tags" if r.template == "r1_zero" else "chat format (R1)",
        ),
        (
            "rollouts",
            f"G = {r.group_size} samples x {r.prompts_per_step} prompts per step, T = {r.temperature:g}, top-p {r.top_p:g}, <= {r.max_new_tokens} tokens",
        ),
        (
            "rewards",
            f"RANDOM: Bernoulli({w.random_p:g}) (control run)"
            if w.random
            else f"{w.correct_weight:g} x correct + {w.format_weight:g} x format, overlong: {w.overlong}",
        ),
        ("advantage / aggregation", f"{g.advantage} / {g.aggregation}"),
        ("clip", f"[1 - {g.eps_low:g}, 1 + {g.eps_high:g}]"),
        (
            "KL",
            f"beta = {g.beta:g}"
            + (" (no reference model)" if g.beta == 0 else " (k3 to the frozen initial policy)"),
        ),
        ("updates", f"mu = {g.mu} per rollout batch, micro-batches of {g.micro_batch} sequences"),
        ("dynamic sampling", f"on (up to {g.max_refills} refills)" if g.dynamic_sampling else "off"),
        (
            "optimizer",
            f"AdamW lr {cfg.train.lr:g} ({cfg.train.schedule}), wd {cfg.train.weight_decay:g}, clip {cfg.train.grad_clip:g}",
        ),
        ("steps", str(summary["step"])),
        ("model directory", f"`{summary['model_dir']}`"),
    ]
    results = [
        (
            "held-out pass@1, start -> end",
            f"{_fmt(summary['start_pass@1'])} -> {_fmt(summary['final_pass@1'])}",
        ),
        (
            "held-out response length (tokens), start -> end",
            f"{_fmt(summary['start_response_length'], 1)} -> {_fmt(summary['final_response_length'], 1)}",
        ),
    ]
    for key, label in [
        ("reward", "training reward (last step)"),
        ("accuracy", "training accuracy (last step)"),
        ("kl", "KL (last step)"),
        ("entropy", "entropy (last step)"),
        ("clip_fraction", "clip fraction (last step)"),
        ("zero_variance", "zero-variance groups (last step)"),
    ]:
        if key in last:
            results.append((label, _fmt(last[key])))
    parts = [
        f"# nanoseek grpo: {run_dir.name}\n",
        f"```\n{command}\n```\n",
        "## Run\n",
        table(["", ""], overview),
    ]
    parts += ["## Results\n", table(["", ""], results)]
    parts += [f"![{p.stem}]({p.name})\n" for p in plots]
    if summary.get("examples"):
        parts.append("## Held-out completions (final model)\n")
        for ex in summary["examples"]:
            mark = "correct" if ex["correct"] else "wrong"
            parts.append(
                f"**{ex['prompt']}** (reference {ex['reference']}, {mark})\n\n```\n{ex['completion']}\n```\n"
            )
    parts += ["## Cost\n", cost_markdown(summary["cost"])]
    path = run_dir / "report.md"
    path.write_text("\n".join(parts))
    return path
