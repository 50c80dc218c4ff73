"""The `nanoseek` command: routing, help, errors, and the README's set-up commands."""

import re
import subprocess
import sys
from pathlib import Path

from nanoseek.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_exits_2(capsys):
    assert main(["pretrian"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_info_on_a_preset_and_a_checkpoint(tmp_path, capsys):
    from nanoseek.model import DeepSeekV3, preset

    assert main(["info", "v3-671b"]) == 0
    out = capsys.readouterr().out
    assert "671B" in out and "37.6B" in out
    DeepSeekV3(preset("d2")).save_pretrained(tmp_path)
    assert main(["info", str(tmp_path)]) == 0
    assert "layers 2" in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "nanoseek.cli", "info", "d2"], capture_output=True, text=True, check=True
    )
    assert "total parameters" in out.stdout


def test_readme_has_exactly_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- (main|test)-command -->\n```bash\n(.+?)\n```", readme)
    assert [kind for kind, _ in blocks] == ["main", "test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "test-command" in ci  # CI runs the README's test command verbatim
