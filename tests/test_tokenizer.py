"""Tokenizer: training on .txt/.jsonl/.parquet, special tokens, save/load (ours and transformers'), streaming."""

import json
import logging
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tokenizers
from helpers import tokenizer_on

from nanoseek.data import DataError
from nanoseek.tokenizer import StreamDecoder, Tokenizer, tokenizer_train_main, train_tokenizer
from nanoseek.tokenizer.chat_format import ASSISTANT, BOS, END_THINK, EOS, PAD, THINK, USER

WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "and", "then", "ran", "far", "away", "12", "345"]
WORDS += ["世界", "你好", "🙂", "café", "naïve", "über"]
TRICKY = "Hello, wörld! 你好世界 🙂🚀 naïve café\n\n  indented\tx = 12345; <b>ok</b>"


def make_text(n_lines: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    lines = []
    for _ in range(n_lines):
        words = [
            rng.choice(WORDS) if rng.random() < 0.5 else "".join(rng.choices(letters, k=rng.randint(2, 7)))
        ]
        words += [rng.choice(WORDS) for _ in range(rng.randint(3, 15))]
        lines.append(" ".join(words) + ".")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    return tokenizer_on(make_text(400), d, 512, out_dir=d / "out")


@pytest.fixture(scope="module")
def tok_dir(tok, tmp_path_factory):
    return tok.save(tmp_path_factory.mktemp("saved"))


def test_vocab_size_and_special_token_ids(tok):
    assert tok.vocab_size == 512
    ids = [tok.bos_id, tok.eos_id, tok.pad_id, tok.user_id, tok.assistant_id, tok.think_id, tok.end_think_id]
    assert len(set(ids)) == 7
    for name, token_id in zip([BOS, EOS, PAD, USER, ASSISTANT, THINK, END_THINK], ids):
        assert tok.token_to_id(name) == token_id
        assert tok.encode(name) == [token_id]  # each control token is a single token
    assert tok.encode("<think>\nhmm\n</think>")[0] == tok.think_id
    assert len(tok.encode_ordinary(THINK)) > 1  # plain-text encoding spells control strings out


def test_encode_decode_round_trip(tok):
    ids = tok.encode(TRICKY)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == TRICKY
    assert tok.encode_batch([TRICKY, "abc"]) == [ids, tok.encode("abc")]
    assert tok.encode_ordinary_batch([TRICKY]) == [tok.encode_ordinary(TRICKY)]
    assert tok.encode("") == []
    # training merged frequent words into single tokens
    assert len(tok.encode(" the")) == 1 and len(tok.encode_ordinary(TRICKY)) < len(TRICKY.encode())


def test_decode_skip_special_tokens_keeps_think_markup(tok):
    ids = [
        tok.bos_id,
        tok.user_id,
        *tok.encode("hi"),
        tok.assistant_id,
        tok.think_id,
        tok.end_think_id,
        tok.eos_id,
    ]
    assert tok.decode(ids) == f"{BOS}{USER}hi{ASSISTANT}{THINK}{END_THINK}{EOS}"
    assert tok.decode(ids, skip_special_tokens=True) == "hi<think></think>"


def test_saved_files_and_reload(tok, tok_dir):
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == (BOS, EOS, PAD)
    assert "chat_template" in config and config["model_max_length"] > 0
    again = Tokenizer.from_dir(tok_dir)
    assert again.vocab_size == tok.vocab_size and again.encode(TRICKY) == tok.encode(TRICKY)
    assert Tokenizer.from_file(tok_dir / "tokenizer.json").think_id == tok.think_id


def test_transformers_autotokenizer_agrees(tok, tok_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    assert hf.bos_token == BOS and hf.eos_token == EOS and hf.pad_token == PAD
    assert hf(TRICKY, add_special_tokens=False)["input_ids"] == tok.encode(TRICKY)
    # HF users (vLLM completions, lm-eval) get BOS in front, like our pretraining documents
    assert hf(TRICKY)["input_ids"] == [tok.bos_id, *tok.encode(TRICKY)]
    assert hf.decode(tok.encode(TRICKY)) == TRICKY


def test_train_on_jsonl_and_parquet(tmp_path):
    texts = [make_text(5, seed=i).replace("the", "zqxjkzqxjk") for i in range(60)]
    with open(tmp_path / "a.jsonl", "w") as f:
        for i, t in enumerate(texts[:30]):
            record = {"content": t} if i % 2 else {"messages": [{"role": "user", "content": t}]}
            f.write(json.dumps(record) + "\n")
    pq.write_table(pa.table({"content": texts[30:]}), tmp_path / "b.parquet")
    tok = train_tokenizer(
        [tmp_path / "a.jsonl", tmp_path / "b.parquet"],
        400,
        tmp_path / "out",
        text_field="content",
        show_progress=False,
    )
    assert tok.vocab_size <= 400
    assert len(tok.encode(" zqxjkzqxjk")) == 1  # learned from the files' own text
    assert (tmp_path / "out" / "tokenizer.json").is_file()


def test_vocab_size_too_small_is_an_error(tmp_path):
    (tmp_path / "c.txt").write_text("hello")
    with pytest.raises(ValueError, match="at least 263"):
        train_tokenizer([tmp_path / "c.txt"], 200, None)


def test_a_corpus_without_text_or_too_small_for_the_vocabulary(tmp_path, caplog):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.jsonl").write_text('{"text": ""}\n\n')
    with pytest.raises(DataError, match="empty.txt, .*blank.jsonl: no text to train on"):
        train_tokenizer([tmp_path / "empty.txt", tmp_path / "blank.jsonl"], 300, tmp_path / "out")
    (tmp_path / "small.txt").write_text("hello world\n")  # 4 + 5 merges make "hello" and " world" whole
    with pytest.raises(ValueError, match="too little text for 300 tokens: BPE learned only 9 merges"):
        train_tokenizer([tmp_path / "small.txt"], 300, tmp_path / "out", show_progress=False, exact_size=True)
    assert not (tmp_path / "out").exists()
    with caplog.at_level(logging.WARNING):  # the library's default: a smaller vocabulary, said clearly
        assert train_tokenizer([tmp_path / "small.txt"], 300, None, show_progress=False).vocab_size == 272
    assert "a vocabulary of 272" in caplog.text
    (tmp_path / "binary.txt").write_bytes(b"fine text\n" * 100 + bytes(range(128, 256)))
    with pytest.raises(DataError, match="binary.txt, line 101: not UTF-8 text"):
        train_tokenizer([tmp_path / "binary.txt"], 300, None, show_progress=False)


def test_from_file_with_deepseek_style_ids_and_missing_tokens(tmp_path):
    # A tokenizer.json laid out like DeepSeek's: control tokens at arbitrary ids, after the vocabulary.
    vocab = {chr(c): i for i, c in enumerate(range(97, 123))}
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    hf.add_special_tokens([BOS, EOS, USER, ASSISTANT])
    hf.add_tokens([THINK, END_THINK])
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = Tokenizer.from_file(tmp_path / "tokenizer.json")
    assert (tok.bos_id, tok.eos_id, tok.user_id, tok.think_id) == (26, 27, 28, 30)
    assert tok.pad_id == tok.eos_id  # no pad token: EOS pads
    bare = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    bare.save(str(tmp_path / "bare.json"))
    with pytest.raises(ValueError, match="control tokens"):
        Tokenizer.from_file(tmp_path / "bare.json")
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_dir(tmp_path / "nowhere")


@pytest.mark.parametrize("text", ["你好世界 🙂🚀 done", "naïve café 日本語のテキスト👨‍👩‍👧", TRICKY])
def test_stream_decoder_never_emits_partial_characters(tok, text):
    ids = tok.encode(text)
    stream = StreamDecoder(tok)
    deltas = [stream.push(i) for i in ids]
    assert "".join(deltas) + stream.flush() == text
    assert all("\ufffd" not in d for d in deltas)
    # the test is only meaningful if some multi-byte character really was split across tokens
    assert any(d == "" for d in deltas)


def test_stream_decoder_flushes_incomplete_bytes_and_skips_special(tok):
    emoji = tok.encode("🚀")  # not in the training text, so it stays split into bytes
    assert len(emoji) > 1
    stream = StreamDecoder(tok)
    assert stream.push(emoji[0]) == ""
    assert stream.flush() == "\ufffd"  # an unfinished character at the very end comes out as U+FFFD
    stream = StreamDecoder(tok, skip_special_tokens=True)
    out = [stream.push(i) for i in [tok.think_id, *tok.encode(" ok"), tok.eos_id]]
    assert "".join(out) + stream.flush() == "<think> ok"


def test_cli_trains_and_reports(tmp_path, capsys):
    (tmp_path / "c.txt").write_text(make_text(100))
    tokenizer_train_main(["--input", str(tmp_path), "--vocab-size", "300", "--out", str(tmp_path / "tok")])
    out = capsys.readouterr().out
    assert "vocab size: 300" in out and "bytes/token" in out
    assert Tokenizer.from_dir(tmp_path / "tok").vocab_size == 300
