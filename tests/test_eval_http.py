"""The same checkpoint evaluated through the native engine and through an OpenAI-compatible HTTP endpoint
serving the same engine gives identical verdicts at temperature 0.

The endpoint is `nanoseek serve` (`python -m nanoseek.serve.cli`) started as a subprocess on a trained
toy checkpoint; the client side is the `RemoteGenerator` that `nanoseek eval --model http://...` uses.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
from helpers import free_port

from nanoseek.distill.toy import TOY_TASK
from nanoseek.eval import EvalConfig, run_eval
from nanoseek.eval.cli import eval_main
from nanoseek.eval.generators import load_generator

pytest.importorskip("nanoseek.serve.cli", reason="nanoseek serve is not installed")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def server(toy_teacher):
    port = free_port()
    cmd = [sys.executable, "-m", "nanoseek.serve.cli", "--model", str(toy_teacher), "--port", str(port)]
    cmd += ["--served-model-name", "toy", "--max-slots", "8", "--threads", "1", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            try:
                if httpx.get(url + "/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            proc.kill()
            pytest.fail(f"nanoseek serve did not come up: {proc.communicate()[1][-2000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_native_and_http_give_identical_verdicts(toy_teacher, server, tmp_path):
    cfg = EvalConfig(tasks=[TOY_TASK], k=1, max_problems=24, temperature=0, max_new_tokens=128, concurrency=8)
    native = load_generator(toy_teacher, concurrency=8)
    remote = load_generator(server, concurrency=4)  # the served model's name comes from /v1/models
    assert remote.label == f"toy @ {server}"
    try:
        a = run_eval(native.generator, cfg, tmp_path / "native", "toy", progress=False)
        b = run_eval(remote.generator, cfg, tmp_path / "http", "toy", progress=False)
    finally:
        remote.close()

    def rows(out):
        return [json.loads(line) for line in (tmp_path / out / "samples.jsonl").read_text().splitlines()]

    key = ("problem_id", "reasoning", "answer", "extracted", "correct", "finish_reason")
    native_rows = sorted((tuple(r[k] for k in key) for r in rows("native")), key=str)
    http_rows = sorted((tuple(r[k] for k in key) for r in rows("http")), key=str)
    assert native_rows == http_rows
    verdicts = [r[4] for r in native_rows]
    assert any(verdicts) and len(verdicts) == 24  # a trained model: real verdicts, not all wrong
    assert a["tasks"][TOY_TASK]["pass@1"] == b["tasks"][TOY_TASK]["pass@1"]


def test_eval_cli_on_the_endpoint(server, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--model", server, "--tasks", TOY_TASK, "--k", "2", "--max-problems", "4", "--out", str(out)]
    assert (
        eval_main([*argv, "--max-new-tokens", "128", "--no-progress", "--api-key-env", "NANOSEEK_TEST_KEY"])
        == 0
    )
    assert "| sort?" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"][TOY_TASK]["samples"] == 8 and summary["total"]["completion_tokens"] > 0
    assert eval_main(["--model", server, "--tasks", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
