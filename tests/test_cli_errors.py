"""Every command fails on bad input in one line, `nanoseek <command>: error: <file: what was expected>`,
with exit status 2 and no traceback (issue 15, items 12 and 13): commands that load a model (generate,
chat, serve, eval, grpo --init, sft --init, info) given broken or mismatched model directories,
`tokenizer train` given unusable input, and `pretrain --resume` given a directory with nothing to resume."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import tokenizer_on

from nanoseek.cli import main
from nanoseek.model import DeepSeekV3, ModelConfig

CORPUS = "the cat sat on the mat. What is 12 + 34? I add them: 46. Some more words to merge here.\n"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A good model directory (weights + tokenizer) and broken copies of it."""
    root = tmp_path_factory.mktemp("cli_errors")
    tok = tokenizer_on(CORPUS * 50, root, 280)
    torch.manual_seed(0)
    good = root / "good"
    DeepSeekV3(ModelConfig(vocab_size=tok.vocab_size, max_position_embeddings=256)).save_pretrained(good)
    tok.save(good)
    truncated = root / "truncated"
    shutil.copytree(good, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:3000])
    layers = root / "layers"  # the num_hidden_layers 2 -> 1
    shutil.copytree(good, layers)
    config = json.loads((layers / "config.json").read_text())
    (layers / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
    big = root / "big"
    shutil.copytree(good, big)
    (big / "config.json").write_text(json.dumps({**config, "hidden_size": "big"}))
    return {"good": good, "truncated": truncated, "layers": layers, "big": big, "root": root}


def run(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and the error line of `nanoseek argv`; fails unless stderr ends in exactly one."""
    try:
        code = main(argv)
    except SystemExit as e:  # a command that exits itself (grpo)
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and err.rstrip("\n").endswith(errors[0]), err
    return code, errors[0]


BROKEN = {
    "truncated": "model.safetensors: not a readable safetensors file",
    "layers": "model.safetensors: num_hidden_layers: config.json says 1, but the weights hold 2 layers",
    "big": "config.json: hidden_size: expected a positive integer, got 'big' (a string)",
}


@pytest.mark.parametrize(
    "command, broken",
    [(c, b) for c in ("generate", "chat", "serve") for b in BROKEN] + [("info", "big")],  # info: config only
)
def test_commands_that_load_a_model_fail_in_one_line(dirs, capsys, monkeypatch, command, broken):
    def never(*args, **kwargs):
        raise AssertionError("served a model that should not have loaded")

    monkeypatch.setattr("uvicorn.run", never)
    model = str(dirs[broken])
    argv = {
        "generate": ["generate", "--model", model, "hi"],
        "chat": ["chat", "--model", model],
        "serve": ["serve", "--model", model],
        "info": ["info", model],
    }[command]
    code, line = run(argv, capsys)
    assert code == 2
    assert line.startswith(f"nanoseek {command}: error: {model}/") and BROKEN[broken] in line


@pytest.mark.parametrize("broken", BROKEN)
def test_eval_grpo_and_sft_fail_in_one_line_on_a_broken_model(dirs, capsys, tmp_path, broken):
    model = str(dirs[broken])
    chat = tmp_path / "chat.jsonl"
    message = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the cat"}]
    chat.write_text(json.dumps({"messages": message}) + "\n")
    commands = {
        "eval": ["eval", "--model", model, "--tasks", "arithmetic", "--out", str(tmp_path / "e")],
        "grpo": ["grpo", "--init", model, "--out", str(tmp_path / "g"), "run.device=cpu"],
        "sft": [
            "sft",
            "--init",
            model,
            "--out",
            str(tmp_path / "s"),
            "--data",
            str(chat),
            "run.device=cpu",
            "data.val_fraction=0",
        ],
    }
    for command, argv in commands.items():
        code, line = run(argv, capsys)
        assert code == 2 and line.startswith(f"nanoseek {command}: error: {model}/"), line
        assert BROKEN[broken] in line


def test_serve_on_a_missing_directory_prints_one_line_in_a_real_process(tmp_path):
    for argv in (
        ["serve", "--model", str(tmp_path / "nowhere")],
        ["generate", "--model", str(tmp_path), "hi"],
    ):
        done = subprocess.run([sys.executable, "-m", "nanoseek.cli", *argv], capture_output=True, text=True)
        assert done.returncode == 2
        assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"nanoseek generate: error: {tmp_path}/config.json: no config.json")


def test_pretrain_resume_without_a_checkpoint_says_so(tmp_path, capsys):
    code, line = run(["pretrain", "--out", str(tmp_path), "--resume"], capsys)
    assert code == 2
    assert line.startswith(f"nanoseek pretrain: error: --resume: no checkpoint in {tmp_path} to resume from")
    assert not (tmp_path / "config.toml").exists()  # nothing written into the directory


@pytest.fixture()
def text_files(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 40)
    (tmp_path / "small.txt").write_text("hello world\n")
    (tmp_path / "corpus.txt").write_text(CORPUS * 50)
    (tmp_path / "a_file").write_text("not a directory")
    return tmp_path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input", "empty.txt", "--vocab-size", "512"], "empty.txt: no text to train on"),
        (["--input", "binary.txt", "--vocab-size", "300"], "binary.txt, line 2: not UTF-8 text"),
        (["--input", "missing.txt", "--vocab-size", "300"], "no such file or directory: {d}/missing.txt"),
        (["--input", "corpus.txt", "--vocab-size", "10"], "--vocab-size 10: must be at least 263"),
        (  # "hello" and " world" merge into single tokens in 4 + 5 merges, and that is all there is
            ["--input", "small.txt", "--vocab-size", "512"],
            "small.txt: too little text for 512 tokens: BPE learned only 9 merges, a vocabulary of 272",
        ),
        (["--input", "corpus.txt", "--vocab-size", "280", "--out", "a_file"], "a_file: is a file"),
    ],
)
def test_tokenizer_train_fails_in_one_line(text_files, capsys, args, message):
    d = text_files
    args = [str(d / a) if a.endswith((".txt", "a_file")) else a for a in args]
    out = [] if "--out" in args else ["--out", str(d / "tok")]
    code, line = run(["tokenizer", "train", *args, *out], capsys)
    assert code == 2 and line.startswith("nanoseek tokenizer train: error: ")
    assert message.format(d=d) in line, line
    assert not (d / "tok").exists()  # nothing saved


def test_tokenizer_train_refuses_to_overwrite_unless_forced(text_files, capsys):
    argv = ["tokenizer", "train", "--input", str(text_files / "corpus.txt"), "--vocab-size", "280"]
    argv += ["--out", str(text_files / "tok")]
    assert main(argv) == 0
    first = (text_files / "tok" / "tokenizer.json").read_text()
    (text_files / "corpus.txt").write_text(CORPUS.upper() * 50)
    code, line = run(argv, capsys)
    assert code == 2 and "already holds tokenizer.json and tokenizer_config.json; pass --force" in line
    assert (text_files / "tok" / "tokenizer.json").read_text() == first
    assert main([*argv, "--force"]) == 0
    assert (text_files / "tok" / "tokenizer.json").read_text() != first


# ----------------------------------------------------------------------------- files beside the weights


def broken_copy(dirs, name: str, file: str, text: str):
    """A copy of the good model directory with `file` replaced by `text`."""
    path = dirs["root"] / name
    if not path.exists():
        shutil.copytree(dirs["good"], path)
        (path / file).write_text(text)
    return path


@pytest.mark.parametrize("command", ["generate", "serve"])
def test_a_garbage_tokenizer_file_is_one_line_naming_it(dirs, capsys, monkeypatch, command):
    monkeypatch.setattr("nanoseek.serve.cli.run_server", lambda *a, **k: pytest.fail("served"))
    model = broken_copy(dirs, "bad_tokenizer", "tokenizer.json", "this is not JSON")
    argv = (
        ["generate", "--model", str(model), "hi"]
        if command == "generate"
        else ["serve", "--model", str(model)]
    )
    code, line = run(argv, capsys)
    assert code == 2
    assert line.startswith(f"nanoseek {command}: error: {model}/tokenizer.json: not a tokenizer file"), line


def test_a_garbage_tokenizer_file_raises_checkpoint_error_from_the_python_api(dirs):
    from nanoseek.engine import Engine
    from nanoseek.model import CheckpointError
    from nanoseek.tokenizer import Tokenizer

    model = broken_copy(dirs, "bad_tokenizer", "tokenizer.json", "this is not JSON")
    for load in (lambda: Tokenizer.from_dir(model), lambda: Engine.from_pretrained(model)):
        with pytest.raises(CheckpointError) as caught:
            load()
        assert caught.value.path == str(model / "tokenizer.json")
    config = broken_copy(dirs, "bad_tokenizer_config", "tokenizer_config.json", "{not json")
    with pytest.raises(CheckpointError) as caught:
        Tokenizer.from_dir(config)
    assert caught.value.path == str(
        config / "tokenizer_config.json"
    )  # the file, where in it, what was expected
    assert re.fullmatch(
        r".*tokenizer_config\.json: not JSON \(.+ at line 1, column 2\); expected a JSON object",
        str(caught.value),
    )


def test_serve_with_a_broken_generation_config_is_one_line(dirs, capsys, monkeypatch):
    monkeypatch.setattr("nanoseek.serve.cli.run_server", lambda *a, **k: pytest.fail("served"))
    for name, text, problem in (
        ("bad_generation", '{"temperature": 0.6,', "generation_config.json: not a JSON file"),
        ("list_generation", "[1, 2]", "generation_config.json: expected a JSON object, got list"),
    ):
        model = broken_copy(dirs, name, "generation_config.json", text)
        code, line = run(["serve", "--model", str(model)], capsys)
        assert code == 2 and line.startswith(f"nanoseek serve: error: {model}/{problem}"), line


@pytest.mark.parametrize("data", ["empty", "no_answer", "answer_too_late"])
def test_sft_with_nothing_to_train_on_is_one_line_and_writes_no_config(dirs, capsys, tmp_path, data):
    chat = tmp_path / "chat.jsonl"
    user_only = {"messages": [{"role": "user", "content": "the cat sat"}]}
    long_prompt = [{"role": "user", "content": "the cat sat on the mat. " * 40}]
    late = {"messages": [*long_prompt, {"role": "assistant", "content": "46"}]}
    records = {"empty": [], "no_answer": [user_only] * 3, "answer_too_late": [late] * 3}[data]
    chat.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "run"
    argv = ["sft", "--init", str(dirs["good"]), "--out", str(out), "--data", str(chat)]
    code, line = run([*argv, "run.device=cpu", "data.val_fraction=0", "train.seq_len=32"], capsys)
    expected = {
        "empty": "no conversations to train on",
        "no_answer": "none of its 3 conversation(s) has an assistant token to train on (the first has no "
        "assistant message",
        "answer_too_late": "none of its 3 conversation(s) has an assistant token to train on (the first "
        "conversation's answer starts at token",
    }[data]
    assert code == 2 and line.startswith(f"nanoseek sft: error: {chat}: {expected}"), line
    assert not (out / "config.toml").exists()  # a later --resume must not find a config of this run
