"""Every third-party package imported at the top of a module is declared in pyproject.toml, not one
that happens to arrive with another (h11 comes with uvicorn, starlette and pydantic with fastapi,
hypothesis with schemathesis): `.ci/run` installs the newest of each, and a dependency that stops
bringing another along must not break `import nanoseek.serve` or the tests. nanoseek's own modules
need the main dependencies; tests/ and bench/ may also use the extras. Imports inside functions are
the optional extras of the library (vllm, gguf, datasets, ...) and are not checked here."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def names(requirements: list[str]) -> set[str]:
    return {normalize(re.split(r"[<>=!~\[;\s]", r, maxsplit=1)[0]) for r in requirements}


def module_level_imports(path: Path) -> set[str]:
    """Top-level package names imported by the module's own top-level statements."""
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return {n for n in found if n not in sys.stdlib_module_names and n not in ("nanoseek", "__future__")}


def undeclared(folder: str, declared: set[str]) -> dict[str, str]:
    """Packages imported in `folder` whose distribution is not `declared`: name -> first importer."""
    distributions = importlib.metadata.packages_distributions()  # import name -> distribution names
    # tests import each other's helpers and bench/ scripts, and the scripts each other
    siblings = {p.stem for local in ("tests", "bench") for p in (ROOT / local).rglob("*.py")}
    missing: dict[str, str] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in module_level_imports(path) - siblings:
            if not any(normalize(d) in declared for d in distributions.get(name, [name])):
                missing.setdefault(name, path.relative_to(ROOT).as_posix())
    return missing


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
MAIN = names(PROJECT["dependencies"])
EXTRAS = names([r for group in PROJECT["optional-dependencies"].values() for r in group])


def test_the_library_imports_only_its_declared_dependencies():
    assert not undeclared("nanoseek", MAIN), "import them, or declare them in [project] dependencies"


def test_tests_and_benchmarks_import_only_declared_packages():
    for folder in ("tests", "bench"):
        assert not undeclared(folder, MAIN | EXTRAS), f"{folder}: declare them in an extra (dev)"


def test_the_checker_sees_a_direct_import():
    assert "h11" in module_level_imports(ROOT / "nanoseek" / "serve" / "connections.py")
    assert undeclared("nanoseek", MAIN - {"h11"}) == {"h11": "nanoseek/serve/connections.py"}
