"""Run a recipe: fetch its Hub models, then each stage's own command in order, skipping finished stages.

    result = run_recipe(load_recipe("tinyzero_countdown"), Path("runs/recipes/tinyzero_countdown"))

A stage runs in this process through its command's entry point (`nanoseek grpo` is
`nanoseek.rl.cli.grpo_main(argv)`), or, when it is `distributed` and the recipe rents more than one GPU,
as `torchrun --standalone --nproc_per_node GPUS -m nanoseek.train.cli pretrain ...`. The run directory:

    plan.txt              the dry run's text: commands, estimates, published figures
    recipe.json           the resolved commands; a rerun may change only the stages not finished yet
    stages/<name>.json    one record per finished stage (its command, seconds); rerunning skips it
    <stage>/              each stage's own output (`--out`); a stopped training stage resumes (--resume)
    report.md             estimated against measured time per stage, the published figures

Models named by a Hub id are downloaded once (huggingface_hub.snapshot_download, into the Hugging Face
cache) before the first stage; datasets are read in place, Hub ids streamed by `nanoseek.records`.
"""

from __future__ import annotations

import itertools
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nanoseek.repro.estimate import Plan, duration, estimate
from nanoseek.repro.recipe import COMMANDS, PLACEHOLDER, Recipe, RecipeError, Stage, stage_dir


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- commands


def display(recipe: Recipe, stage: Stage, argv: list[str]) -> str:
    """The stage as a shell command (what a user would type to run it alone)."""
    command = COMMANDS[stage.command]
    if stage.distributed and recipe.hardware.gpus > 1:
        words = ["torchrun", "--standalone", "--nproc_per_node", str(recipe.hardware.gpus), "-m"]
        words += command.torchrun_module
    else:
        words = ["nanoseek", *command.words]
    return " ".join(shlex.quote(w) for w in [*words, *argv])


def entry_point(command: str) -> Callable[[list[str]], Any]:
    """The in-process entry point of a stage command (the function `nanoseek <command>` calls)."""
    if command == "tokenizer train":
        from nanoseek.tokenizer.train import tokenizer_train_main

        return tokenizer_train_main
    if command == "tokenize":
        from nanoseek.data.shards import tokenize_main

        return tokenize_main
    if command == "slice":
        return slice_main
    if command in ("pretrain", "sft"):
        from nanoseek.train.cli import pretrain_main, sft_main

        return pretrain_main if command == "pretrain" else sft_main
    if command == "grpo":
        from nanoseek.rl.cli import grpo_main

        return grpo_main
    if command == "eval":
        from nanoseek.eval.cli import eval_main

        return eval_main
    raise RecipeError(f"unknown stage command {command!r}")


def run_stage(recipe: Recipe, stage: Stage, argv: list[str]) -> None:
    """One stage, to completion; RecipeError if its command fails (it has printed why)."""
    if stage.distributed and recipe.hardware.gpus > 1:
        gpus = str(recipe.hardware.gpus)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", gpus, "-m"]
        code: Any = subprocess.run([*cmd, *COMMANDS[stage.command].torchrun_module, *argv]).returncode
    else:
        try:
            code = entry_point(stage.command)(argv)
        except SystemExit as e:
            code = e.code
    if isinstance(code, int | str) and not isinstance(code, bool) and code not in (0, "0"):
        raise RecipeError(
            f"stage {stage.name!r} failed (exit {code}); its error is above. Fix it and rerun the same "
            "command: finished stages are skipped"
        )


def resume_flag(stage: Stage, out: Path) -> list[str]:
    """`--resume` for a training stage that stopped after a checkpoint."""
    from nanoseek.model.run_dirs import latest_checkpoint

    if COMMANDS[stage.command].overrides and latest_checkpoint(stage_dir(out, stage)) is not None:
        return ["--resume"]
    return []


# ----------------------------------------------------------------------------------------- models and data


def used_models(recipe: Recipe) -> list[str]:
    """The [models] entries the stages' args name (the ones a run needs on disk)."""
    names: list[str] = []
    for stage in recipe.stages:
        for value in stage.args.values():
            for text in value if isinstance(value, list) else [value]:
                for m in PLACEHOLDER.finditer(text) if isinstance(text, str) else ():
                    if m.group(1) == "models" and m.group(2) not in names:
                        names.append(m.group(2))
    return names


def fetch_models(recipe: Recipe) -> dict[str, str]:
    """name -> local directory of every model the stages use: a local path as given, a Hub id downloaded
    once into the Hugging Face cache."""
    from nanoseek.records import is_hub_id

    local = {}
    for name in used_models(recipe):
        model_id = recipe.models[name].id
        if Path(model_id).exists():
            local[name] = model_id
            continue
        if not is_hub_id(model_id):
            raise RecipeError(f"models.{name}: {model_id!r} is neither a local path nor a Hub model id")
        say(f"models.{name}: downloading {model_id} from the Hugging Face Hub")
        try:
            from huggingface_hub import snapshot_download  # installed with datasets

            local[name] = snapshot_download(repo_id=model_id)
        except (OSError, ValueError) as e:
            raise RecipeError(
                f"models.{name}: could not download {model_id} from the Hub ({type(e).__name__}: {e}); "
                f"download it elsewhere and pass --set models.{name}=PATH"
            ) from None
    return local


def slice_rows(source: str, start: int, stop: int, out: Path) -> int:
    """Rows [start, stop) of a dataset (a file, folder or Hub id) written to out/data.jsonl, in order;
    TinyZero's data prep takes its train and test splits this way. RecipeError if there are fewer."""
    from nanoseek.records import iter_records

    if not 0 <= start < stop:
        raise RecipeError(f"slice: need 0 <= start < stop, got start={start}, stop={stop}")
    out.mkdir(parents=True, exist_ok=True)
    tmp, n = out / "data.jsonl.tmp", 0
    with tmp.open("w") as f:
        for _, row in itertools.islice(iter_records(source), start, stop):
            f.write(json.dumps(row, ensure_ascii=False, default=_plain) + "\n")
            n += 1
    if n < stop - start:
        tmp.unlink()
        raise RecipeError(f"slice: {source} has {start + n} rows; rows {start} to {stop} were asked for")
    tmp.replace(out / "data.jsonl")
    return n


def slice_main(argv: list[str]) -> int:
    """`nanoseek recipe slice --input SOURCE --start A --stop B --out DIR`: rows [A, B) to DIR/data.jsonl."""
    import argparse

    p = argparse.ArgumentParser(
        prog="nanoseek recipe slice",
        description="Write rows [start, stop) of a dataset (file, folder or Hub id) to OUT/data.jsonl, in order.",
    )
    p.add_argument(
        "--input", required=True, help="a file, folder or Hub dataset id (org/name[:config][@split])"
    )
    p.add_argument("--start", type=int, required=True, help="the first row (0-based)")
    p.add_argument("--stop", type=int, required=True, help="the row after the last")
    p.add_argument("--out", required=True, help="output folder (gets data.jsonl)")
    args = p.parse_args(argv)
    n = slice_rows(args.input, args.start, args.stop, Path(args.out))
    print(f"wrote {n:,} rows to {Path(args.out) / 'data.jsonl'}")
    return 0


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (parquet cells through datasets) as JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# ----------------------------------------------------------------------------------------- the run


def _check_plan(out: Path, recipe: Recipe, plan: Plan) -> None:
    """A finished stage must have run with the command it would run now (else its output is another
    run's); stages still to run may change. Writes the commands to out/recipe.json."""
    path = out / "recipe.json"
    current = {"recipe": recipe.name, "stages": [[s.stage.name, s.argv] for s in plan.stages]}
    if path.is_file():
        before = json.loads(path.read_text())
        argv_before = dict(map(tuple, before.get("stages", [])))
        for est in plan.stages:
            finished = (out / "stages" / f"{est.stage.name}.json").is_file()
            if finished and (
                before.get("recipe") != recipe.name or argv_before.get(est.stage.name) != est.argv
            ):
                raise RecipeError(
                    f"{out}: stage {est.stage.name!r} finished there with other settings ({path}); rerun "
                    "with the same --set options to continue that run, or pass another --out"
                )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2) + "\n")


def run_recipe(recipe: Recipe, out: Path, plan_text: Callable[[Plan, Path], str] | None = None) -> dict:
    """Run (or continue) every stage of `recipe` in `out`; returns {stage name: record}."""
    models = fetch_models(recipe)
    plan = estimate(recipe, out, models)
    _check_plan(out, recipe, plan)
    if plan_text is not None:
        (out / "plan.txt").write_text(plan_text(plan, out))
    records: dict[str, dict] = {}
    for i, est in enumerate(plan.stages, 1):
        stage, marker = est.stage, out / "stages" / f"{est.stage.name}.json"
        if marker.is_file():
            say(f"[{i}/{len(plan.stages)}] {stage.name}: done before, skipped")
            records[stage.name] = json.loads(marker.read_text())
            continue
        argv = [*est.argv, *resume_flag(stage, out)]
        say(f"[{i}/{len(plan.stages)}] {stage.name}: {display(recipe, stage, argv)}")
        t0 = time.perf_counter()
        run_stage(recipe, stage, argv)
        record = {"command": display(recipe, stage, argv), "seconds": time.perf_counter() - t0}
        record["estimated_seconds"] = est.seconds
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(record, indent=2) + "\n")
        records[stage.name] = record
        say(f"[{i}/{len(plan.stages)}] {stage.name}: done in {duration(record['seconds'])}")
    (out / "report.md").write_text(report(recipe, plan, records, out))
    return records


def report(recipe: Recipe, plan: Plan, records: dict[str, dict], out: Path) -> str:
    rows = [
        f"| {e.stage.name} | {duration(e.seconds)} | {duration(records[e.stage.name]['seconds'])} | "
        f"`{e.stage.name}/` |"
        for e in plan.stages
    ]
    published = [
        f"- {p.metric}: {p.before} -> {p.value}" if p.before is not None else f"- {p.metric}: {p.value}"
        for p in recipe.published
    ]
    published = [
        f"{line} ({p.source}); ours: `{p.stage}/` (its report.md)" if p.stage else f"{line} ({p.source})"
        for line, p in zip(published, recipe.published)
    ]
    return "\n".join(
        [
            f"# {recipe.title}",
            "",
            f"Recipe `{recipe.name}` ({recipe.path.name}); source: {recipe.source}.",
            "",
            "| stage | estimated | measured | output |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Estimated in all: {plan.total_hours:.2f} h, ${plan.dollars:,.2f}; the plan with its arithmetic: "
            "plan.txt.",
            "",
            "## Published figures",
            "",
            *published,
            "",
        ]
    )
