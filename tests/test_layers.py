"""Layers point one way: no module of nanoseek imports a layer above its own (lazy imports included).

The order is the issue's (tokenizer/data/model/tasks/verify -> engine -> eval/serve -> train/rl ->
distill/arena -> speedrun -> cli), refined to the finest one the code satisfies. An arrow reads "may
import"; what a layer may import, it may import transitively:

    base (nanoseek/__init__.py, errors.py, markdown.py, records.py: import nothing of nanoseek)
    tokenizer -> base        model -> base        verify -> base
    data -> tokenizer        tasks -> verify
    engine -> model, tokenizer    export -> model, tokenizer
    eval -> engine, tasks    serve -> engine
    train -> engine, data, tasks
    rl -> train
    distill -> train, eval   arena -> serve, tasks
    speedrun -> distill, rl  repro -> distill, rl (the recipes run stages, as the speedrun does)
    cli (nanoseek/cli.py) -> speedrun, repro, arena

So the model knows no tokens, the engine no tasks, training no evaluation harness or server, and
siblings (model / tokenizer, eval / serve, distill / arena / rl) never import each other. Every
`import nanoseek...`, `from nanoseek... import ...` and relative import counts, wherever it is (in a
function too), as does `importlib.import_module("nanoseek...")` with a literal name. A new package
fails `test_every_package_has_a_layer` until it is given its place in DEPENDS.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nanoseek"

DEPENDS: dict[str, set[str]] = {
    "base": set(),
    "tokenizer": {"base"},
    "model": {"base"},
    "verify": {"base"},
    "data": {"tokenizer"},
    "tasks": {"verify"},
    "engine": {"model", "tokenizer"},
    "export": {"model", "tokenizer"},
    "eval": {"engine", "tasks"},
    "serve": {"engine"},
    "train": {"engine", "data", "tasks"},
    "rl": {"train"},
    "distill": {"train", "eval"},
    "arena": {"serve", "tasks"},
    "speedrun": {"distill", "rl"},
    "repro": {"distill", "rl"},  # sibling of the speedrun: neither imports the other
    "cli": {"speedrun", "repro", "arena", "export"},  # nanoseek/cli.py
}


def allowed(layer: str) -> set[str]:
    """The layer itself and everything below it."""
    seen, todo = {layer}, [layer]
    while todo:
        for below in DEPENDS[todo.pop()]:
            if below not in seen:
                seen.add(below)
                todo.append(below)
    return seen


def layer_of(module: str) -> str:
    """'nanoseek.rl.trainer' -> 'rl'; top-level modules: base, or cli."""
    parts = module.split(".")
    if len(parts) > 1 and (parts[1] in DEPENDS or parts[1] == "cli"):
        return parts[1]
    return "base"  # nanoseek itself, its top-level modules (errors, markdown) and __version__


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) of every nanoseek module `module`'s source imports, wherever the import is."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "nanoseek":  # from nanoseek import errors, rl
                found += [(node.lineno, f"nanoseek.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return [(line, name) for line, name in found if name == "nanoseek" or name.startswith("nanoseek.")]


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """'module:line imports target (layer a may not import layer b)' for each upward import."""
    layer = layer_of(module)
    out = []
    for line, target in imported(ast.parse(source), module, is_package):
        if layer_of(target) not in allowed(layer):
            out.append(f"{module}:{line} imports {target} ({layer} may not import {layer_of(target)})")
    return out


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages - set(DEPENDS) == set(), "give the new package its place in DEPENDS"


def test_no_module_imports_a_layer_above_its_own():
    found = []
    for path in all_modules():
        found += violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert found == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        (
            "nanoseek.model.attention",
            "def f():\n    from nanoseek.train import loop\n",
        ),  # lazy, in a function
        ("nanoseek.tokenizer.train", "from nanoseek.data.documents import iter_documents\n"),
        ("nanoseek.eval.generators", "from nanoseek.train.checkpointing import resolve_model_dir\n"),
        ("nanoseek.train.loop", "import nanoseek.rl.trainer\n"),
        ("nanoseek.model.attention", "from ..engine import Engine\n"),  # relative
        ("nanoseek.eval", "from . import report\nfrom .. import serve\n"),  # a package's __init__
        ("nanoseek.data.shards", "import importlib\nimportlib.import_module('nanoseek.model')\n"),
        ("nanoseek.errors", "from nanoseek import model\n"),
        ("nanoseek.distill.cli", "from nanoseek.arena import store\n"),  # siblings
        ("nanoseek.distill.cli", "from nanoseek.rl import GRPOTrainer\n"),
        ("nanoseek.train.loop", "from nanoseek.eval import run_eval\n"),
        ("nanoseek.engine.engine", "from nanoseek.tasks import get_task\n"),
    ],
)
def test_the_check_fails_on_a_forbidden_import(module, source):
    assert violations(source, module, is_package=module.count(".") == 1 and module != "nanoseek.errors")


def test_the_check_passes_imports_downward():
    assert (
        violations(
            "from nanoseek.tokenizer import Tokenizer\nfrom nanoseek import errors\n", "nanoseek.data.x"
        )
        == []
    )
    assert (
        violations("from .loss import policy_loss\nfrom ..train import optim\n", "nanoseek.rl.trainer") == []
    )
    assert (
        violations("from nanoseek.model.run_dirs import resolve_model_dir\n", "nanoseek.eval.generators")
        == []
    )
