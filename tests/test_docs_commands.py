"""Every shell command shown in README.md and docs/*.md runs as written, at least as far as it can here.

The commands are the lines of fenced `bash` / `sh` / `shell` / `console` blocks that begin (after
`$ `, `VAR=value` prefixes or `torchrun ...`) with `nanoseek` or `python`; lines continued with `\\`
are joined, and a trailing `# comment`, pipes and `&&` chains are cut off. Usage synopses (optional
parts in `[...]`) are not commands and are skipped. Each command is run in-process in a scratch
directory (with the repository's `bench/` linked in; `recipes/...` resolves to the recipes shipped in
the package, as after a plain install), with argparse stopped right after it has parsed the command line:
- the command and every flag must exist and parse (a bad flag in the docs fails here);
- a recipe file on the line must load and validate with its stage's own loader;
- cheap commands that need no model or run directory (`nanoseek info`, `--help`, `--dry-run`, scripts
  without argparse such as `python -m nanoseek.serve.demo`) run to the end for real.
Long runs and GPU recipes are therefore checked by parsing, not by training; the speedrun itself runs
end to end in tests/test_speedrun.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

from nanoseek.cli import COMMANDS
from nanoseek.cli import main as nanoseek_main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"bash", "sh", "shell", "console", "text", ""}
RUN_FOR_REAL = ("info", "speedrun --dry-run", "--help")


def shell_blocks(text: str) -> list[list[str]]:
    blocks, current, fence = [], None, None
    for line in text.splitlines():
        m = re.match(r"^\s*```(\w*)", line)
        if m and current is None:
            fence, current = m.group(1), []
        elif m and current is not None:
            if fence in SHELL_FENCES:
                blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def commands_in(path: Path) -> list[str]:
    out = []
    for block in shell_blocks(path.read_text()):
        joined, buf = [], ""
        for line in block:
            if line.rstrip().endswith("\\"):
                buf += line.rstrip()[:-1] + " "
                continue
            joined.append(buf + line)
            buf = ""
        for line in joined:
            line = line.strip().removeprefix("$ ")
            words = line.split()
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=\S*$", words[0]):
                words = words[1:]  # OMP_NUM_THREADS=1 ...
            if words and words[0] == "torchrun":  # torchrun [opts] -m module args
                words = ["python", *words[words.index("-m") :]] if "-m" in words else []
            if not words or words[0] not in ("nanoseek", "python") or "[-" in line:
                continue
            if words[:3] == ["python", "-m", "pytest"]:
                continue  # the test suite itself
            out.append(" ".join(words))
    return out


ALL = [(path.relative_to(ROOT).as_posix(), cmd) for path in DOCS for cmd in commands_in(path)]


def argv_of(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    for stop in ("|", "&&", ";", "&", ">", "2>&1"):
        if stop in words:
            words = words[: words.index(stop)]
    return words


class Parsed(Exception):
    """Raised by argparse once the outermost parse of a command line succeeded."""


def stop_after_parsing(monkeypatch) -> None:
    """Make argparse raise `Parsed` when the outermost parse of a command line succeeds."""
    depth = {"n": 0}

    def wrap(original):
        def parse(self, *args, **kwargs):
            depth["n"] += 1
            try:
                result = original(self, *args, **kwargs)
            finally:
                depth["n"] -= 1
            if depth["n"] == 0:
                raise Parsed(result)
            return result

        return parse

    for name in ("parse_args", "parse_known_args", "parse_intermixed_args", "parse_known_intermixed_args"):
        monkeypatch.setattr(argparse.ArgumentParser, name, wrap(getattr(argparse.ArgumentParser, name)))


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    (tmp_path / "bench").symlink_to(ROOT / "bench")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def check_recipes(argv: list[str]) -> None:
    """Load every recipe named on the line with the loader of its stage."""
    from nanoseek.rl.config import load_grpo_config
    from nanoseek.speedrun.config import load_speedrun_config
    from nanoseek.train import load_config
    from nanoseek.train.config import find_recipe

    overrides = [a for a in argv if re.match(r"^\w+\.\w+=", a)]
    for arg in argv:
        if not arg.endswith(".toml") or not arg.startswith("recipes/"):
            continue
        assert find_recipe(arg).is_file(), f"{arg}: no such recipe"
        if "grpo" in argv or "r1_zero_micro.toml" in arg:
            load_grpo_config(arg, overrides)
        elif "speedrun" in arg:
            load_speedrun_config(arg, overrides)
        elif arg.startswith("recipes/") and "--contestants" not in argv:
            load_config(arg, overrides)


def run(argv: list[str]) -> None:
    if argv[0] == "nanoseek":
        rest = argv[1:]
        assert rest and (" ".join(rest[:2]) in COMMANDS or rest[0] in COMMANDS or rest[0] == "--help"), argv
        nanoseek_main(rest)
    elif argv[1:2] == ["-m"]:
        spec = importlib.util.find_spec(argv[2])
        assert spec and spec.origin, f"{argv[2]}: no such module"
        assert '__name__ == "__main__"' in Path(spec.origin).read_text(), f"{argv[2]}: not runnable with -m"
        sys.argv = [argv[2], *argv[3:]]
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    else:
        script = Path(argv[1])
        assert script.is_file(), f"{script}: no such script"
        sys.argv = [str(script), *argv[2:]]
        runpy.run_path(str(script), run_name="__main__")


def test_the_docs_show_commands():
    files = {path for path, _ in ALL}
    assert "README.md" in files and "docs/speedrun.md" in files
    assert any(cmd.startswith("nanoseek speedrun") for _, cmd in ALL)


@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import:RuntimeWarning")  # runpy, in-process
@pytest.mark.parametrize(("doc", "command"), ALL, ids=[f"{d}: {c[:60]}" for d, c in ALL])
def test_command_runs_as_written(doc, command, scratch, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    argv = argv_of(command)
    check_recipes(argv)
    real = any(f" {marker}" in f" {' '.join(argv[1:])}" for marker in RUN_FOR_REAL)
    if not real:
        stop_after_parsing(monkeypatch)
    try:
        run(argv)
    except Parsed:
        pass
    except SystemExit as e:
        assert e.code in (0, None), f"{doc}: `{command}` exited with {e.code}"
