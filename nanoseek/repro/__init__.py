"""nanoseek.repro: the public R1 results as one-command reproductions (`nanoseek recipe`).

    from nanoseek.repro import load_recipe, estimate, run_recipe      # and: from pathlib import Path
    recipe = load_recipe("r1_zero_gsm8k", ["models.base=/models/Qwen2.5-0.5B"])
    print(estimate(recipe, Path("runs/recipes/r1_zero_gsm8k")).dollars)     # or: nanoseek recipe run ... --dry-run
    run_recipe(recipe, Path("runs/recipes/r1_zero_gsm8k"))                  # or: nanoseek recipe run ...

A recipe (nanoseek/recipes/repro/NAME.toml) names the Hub models and datasets a published result used,
the stages that reproduce it as the project's own commands (`nanoseek eval`, `grpo`, `sft`, `pretrain`,
...), the hardware, and the published figures with their source. Modules: `recipe` (the file format,
--set overrides, each stage's command line), `estimate` (time and cost from the models' FLOPs and
stated throughput assumptions), `run` (downloads, stages in order, resumable), `cli` (`nanoseek recipe`).
It sits at the speedrun's level: it runs the stages of every layer below, through their entry points.
"""

from nanoseek.repro.estimate import Plan, estimate
from nanoseek.repro.recipe import Recipe, RecipeError, load_recipe, recipe_names
from nanoseek.repro.run import run_recipe

__all__ = ["Plan", "Recipe", "RecipeError", "estimate", "load_recipe", "recipe_names", "run_recipe"]
