"""Training runs side by side as separate processes, one thread each, with a progress bar per run.

    jobs = [Job("GRPO", [sys.executable, "-m", "nanoseek.rl.cli", recipe, "--out", "runs/a"], Path("runs/a")),
            Job("control", [..., "--random-rewards"], Path("runs/b"))]
    run_parallel(jobs, total_steps=60)

Models this small train faster as one single-threaded process per core than as one process using all
cores. Each job is a command that writes a run directory (`nanoseek pretrain`, `nanoseek grpo`, ...):
a job whose run already has its report.md is skipped, one with a complete checkpoint gets `--resume`,
its output goes to `run_dir/stdout.log`, and its bar shows the newest training step in its
metrics.jsonl (with the last held-out pass@1 when the run logs one). A job that fails raises
RuntimeError naming its log; an interrupted wait stops the others (a rerun resumes them). Used by the
micro R1-Zero experiment (`nanoseek.rl.micro`) and the speedrun's two pretraining runs.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from nanoseek.model.run_dirs import latest_checkpoint
from nanoseek.train.report import read_metrics


@dataclass
class Job:
    label: str
    argv: list[str]  # the command (without --resume, added when the run has a checkpoint)
    run_dir: Path


def run_parallel(jobs: list[Job], total_steps: int, progress: bool = True, poll_seconds: float = 1.0) -> None:
    """Run the jobs' commands at once and wait for all of them (see the module docstring)."""
    procs = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for job in jobs:
        if (job.run_dir / "report.md").is_file():
            continue
        job.run_dir.mkdir(parents=True, exist_ok=True)
        argv = [*job.argv, *(["--resume"] if latest_checkpoint(job.run_dir) is not None else [])]
        log = open(job.run_dir / "stdout.log", "a")  # noqa: SIM115 (closed when the process ends)
        procs[job.label] = (job, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    bars = {
        label: tqdm(
            total=total_steps, desc=label, position=i, unit="step", dynamic_ncols=True, disable=not progress
        )
        for i, label in enumerate(procs)
    }
    try:
        while procs:
            time.sleep(poll_seconds)
            for label in list(procs):
                job, proc, log = procs[label]
                show(bars[label], read_metrics(job.run_dir / "metrics.jsonl"))
                if proc.poll() is None:
                    continue
                log.close()
                bars[label].close()
                del procs[label]
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"{label} failed (exit {proc.returncode}); see {job.run_dir / 'stdout.log'}"
                    )
    finally:
        for _, proc, log in procs.values():  # interrupted or one failed: stop the others too
            proc.terminate()
            proc.wait()
            log.close()


def show(bar: tqdm, records: list[dict]) -> None:
    bar.n = max((r["step"] for r in records if r.get("type") == "train"), default=0)
    evals = [r for r in records if r.get("type") == "eval" and "pass@1" in r]
    if evals:
        bar.set_postfix(pass1=f"{evals[-1]['pass@1']:.3f}", refresh=False)
    bar.refresh()
