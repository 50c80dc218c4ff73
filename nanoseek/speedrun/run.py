"""Run the speedrun: every stage in order, each skipped when its record says it is done; then the report.

    from nanoseek.speedrun import load_speedrun_config, run_speedrun
    result = run_speedrun(load_speedrun_config(), "runs/speedrun")     # or: nanoseek speedrun

The run directory:
    speedrun.toml          the resolved recipe; a rerun must match it (else: another --out)
    stages/<name>.json     one record per finished stage (what it made, its tokens, time and cost)
    data/ tokenizer/ pretrain/ sft/ grpo/ distill/ eval/ benchmarks/   each stage's own run directory
    report.md, *.png       the table of every stage, plots, serving cost, DeepSeek's figures beside ours
A killed run continues where it stopped: finished stages are skipped, and the stage that was running
resumes from its own checkpoints (training) or sample files (evaluation).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from nanoseek.speedrun.config import SpeedrunConfig, load_speedrun_config
from nanoseek.speedrun.report import write_report
from nanoseek.speedrun.stages import STAGES, Context
from nanoseek.train.config import to_toml


class SpeedrunError(RuntimeError):
    """A speedrun that cannot start or continue, with the reason."""


def _identity(cfg: SpeedrunConfig) -> str:
    """The recipe without the settings that change how fast and how verbosely it runs, not what."""
    return to_toml(replace(cfg, run=replace(cfg.run, threads=0, progress=True)))


def _check_recipe(cfg: SpeedrunConfig, out: Path) -> None:
    path, text = out / "speedrun.toml", to_toml(cfg)
    if path.is_file() and _identity(load_speedrun_config(path)) != _identity(cfg):
        raise SpeedrunError(
            f"{out} holds a speedrun made with a different recipe ({path}); "
            "rerun with the same recipe and overrides to continue it, or pass another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_speedrun(
    cfg: SpeedrunConfig, out: str | Path, benchmarks: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run (or continue) the speedrun in `out`; returns the records of every stage and the report path."""
    out = Path(out)
    benchmarks = {k: v for k, v in (benchmarks or {}).items() if v}
    for name, path in benchmarks.items():
        if not Path(path).is_file():
            raise SpeedrunError(f"--{name}: no file at {path}")
    _check_recipe(cfg, out)
    ctx = Context(cfg, out, benchmarks)
    stages = [s for s in STAGES if s.when(ctx)]
    records: dict[str, Any] = {}
    t_session = time.perf_counter()
    for i, stage in enumerate(stages, 1):
        done = ctx.record(stage.name)
        if done is not None and (stage.name != "benchmarks" or done.get("files") == benchmarks):
            say(f"[{i}/{len(stages)}] {stage.name}: done before, skipped")
            records[stage.name] = done
            continue
        say(f"[{i}/{len(stages)}] {stage.name}: {stage.title}")
        t0 = time.perf_counter()
        record = stage.run(ctx)
        record["stage_seconds"] = time.perf_counter() - t0
        record["load_average"] = os.getloadavg()[1]  # 5 minutes: the timings are only as good as this
        path = out / "stages" / f"{stage.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(path)
        records[stage.name] = record
        say(f"[{i}/{len(stages)}] {stage.name}: done in {record['stage_seconds']:.0f} s")
    report = write_report(ctx, records)
    session = time.perf_counter() - t_session
    return {"records": records, "report": str(report), "session_seconds": session}
