"""`nanoseek recipe`: the public R1 results as one command each.

    nanoseek recipe list                                   # the recipes, their hardware, time and cost
    nanoseek recipe run r1_zero_gsm8k --dry-run            # the plan, the estimate's arithmetic, the figures
    nanoseek recipe run r1_zero_gsm8k                      # run it (rerun the same command to continue)
    nanoseek recipe run r1_zero_gsm8k --set models.base=/models/Qwen2.5-0.5B --set grpo.train.max_steps=50
    nanoseek recipe slice --input Jiayi-Pan/Countdown-Tasks-3to4 --start 0 --stop 1000 --out data/cd

--dry-run prints, without touching a network or a GPU: each stage's command (the stage's own CLI, so it
can be run alone), its data and model, the time estimate with its arithmetic (`nanoseek.repro.estimate`),
the total time and cost, and the published figures the recipe should reproduce, with their source.
`--set` takes models.X, datasets.X, run.X, hardware.X, assumptions.X and STAGE.KEY (`nanoseek.repro.recipe`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nanoseek.repro.recipe import RecipeError, load_recipe, recipe_names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nanoseek recipe",
        description="Reproduce a public R1 result with one command: models, data, stages, hardware, expected "
        "time and cost, and the published figures, in one recipe file (nanoseek/recipes/repro/).",
    )
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the recipes, with their hardware, estimated time and cost")
    run = sub.add_parser("run", help="run a recipe (or print its plan with --dry-run)")
    run.add_argument("name", help="a recipe name (`nanoseek recipe list`) or a path to a recipe .toml")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan, the estimate and the published figures; run nothing",
    )
    run.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override: models.X=PATH, datasets.X=PATH, run.device=cpu, hardware.gpus=1, STAGE.KEY=VALUE "
        "(e.g. grpo.train.max_steps=2); repeat for more",
    )
    run.add_argument("--out", default=None, help="run directory (default runs/recipes/NAME)")
    sub.add_parser("slice", add_help=False, help="write rows [start, stop) of a dataset to a JSONL file")
    return p


def recipe_main(argv: list[str] | None = None) -> int:
    """The `nanoseek recipe` command."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["slice"]:
        from nanoseek.repro.run import slice_main

        return slice_main(argv[1:])
    args = parser().parse_args(argv)
    try:
        if args.action == "list":
            print(list_text())
            return 0
        recipe = load_recipe(args.name, args.sets)
        out = Path(args.out) if args.out else Path("runs") / "recipes" / recipe.name
        if args.dry_run:
            from nanoseek.repro.estimate import estimate

            print(plan_text(estimate(recipe, out), out))
            return 0
        from nanoseek.repro.run import run_recipe

        run_recipe(recipe, out, plan_text)
    except RecipeError as e:
        print(f"nanoseek recipe: error: {e}", file=sys.stderr)
        return 2
    print(f"report: {out / 'report.md'}")
    return 0


# ----------------------------------------------------------------------------------------- text


def list_text() -> str:
    from nanoseek.repro.estimate import estimate

    rows = ["| recipe | what | hardware | estimate | status |", "|---|---|---|---|---|"]
    for name in recipe_names():
        recipe = load_recipe(name)
        plan = estimate(recipe, Path("runs") / "recipes" / name)
        hw = recipe.hardware
        rows.append(
            f"| {name} | {recipe.title} | {hw.gpus} x {hw.gpu} | ~{plan.total_hours:.1f} h, "
            f"~${plan.dollars:,.0f} | {recipe.status} |"
        )
    return "\n".join(
        [*rows, "", "nanoseek recipe run NAME --dry-run: the plan, its arithmetic, the published figures"]
    )


def _source(text: str) -> str:
    from nanoseek.records import is_hub_id

    if Path(text).exists():
        return "local"
    return "Hub, streamed" if is_hub_id(text) else "local: NOT FOUND"


def plan_text(plan, out: Path) -> str:
    """The dry run: what runs, on what, for how long, for how much, to reproduce which figures."""
    from nanoseek.model import account
    from nanoseek.repro.estimate import human, model_architecture, sci
    from nanoseek.repro.run import display

    r, hw, a = plan.recipe, plan.recipe.hardware, plan.recipe.assumptions
    lines = [
        f"recipe {r.name}: {r.title}",
        f"source: {r.source}",
        f"status: {r.status}",
        f"hardware: {hw.gpus} x {hw.gpu} ({sci(plan.peak_flops)} FLOP/s bf16 per GPU: {plan.peak_source}), "
        f"${hw.price_per_gpu_hour:.2f} per GPU-hour",
        f"run directory: {out}",
        "",
        "models:",
    ]
    for name, model in r.models.items():
        arch = model_architecture(name, model)
        size = f"{arch.model_type}, {human(account(arch, 1).total_params)} parameters"
        if not model.id:
            where = f"made from scratch (preset {model.preset})"
        elif Path(model.id).exists():
            where = f"{model.id} (local)"
        else:
            where = (
                f"{model.id} (Hub: downloaded on the first run; --set models.{name}=PATH for a local copy)"
            )
        lines.append(f"  {name}: {where}; {size}")
    lines.append("datasets:")
    lines += [f"  {name}: {text} ({_source(text)})" for name, text in r.datasets.items()]
    lines += ["", "plan:"]
    for i, est in enumerate(plan.stages, 1):
        lines.append(f"  {i}. {est.stage.name}: {est.stage.title}")
        lines.append(f"     $ {display(r, est.stage, est.argv)}")
        lines += [f"       {line}" for line in est.lines]
    lines += [
        "",
        f"total: {plan.total_hours:.2f} h on {hw.gpus} x {hw.gpu} = {plan.gpu_hours:.2f} GPU-hours x "
        f"${hw.price_per_gpu_hour:.2f} = ${plan.dollars:,.2f}",
        f"  assumptions: training at {a.mfu:.0%} MFU, generation at {a.decode_mfu:.0%} of peak "
        "(assumptions.mfu / decode_mfu); every rented GPU is paid for the whole run; model downloads, "
        "loading and engine start-up are not counted",
        "",
        "published figures to reproduce:",
    ]
    for p in r.published:
        value = f"{p.before} -> {p.value}" if p.before is not None else f"{p.value}"
        ours = f" (ours: stage {p.stage})" if p.stage else ""
        lines.append(f"  {p.metric}: {value}{ours}")
        lines.append(f"    source: {p.source}")
        if p.note:
            lines.append(f"    note: {p.note}")
    if r.notes:
        lines += ["", "notes:", *[f"  - {n}" for n in r.notes]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(recipe_main())
