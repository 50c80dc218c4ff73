"""nanoseek.speedrun: the whole R1 story end to end in one command, on a 2-core CPU in minutes.

    from nanoseek.speedrun import load_speedrun_config, run_speedrun
    result = run_speedrun(load_speedrun_config(), "runs/speedrun")   # or: nanoseek speedrun
    result["report"]                                                  # runs/speedrun/report.md

Modules: `config` (SpeedrunConfig, recipes/speedrun*.toml + overrides), `data` (pretraining corpus and
cold-start chat set), `stages` (each stage calling the project's own entry points), `serving` ($ per
million tokens measured with the engine), `run` (stage order, skipping finished stages), `report`
(report.md, plots, DeepSeek's figures), `cli` (speedrun_main).
"""

from nanoseek.speedrun.config import SpeedrunConfig, load_speedrun_config
from nanoseek.speedrun.run import SpeedrunError, run_speedrun

__all__ = ["SpeedrunConfig", "SpeedrunError", "load_speedrun_config", "run_speedrun"]
