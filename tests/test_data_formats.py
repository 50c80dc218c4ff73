"""Data in the formats people have (issue 20, item 1): one record reader (`nanoseek.records`) behind the
corpus reader, the chat reader and `nanoseek tokenize` / `sft`. Every format and record shape is read
from a small file the test writes; nothing downloads (a Hub id is tested with `datasets.load_dataset`
replaced). The issue's failures: a .jsonl.gz corpus was "unsupported file type", a parquet chat file a
UnicodeDecodeError traceback, ShareGPT `conversations` refused; a bad record must name file, record
and field, and never surface a json / pyarrow / datasets traceback."""

from __future__ import annotations

import gzip
import json
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from nanoseek.data import ChatFields, DataError, expand_files, iter_documents, load_chat, load_chat_jsonl
from nanoseek.records import SUFFIXES, Where, expand_sources, is_hub_id, iter_records

ROWS = [{"text": "first doc", "n": 1}, {"text": "second doc", "n": 2}, {"text": "third doc", "n": 3}]
TEXTS = [r["text"] for r in ROWS]


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def zst(data: bytes) -> bytes:
    """Two Zstandard frames (as `zstd -T` and concatenated files have): the reader must cross frames."""
    half = len(data) // 2
    return zstandard.ZstdCompressor().compress(data[:half]) + zstandard.ZstdCompressor().compress(data[half:])


def csv_text(sep: str) -> bytes:
    return ("text" + sep + "n\n" + "".join(f"{r['text']}{sep}{r['n']}\n" for r in ROWS)).encode()


def write_arrow(path, rows, stream: bool) -> None:
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path), "wb") as f:
        writer = (pa.ipc.new_stream if stream else pa.ipc.new_file)(f, table.schema)
        writer.write_table(table)
        writer.close()


WRITERS = {
    "a.jsonl": lambda p: p.write_bytes(jsonl(ROWS)),
    "a.jsonl.gz": lambda p: p.write_bytes(gzip.compress(jsonl(ROWS))),
    "a.jsonl.zst": lambda p: p.write_bytes(zst(jsonl(ROWS))),
    "list.json": lambda p: p.write_text(json.dumps(ROWS)),
    "wrapped.json": lambda p: p.write_text(json.dumps({"version": 2, "data": ROWS})),
    "lines.json": lambda p: p.write_bytes(jsonl(ROWS)),  # datasets' to_json writes JSON lines
    "a.json.gz": lambda p: p.write_bytes(gzip.compress(json.dumps(ROWS).encode())),
    "a.parquet": lambda p: pq.write_table(pa.Table.from_pylist(ROWS), p),
    "file.arrow": lambda p: write_arrow(p, ROWS, stream=False),
    "stream.arrow": lambda p: write_arrow(p, ROWS, stream=True),
    "a.csv": lambda p: p.write_bytes(csv_text(",")),
    "a.tsv": lambda p: p.write_bytes(csv_text("\t")),
    "a.csv.zst": lambda p: p.write_bytes(zst(csv_text(","))),
    "a.txt.gz": lambda p: p.write_bytes(gzip.compress("\n<|endoftext|>\n".join(TEXTS).encode())),
}


# ---------------------------------------------------------------------------------- records, corpora


@pytest.mark.parametrize("name", WRITERS)
def test_every_format_gives_the_same_documents(tmp_path, name):
    path = tmp_path / name
    WRITERS[name](path)
    documents = list(iter_documents(expand_files([path])))
    # a .txt separator line leaves the newline before it inside the document
    assert [d.strip() for d in documents] == TEXTS


def test_records_say_where_they_come_from(tmp_path):
    for name in ("a.jsonl", "list.json", "a.parquet", "a.csv", "a.tsv"):
        WRITERS[name](tmp_path / name)
    seen = {
        name: [w for w, _ in iter_records(tmp_path / name)] for name in ("a.jsonl", "list.json", "a.parquet")
    }
    assert seen["a.jsonl"] == [f"{tmp_path / 'a.jsonl'}:{i}" for i in (1, 2, 3)]
    assert seen["list.json"][1] == f"{tmp_path / 'list.json'}, record 2"
    assert seen["a.parquet"][2] == f"{tmp_path / 'a.parquet'}, row 3"
    where = seen["a.parquet"][2]
    assert isinstance(where, Where)
    assert (where.path, where.record, where.unit) == (str(tmp_path / "a.parquet"), 3, "row")
    # CSV values stay the strings written (no type guessing), and the line is the record's first line
    (tmp_path / "multi.csv").write_text('q,a\n"two\nlines",007\nx,1\n')
    assert [(w.record, r) for w, r in iter_records(tmp_path / "multi.csv")] == [
        (2, {"q": "two\nlines", "a": "007"}),
        (4, {"q": "x", "a": "1"}),
    ]
    # columns: the columnar formats read only those; the others keep only those
    parquet_rows = [r for _, r in iter_records(tmp_path / "a.parquet", columns=["n"])]
    assert parquet_rows == [{"n": n} for n in (1, 2, 3)]
    assert [r for _, r in iter_records(tmp_path / "a.jsonl", columns=["n", "absent"])][0] == {"n": 1}


def test_folders_expand_recursively_sorted_to_supported_files_only(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".cache").mkdir()
    WRITERS["a.jsonl.gz"](tmp_path / "b" / "z.jsonl.gz")
    WRITERS["a.parquet"](tmp_path / "a.parquet")
    WRITERS["a.jsonl"](tmp_path / ".cache" / "hidden.jsonl")
    (tmp_path / "README.md").write_text("# not data")
    assert expand_sources([tmp_path]) == [str(tmp_path / "a.parquet"), str(tmp_path / "b" / "z.jsonl.gz")]
    assert len(list(iter_records(tmp_path))) == 6  # a folder is also a source of its own
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("x")
    with pytest.raises(DataError, match=f"^{empty}: no data files in this folder"):
        expand_sources([empty])
    with pytest.raises(DataError, match="unsupported file type"):
        expand_sources([empty / "notes.md"])
    with pytest.raises(FileNotFoundError, match="no such file"):
        expand_sources([tmp_path / "missing.jsonl"])
    wanted = {".jsonl.gz", ".jsonl.zst", ".json", ".parquet", ".arrow", ".csv", ".tsv", ".txt.zst"}
    assert wanted <= set(SUFFIXES)


def test_a_folder_datasets_saved_is_one_source(tmp_path):
    import datasets  # a core dependency: no skipping

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "one"))
    splits = {"train": datasets.Dataset.from_list(ROWS[:2]), "test": datasets.Dataset.from_list(ROWS[2:])}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dict"))
    assert expand_sources([tmp_path]) == [str(tmp_path / "dict"), str(tmp_path / "one")]
    assert list(iter_documents([tmp_path / "one"])) == TEXTS
    assert [r["text"] for _, r in iter_records(tmp_path / "dict")] == TEXTS[:2]  # the train split
    [(where, row)] = iter_records(tmp_path / "dict", split="test")
    assert row["text"] == TEXTS[2] and where == f"{tmp_path / 'dict'}[test], row 1"
    with pytest.raises(DataError, match=r"no split 'dev' .*splits: \['train', 'test'\]"):
        list(iter_records(tmp_path / "dict", split="dev"))


def test_a_jsonl_gz_corpus_tokenizes_with_nanoseek_tokenize(tmp_path, capsys):
    """The issue's first failure: `nanoseek tokenize` called a .jsonl.gz corpus an unsupported file type."""
    from helpers import tokenizer_on

    from nanoseek.cli import main
    from nanoseek.data import read_manifest

    tokenizer_on("first doc second doc third doc\n" * 20, tmp_path, 280, out_dir=tmp_path / "tok")
    WRITERS["a.jsonl.gz"](tmp_path / "corpus.jsonl.gz")
    WRITERS["a.jsonl.zst"](tmp_path / "corpus.jsonl.zst")
    argv = ["tokenize", "--input", str(tmp_path / "corpus.jsonl.gz"), str(tmp_path / "corpus.jsonl.zst")]
    argv += ["--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "shards"), "--workers", "0"]
    assert main([*argv, "--val-fraction", "0"]) == 0
    assert read_manifest(tmp_path / "shards")["splits"]["train"]["documents"] == 6


# ---------------------------------------------------------------------------------- the Hub


class FakeHub:
    """Stands in for datasets.load_dataset: records its calls, streams ROWS."""

    def __init__(self, fail: Exception | None = None):
        self.calls, self.fail = [], fail

    def __call__(self, path, name=None, **kwargs):
        self.calls.append((path, name, kwargs))
        if self.fail:
            raise self.fail
        return iter([dict(r) for r in ROWS])


def test_a_hub_id_is_streamed_with_its_config_and_split(monkeypatch, tmp_path):
    import datasets  # a core dependency: no skipping

    hub = FakeHub()
    monkeypatch.setattr(datasets, "load_dataset", hub)
    monkeypatch.chdir(tmp_path)
    rows = list(iter_records("openai/gsm8k:main@test"))
    assert hub.calls == [("openai/gsm8k", "main", {"split": "test", "streaming": True})]
    assert [r["text"] for _, r in rows] == TEXTS and rows[1][0] == "hf://openai/gsm8k:main[test]:2"
    assert list(iter_documents(expand_files(["hf://org/corpus"]))) == TEXTS  # default split: train
    assert hub.calls[-1] == ("org/corpus", None, {"split": "train", "streaming": True})
    list(iter_records("org/corpus", split="validation"))
    assert hub.calls[-1][2]["split"] == "validation"
    # a name is a Hub id only where no local file, folder or data-file suffix says otherwise
    (tmp_path / "data").mkdir()
    assert is_hub_id("org/name") and not is_hub_id("data/missing") and not is_hub_id("x/missing.jsonl")
    with pytest.raises(FileNotFoundError):
        expand_sources(["data/missing"])
    offline = FakeHub(fail=ConnectionError("Couldn't reach 'org/name' on the Hub (LocalEntryNotFoundError)"))
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        DataError, match=r"^hf://org/name\[train\]: cannot stream it from the Hugging Face Hub"
    ):
        list(iter_records("org/name"))


# ---------------------------------------------------------------------------------- errors


def bad_file(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


BAD = [  # file name, content, where (after the path), field, problem
    ("c.jsonl", b'{"text": "ok"}\n{"text": "ok"}\n{"text": \n', "line 3", None, "invalid JSON"),
    ("c.jsonl", b'{"text": "ok"}\n[1, 2]\n', "line 2", None, "expected a JSON object, got array"),
    ("c.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "line 2", None, "not UTF-8 text"),
    ("image.jsonl", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "line 1", None, "not UTF-8 text"),  # binary
    ("c.jsonl", b'{"text": "ok"}\n{"body": "no text"}\n', "line 2", "text", "missing"),
    ("c.jsonl", b'{"text": "ok"}\n{"text": 42}\n', "line 2", "text", "expected a string, got int"),
    ("c.json", b'[{"text": "ok"}, "text"]', "record 2", None, "expected a JSON object, got string"),
    ("c.json", b'[{"text": "ok"},\n {"text": }]', "line 2", None, "invalid JSON"),
    ("c.json", b"42", None, None, "expected a list of objects, got number"),
    ("c.csv", b"text,n\nok,1\nshort\n", "line 3", None, "1 fields, but the header line has 2"),
    ("c.jsonl.gz", b"not gzip at all", "line 1", None, "cannot read gzip data"),
    ("c.jsonl.gz", gzip.compress(jsonl(ROWS * 50))[:-30], "line", None, "cannot read gzip data"),  # truncated
    ("c.jsonl.zst", b"not zstd at all", "line 1", None, "cannot read Zstandard data"),
    ("c.parquet", b'{"text": "a JSON file under a parquet name"}\n', None, None, "not a parquet file"),
    ("c.arrow", b"PAR1 not arrow either", None, None, "not an Arrow IPC file"),
    ("c.txt", b"fine\n" * 3 + b"\xff\xfe\x00binary", "line 4", None, "not UTF-8 text"),
]


@pytest.mark.parametrize("name, content, where, field, problem", BAD)
def test_bad_input_is_a_data_error_naming_file_record_and_field(
    tmp_path, name, content, where, field, problem
):
    path = bad_file(tmp_path, name, content)
    with pytest.raises(DataError) as e:
        list(iter_documents(expand_files([path])))
    error = e.value
    assert (error.path, error.field, problem in error.problem) == (str(path), field, True), str(error)
    prefix = f"{path}, {where}" if where else f"{path}: "
    assert str(error).startswith(prefix) and "\n" not in str(error), str(error)
    if where and where[-1].isdigit():
        assert error.record == error.line == int(where.split()[1])
        assert str(error).startswith(f"{path}, {where}: {field + ': ' if field else ''}{error.problem}")


def test_a_parquet_corpus_without_the_text_column_names_it(tmp_path):
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "c.parquet")
    with pytest.raises(DataError, match=r"c.parquet: content: no such column \(columns: \['body'\]\)"):
        list(iter_documents([tmp_path / "c.parquet"], text_field="content"))


def test_single_bad_records_can_be_skipped_and_errors_pickle(tmp_path):
    path = bad_file(tmp_path, "c.jsonl", b'{"a": 1}\n{oops\n{"a": 3}\n')
    errors = []
    assert [r["a"] for _, r in iter_records(path, on_error=errors.append)] == [1, 3]
    assert [(e.record, e.problem.split(" (")[0]) for e in errors] == [(2, "invalid JSON")]
    again = pickle.loads(pickle.dumps(errors[0]))
    assert (str(again), again.record, again.unit) == (str(errors[0]), 2, "line")
    assert str(DataError(Where("b.parquet", 7, "row"), None, "answer", "x")) == "b.parquet, row 7: answer: x"


# ---------------------------------------------------------------------------------- chat shapes

THINK = "<think>\n2 and 2 make 4\n</think>\n\n4"
EXPECTED = [
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4", "reasoning_content": "2 and 2 make 4"},
]
OPENAI = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": THINK}]}
MIXTURE_OF_THOUGHTS = {**OPENAI, "num_tokens": 17, "source": "open-r1/OpenR1-Math-220k"}
SHAREGPT = {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": THINK}]}
OPENR1_MATH = {  # OpenR1-Math-220k's columns (its dataset card), the messages column left out
    "problem": "2+2?",
    "solution": "2+2=4",
    "answer": "4",
    "problem_type": "Algebra",
    "question_type": "math-word-problem",
    "source": "olympiads",
    "uuid": "0",
    "is_reasoning_complete": [True, True, False],
    "generations": ["<think>\nwrong\n</think>\n\n5", THINK, "<think>\ncut off"],
    "correctness_math_verify": [False, True, True],
    "correctness_llama": None,
    "finish_reasons": None,
    "correctness_count": 2,
}
PAIRS = {"prompt": "2+2?", "response": "4", "reasoning": "2 and 2 make 4"}
ALPACA = {"instruction": "Add these.", "input": "2+2", "output": THINK}
TRL = {
    "prompt": [{"role": "user", "content": "2+2?"}],
    "completion": [{"role": "assistant", "content": THINK}],
}


@pytest.mark.parametrize(
    "record",
    [OPENAI, MIXTURE_OF_THOUGHTS, SHAREGPT, OPENR1_MATH, PAIRS, TRL],
    ids=["openai", "mixture_of_thoughts", "sharegpt", "openr1_math", "pairs", "trl"],
)
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".jsonl.zst"])
def test_every_chat_shape_in_every_format(tmp_path, record, suffix):
    """The issue's failures among them: a parquet chat file, and ShareGPT conversations."""
    path = tmp_path / f"chat{suffix}"
    rows = [record, record]
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_bytes(zst(jsonl(rows)) if suffix.endswith(".zst") else jsonl(rows))
    assert load_chat(path) == [EXPECTED, EXPECTED]


def test_more_chat_shapes_and_field_names(tmp_path):
    def one(record, **fields):
        (tmp_path / "one.jsonl").write_bytes(jsonl([record]))
        [conversation] = load_chat(tmp_path / "one.jsonl", fields=ChatFields(**fields))
        return conversation

    assert one(ALPACA) == [{"role": "user", "content": "Add these.\n\n2+2"}, EXPECTED[1]]
    openr1 = {
        **OPENR1_MATH,
        "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "x"}],
    }
    assert one(openr1)[1]["content"] == "x"  # auto: Open-R1's own messages column
    assert one(openr1, format="openr1_math") == EXPECTED  # or the first verified generation
    assert one({"problem": "2+2?", "solution": "4"}, format="openr1_math") == [
        EXPECTED[0],
        {"role": "assistant", "content": "4"},
    ]
    judged = {
        **OPENR1_MATH,
        "correctness_math_verify": [False] * 3,
        "correctness_llama": [False, True, False],
    }
    assert one(judged) == EXPECTED  # the Llama judge where Math Verify said no
    dialog = {
        "dialog": [{"from": "USER", "value": "2+2?"}, {"from": "assistant", "value": THINK}],
        "system": "Be brief.",
    }
    assert one(dialog, messages_field="dialog") == [{"role": "system", "content": "Be brief."}, *EXPECTED]
    custom = {"q": "2+2?", "a": "4", "why": "2 and 2 make 4"}
    assert (
        one(custom, format="pairs", prompt_field="q", response_field="a", reasoning_field="why") == EXPECTED
    )
    (tmp_path / "pairs.csv").write_text('prompt,response\n2+2?,"<think>\n2 and 2 make 4\n</think>\n\n4"\n')
    assert load_chat_jsonl(tmp_path / "pairs.csv") == [EXPECTED]  # the old name reads every format too


CHAT_BAD = [  # record, field, problem
    (
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "x"}]},
        "conversations[1].from",
        "expected one of 'human'",
    ),
    ({"conversations": [{"from": "human", "value": 3}]}, "conversations[0].value", "expected a string"),
    ({"conversations": "hi"}, "conversations", "expected a non-empty list"),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content", "expected a string"),
    (
        {**OPENR1_MATH, "correctness_math_verify": [False] * 3},
        "generations",
        "no complete generation is marked correct",
    ),
    ({**OPENR1_MATH, "correctness_math_verify": [True]}, "correctness_math_verify", "a list of 3 booleans"),
    ({"prompt": "hi", "response": ""}, "response", "expected a non-empty string"),
    ({"title": "no conversation here"}, "messages", "missing (expected a list of messages; or ShareGPT"),
]


@pytest.mark.parametrize("record, field, problem", CHAT_BAD)
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_bad_chat_record_names_file_record_and_field(tmp_path, record, field, problem, suffix):
    path = tmp_path / f"chat{suffix}"
    if suffix == ".parquet":  # one column type per file: the bad record alone, as row 1
        pq.write_table(pa.Table.from_pylist([record]), path)
        where = f"{path}, row 1"
    else:
        path.write_bytes(jsonl([OPENAI, record]))
        where = f"{path}, line 2"
    with pytest.raises(DataError) as e:
        load_chat(path)
    assert str(e.value).startswith(f"{where}: {field}: ") and problem in e.value.problem, str(e.value)
    assert load_chat(path, skip_bad=True).num_skipped == 1


def test_plain_text_is_not_chat_data(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="notes.txt: plain text is a corpus, not chat data"):
        load_chat(tmp_path / "notes.txt")


def test_config_and_cli_know_the_same_chat_formats():
    from nanoseek.data.chat import FORMATS
    from nanoseek.train.cli import parse_args
    from nanoseek.train.config import ConfigError, DataSection

    assert DataSection.rules["format"] == FORMATS
    cfg, _ = parse_args("sft", ["--format", "sharegpt", "data.messages_field=dialog", "--data", "x.parquet"])
    assert (cfg.data.format, cfg.data.messages_field, cfg.data.train) == ("sharegpt", "dialog", ["x.parquet"])
    with pytest.raises(ConfigError, match="data.format: expected one of"):
        parse_args("sft", ["data.format=alpaca"])


def test_nanoseek_sft_trains_on_sharegpt_parquet_and_reports_a_bad_row(tmp_path, capsys):
    """End to end: the issue's parquet chat file (UnicodeDecodeError before) in ShareGPT shape."""
    import torch
    from helpers import tiny_config, tokenizer_on, torch_threads

    from nanoseek.cli import main
    from nanoseek.model import DeepSeekV3

    tok = tokenizer_on("2+2? 2 and 2 make 4. 4\n" * 30, tmp_path, 280)
    torch.manual_seed(0)
    model = tmp_path / "base"
    DeepSeekV3(tiny_config(vocab_size=tok.vocab_size, max_position_embeddings=64)).save_pretrained(model)
    tok.save(model)
    pq.write_table(pa.Table.from_pylist([SHAREGPT] * 4), tmp_path / "chat.parquet")
    common = ["run.device=cpu", "run.progress=false", "data.val_fraction=0", "train.seq_len=48"]
    common += ["train.device_batch_size=2", "train.max_steps=2", "eval.num_samples=0", "cost.peak_flops=1e11"]
    argv = ["sft", "--init", str(model), "--data", str(tmp_path / "chat.parquet"), *common]
    with torch_threads(1):
        assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert "4 training conversations" in (tmp_path / "run" / "report.md").read_text()

    bad = [SHAREGPT, {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "robot", "value": "4"}]}]
    pq.write_table(pa.Table.from_pylist(bad), tmp_path / "bad.parquet")
    argv[4] = str(tmp_path / "bad.parquet")
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "bad_run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        f"nanoseek sft: error: {tmp_path / 'bad.parquet'}, row 2: conversations[1].from: expected one of"
        in err
    )
