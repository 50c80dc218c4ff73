"""Data: reading corpora, token shards, packed pretraining batches, chat JSONL and SFT batches."""

import json
import random
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import tokenizer_on

from nanoseek.data import (
    ChatLoader,
    DataError,
    EpochSampler,
    PackedLoader,
    iter_documents,
    load_chat_jsonl,
    read_manifest,
    tokenize_corpus,
)
from nanoseek.data.shards import token_dtype

WORDS = ["the", "cat", "sat", "on", "mat", "and", "ran", "far", "你好", "🙂", "über", "42"]


def make_docs(n: int, seed: int = 0, max_words: int = 30) -> list[str]:
    """Documents that start with a unique id tag "<i>", so batches can be traced back to documents."""
    rng = random.Random(seed)
    return [f"<{i}> " + " ".join(rng.choices(WORDS, k=rng.randint(1, max_words))) for i in range(n)]


def doc_ids(text: str) -> set[int]:
    return {int(m) for m in re.findall(r"<(\d+)>", text)}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    tokenizer_on("\n".join(make_docs(200, seed=1)), d, 400, out_dir=d)
    return d


@pytest.fixture(scope="module")
def tok(tok_dir):
    from nanoseek.tokenizer import Tokenizer

    return Tokenizer.from_dir(tok_dir)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """120 documents spread over a .txt, a .jsonl and a .parquet file, and the list of them in order."""
    d = tmp_path_factory.mktemp("corpus")
    docs = make_docs(120)
    (d / "a.txt").write_text("\n<|endoftext|>\n".join(docs[:40]))
    with open(d / "b.jsonl", "w") as f:
        for doc in docs[40:80]:
            f.write(json.dumps({"text": doc, "meta": 1}) + "\n\n")
    pq.write_table(pa.table({"text": docs[80:]}), d / "c.parquet")
    # the .txt separator leaves the newline before it inside each document
    expected = [doc + "\n" for doc in docs[:39]] + docs[39:]
    return [d / "a.txt", d / "b.jsonl", d / "c.parquet"], expected


@pytest.fixture(scope="module")
def shards(corpus, tok_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    tokenize_corpus(
        corpus[0], tok_dir, out, num_workers=0, shard_tokens=600, val_fraction=0.1, show_progress=False
    )
    return out


# ---- reading documents


def test_iter_documents_reads_every_format(corpus, tmp_path):
    files, expected = corpus
    assert list(iter_documents(files)) == expected
    chat = tmp_path / "chat.jsonl"
    record = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "reasoning_content": "r"},
        ]
    }
    chat.write_text(json.dumps(record) + "\n")
    assert list(iter_documents([chat])) == ["q\n\nr\n\na"]


@pytest.mark.parametrize(
    "line, field, problem",
    [
        ('{"text": "ok"', None, "invalid JSON"),
        ('["a list"]', None, "expected a JSON object"),
        ('{"body": "no text"}', "text", "missing"),
        ('{"text": 42}', "text", "expected a string"),
    ],
)
def test_bad_corpus_record_names_file_line_and_field(tmp_path, line, field, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(DataError) as e:
        list(iter_documents([path]))
    assert (e.value.path, e.value.line, e.value.field) == (str(path), 2, field)
    assert problem in str(e.value) and "bad.jsonl, line 2" in str(e.value)


# ---- token shards


def test_shards_round_trip_and_manifest(corpus, shards, tok, tok_dir):
    files, docs = corpus
    manifest = read_manifest(shards)
    assert manifest["dtype"] == "uint16" and manifest["bos_id"] == tok.bos_id
    val_docs = docs[::10]  # val_fraction=0.1: every 10th document, starting with the first
    train_docs = [d for i, d in enumerate(docs) if i % 10]
    for split, split_docs in (("train", train_docs), ("val", val_docs)):
        info = manifest["splits"][split]
        assert info["documents"] == len(split_docs)
        assert info["text_bytes"] == sum(len(d.encode()) for d in split_docs)
        tokens = np.concatenate([np.fromfile(shards / s["file"], dtype=np.uint16) for s in info["shards"]])
        assert len(tokens) == info["tokens"] == sum(s["tokens"] for s in info["shards"])
        starts = np.flatnonzero(tokens == tok.bos_id)
        decoded = [tok.decode(t.tolist()) for t in np.split(tokens, starts[1:])]
        assert decoded == [tok.decode([tok.bos_id]) + d for d in split_docs]
    train = manifest["splits"]["train"]["shards"]
    assert len(train) > 1 and all(s["tokens"] <= 600 for s in train)  # documents never straddle shards
    for s in train:
        assert np.fromfile(shards / s["file"], dtype=np.uint16)[0] == tok.bos_id
    import hashlib

    assert (
        manifest["tokenizer_sha256"] == hashlib.sha256((tok_dir / "tokenizer.json").read_bytes()).hexdigest()
    )


def test_worker_processes_give_identical_shards(corpus, shards, tok_dir, tmp_path):
    tokenize_corpus(
        corpus[0], tok_dir, tmp_path, num_workers=2, shard_tokens=600, val_fraction=0.1, batch_docs=7
    )
    ours, theirs = read_manifest(tmp_path), read_manifest(shards)
    assert ours["splits"] == theirs["splits"]
    for s in ours["splits"]["train"]["shards"]:
        assert (tmp_path / s["file"]).read_bytes() == (shards / s["file"]).read_bytes()


def test_control_token_text_in_documents_stays_text(tok, tok_dir, tmp_path):
    (tmp_path / "d.txt").write_text("a <｜end▁of▁sentence｜> b <｜begin▁of▁sentence｜> <think>")
    manifest = tokenize_corpus(
        [tmp_path / "d.txt"], tok_dir, tmp_path / "s", val_fraction=0, show_progress=False
    )
    tokens = np.fromfile(tmp_path / "s" / manifest["splits"]["train"]["shards"][0]["file"], dtype=np.uint16)
    assert list(tokens).count(tok.bos_id) == 1 and tok.eos_id not in tokens and tok.think_id not in tokens


def test_big_vocabularies_use_uint32_shards(tmp_path):
    assert token_dtype(512) == token_dtype(65536) == np.uint16 and token_dtype(129280) == np.uint32
    # a DeepSeek-sized vocabulary (no merges needed): 256 bytes, filler tokens, control tokens past 65536
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    from nanoseek.tokenizer.chat_format import CONTROL_TOKENS

    vocab = {c: i for i, c in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    vocab.update({f"filler{i}": 256 + i for i in range(65_600)})
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    hf.pre_tokenizer, hf.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    hf.add_special_tokens(CONTROL_TOKENS)
    (tmp_path / "tok").mkdir()
    hf.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "d.txt").write_text("\n<|endoftext|>\n".join(make_docs(6)))
    m = tokenize_corpus(
        [tmp_path / "d.txt"], tmp_path / "tok", tmp_path / "s", val_fraction=0, show_progress=False
    )
    assert m["dtype"] == "uint32" and m["bos_id"] > 65536
    inputs, _ = next(PackedLoader(tmp_path / "s", batch_size=2, seq_len=16))
    assert (inputs[:, 0] == m["bos_id"]).all()


# ---- packed loader


def segments(row: list[int], bos: int) -> list[list[int]]:
    starts = [i for i, t in enumerate(row) if t == bos]
    return [row[a:b] for a, b in zip(starts, starts[1:] + [len(row)])]


def test_packed_batches_are_bos_aligned_crops_of_documents(shards, tok):
    loader = PackedLoader(shards, batch_size=4, seq_len=32, seed=3)
    data = np.concatenate([np.fromfile(f, dtype=np.uint16) for f in sorted(shards.glob("train_*.bin"))])
    docs = {tuple(d) for d in segments(data.tolist(), tok.bos_id)}
    for _ in range(10):
        inputs, targets = next(loader)
        assert inputs.shape == targets.shape == (4, 32)
        assert (inputs[:, 0] == tok.bos_id).all()  # every row starts at a document start
        assert (inputs[:, 1:] == targets[:, :-1]).all()  # targets are the inputs shifted by one
        for r in range(4):
            pieces = segments(inputs[r].tolist() + [targets[r, -1].item()], tok.bos_id)
            for piece in pieces[:-1]:  # whole documents ...
                assert tuple(piece) in docs
            assert any(d[: len(pieces[-1])] == tuple(pieces[-1]) for d in docs)  # ... then a cropped one


def test_packed_loader_resumes_exactly(shards):
    loader = PackedLoader(shards, batch_size=3, seq_len=40, seed=7)
    for _ in range(5):
        next(loader)
    state = json.loads(json.dumps(loader.state_dict()))  # it must survive a checkpoint file
    expected = [next(loader) for _ in range(12)]  # long enough to cross an epoch boundary
    assert loader.sampler.epoch > state["epoch"]
    resumed = PackedLoader(shards, batch_size=3, seq_len=40, seed=7)
    resumed.load_state_dict(state)
    for (x, y), (x2, y2) in zip(expected, [next(resumed) for _ in range(12)]):
        assert (x == x2).all() and (y == y2).all()
    other_seed = PackedLoader(shards, batch_size=3, seq_len=40, seed=8)
    with pytest.raises(ValueError, match="loader state"):
        other_seed.load_state_dict(state)


def test_packed_loader_ranks_read_disjoint_documents(shards, tok):
    seen = []
    for rank in range(2):
        loader = PackedLoader(shards, batch_size=2, seq_len=64, seed=1, rank=rank, world_size=2, loop=False)
        seen.append(set().union(*(doc_ids(tok.decode(x.flatten().tolist())) for x, _ in loader)))
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    train_ids = set(range(120)) - set(range(0, 120, 10))
    assert seen[0] | seen[1] <= train_ids and len(seen[0] | seen[1]) > 0.9 * len(train_ids)


def test_validation_split_is_finite_and_padded(shards, tok):
    loader = PackedLoader(shards, batch_size=4, seq_len=64, split="val")
    batches = list(loader)
    manifest = read_manifest(shards)
    n_targets = sum(int((y != -100).sum()) for _, y in batches)
    assert n_targets <= manifest["splits"]["val"]["tokens"]
    last_x, last_y = batches[-1]
    assert (last_y[-1] == -100).any()  # the last row ran out of documents: padding is ignored by the loss
    assert all(len(x) == 4 for x, _ in batches[:-1])
    assert doc_ids(tok.decode(np.concatenate([x.flatten().numpy() for x, _ in batches]).tolist())) <= set(
        range(0, 120, 10)
    )


def test_epoch_sampler_ranks_partition_each_epoch():
    for epoch in range(2):
        parts = []
        for rank in range(3):
            s = EpochSampler(10, seed=5, rank=rank, world_size=3, loop=False)
            s.load_state_dict({"epoch": epoch, "cursor": 0})
            parts.append([i for i in iter(s.next, None)])
        assert sorted(sum(parts, [])) == list(range(10))
    with pytest.raises(ValueError):
        EpochSampler(2, world_size=3)


# ---- chat data


GOOD = [
    {
        "messages": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4", "reasoning_content": "2+2=4"},
        ]
    },
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]},
    {
        "messages": [
            {"role": "user", "content": "3+3?"},
            {"role": "assistant", "content": "<think>\n3+3=6\n</think>\n\n6"},
        ]
    },
]


def write_jsonl(path, records) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def test_load_chat_jsonl(tmp_path):
    write_jsonl(tmp_path / "chat.jsonl", GOOD)
    data = load_chat_jsonl(tmp_path / "chat.jsonl")
    assert len(data) == 3 and data.num_skipped == 0
    assert data[0] == GOOD[0]["messages"]
    # reasoning stored inside content (as many distillation sets do) is split into reasoning_content
    assert data[2][1] == {"role": "assistant", "content": "6", "reasoning_content": "3+3=6"}


BAD = [
    ("{not json", None, "invalid JSON"),
    ('"just a string"', None, "expected a JSON object"),
    ({"conversation": []}, "messages", "missing"),
    ({"messages": []}, "messages", "non-empty list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role", "expected one of 'system', 'user'"),
    (
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": 4}]},
        "messages[1].content",
        "string",
    ),
    (
        {"messages": [{"role": "user", "content": "x", "reasoning_content": "r"}]},
        "messages[0].reasoning_content",
        "only",
    ),
]


@pytest.mark.parametrize("record, field, problem", BAD)
def test_bad_chat_record_names_file_line_and_field(tmp_path, record, field, problem):
    write_jsonl(tmp_path / "chat.jsonl", [GOOD[0], GOOD[1], record])
    with pytest.raises(DataError) as e:
        load_chat_jsonl(tmp_path / "chat.jsonl")
    assert (e.value.line, e.value.field) == (3, field)
    assert f"chat.jsonl, line 3: {field + ': ' if field else ''}" in str(e.value) and problem in str(e.value)


def test_skip_bad_counts_skipped_records(tmp_path):
    write_jsonl(tmp_path / "chat.jsonl", [GOOD[0], BAD[0][0], GOOD[1], BAD[4][0], BAD[5][0], GOOD[2]])
    data = load_chat_jsonl(tmp_path / "chat.jsonl", skip_bad=True)
    assert len(data) == 3 and data.num_skipped == 3
    assert [e.line for e in data.errors] == [2, 4, 5]


def conversations(n: int) -> list[list[dict]]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        answer = {
            "role": "assistant",
            "content": f"{a + b}",
            "reasoning_content": f"{a} plus {b}" * rng.randint(1, 4),
        }
        out.append([{"role": "user", "content": f"<{i}> {a}+{b}?"}, answer])
    return out


def test_chat_loader_targets_follow_the_loss_mask(tok):
    from nanoseek.tokenizer import render

    convs = conversations(5)
    loader = ChatLoader(convs, tok, batch_size=5, max_len=512, shuffle=False, loop=False)
    inputs, targets = next(loader)
    for row, conv in enumerate(convs):
        ids, mask = render(tok, conv)
        n = len(ids) - 1
        assert inputs[row, :n].tolist() == ids[:-1]
        expected = [t if m else -100 for t, m in zip(ids[1:], mask[1:])]
        assert targets[row, :n].tolist() == expected
        assert (inputs[row, n:] == tok.pad_id).all() and (targets[row, n:] == -100).all()  # padding
    assert inputs.shape[1] == max(len(render(tok, c)[0]) for c in convs) - 1
    with pytest.raises(StopIteration):
        next(loader)


def test_chat_loader_truncates_and_drops_untrainable(tok):
    no_answer = [{"role": "user", "content": "no answer"}]
    long_prompt = [{"role": "user", "content": "cat " * 100}, {"role": "assistant", "content": "ok"}]
    loader = ChatLoader(
        conversations(6) + [no_answer, long_prompt], tok, batch_size=8, max_len=24, loop=False
    )
    assert loader.num_dropped == 2 and len(loader) == 6  # nothing left to train on after truncation
    inputs, targets = next(loader)
    assert inputs.shape == (6, 24) and (targets != -100).any(dim=1).all()


def test_chat_loader_resumes_and_splits_ranks(tok):
    convs = conversations(20)
    loader = ChatLoader(convs, tok, batch_size=3, max_len=128, seed=2)
    next(loader)
    state = loader.state_dict()
    expected = [next(loader) for _ in range(10)]  # crosses epochs (20 conversations, 3 per batch)
    resumed = ChatLoader(convs, tok, batch_size=3, max_len=128, seed=2)
    resumed.load_state_dict(state)
    for (x, y), (x2, y2) in zip(expected, [next(resumed) for _ in range(10)]):
        assert x.shape == x2.shape and (x == x2).all() and (y == y2).all()
    seen = []
    for rank in range(2):
        ranked = ChatLoader(convs, tok, batch_size=4, max_len=128, rank=rank, world_size=2, loop=False)
        seen.append(set().union(*(doc_ids(tok.decode(x.flatten().tolist())) for x, _ in ranked)))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(20))
