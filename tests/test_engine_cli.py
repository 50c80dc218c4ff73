"""`nanoseek generate` / `nanoseek chat` functions on a saved scripted model: thinking and answer
shown apart (plain <think> markers when the output is not a terminal), history, /reset, /quit."""

import io

import pytest
from helpers import ANSWER, REASONING, USER, make_tokenizer, scripted

from nanoseek.engine.cli import Printer, chat_main, generate_main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    tok = make_tokenizer(tmp_path_factory.mktemp("tok"))
    prompt = tok.render_prompt(USER)
    scripted(tok, prompt, [*tok.encode(f"{REASONING}</think>{ANSWER}"), tok.eos_id]).save_pretrained(d)
    tok.save(d)
    return d


def test_generate_shows_thinking_then_answer(model_dir, capsys):
    assert generate_main(["--model", str(model_dir), USER[0]["content"], "--temperature", "0"]) == 0
    out = capsys.readouterr()
    assert out.out == f"<think>\n{REASONING}\n</think>\n\n{ANSWER}\n"
    assert "tokens/s" in out.err


def test_generate_int8_speculative_and_n_samples(model_dir, capsys):
    args = ["--model", str(model_dir), USER[0]["content"], "--temperature", "0", "--int8", "--speculative"]
    assert generate_main([*args, "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count(f"<think>\n{REASONING}\n</think>\n\n{ANSWER}\n") == 2 and "--- sample 1 (stop" in out


def test_chat_keeps_history_and_resets(model_dir, capsys, monkeypatch):
    lines = [USER[0]["content"], "/reset", USER[0]["content"], "/quit", "never read"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert chat_main(["--model", str(model_dir), "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count(ANSWER) == 2 and "(conversation cleared)" in out


def test_terminal_output_dims_the_thinking():
    buf = io.StringIO()
    printer = Printer(buf, color=True)
    printer.reasoning("hmm")
    printer.content("42")
    printer.end()
    assert buf.getvalue() == "\033[2mhmm\033[0m\n\n42\n"
