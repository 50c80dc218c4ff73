"""Data: corpora -> token shards -> packed pretraining batches; chat data -> SFT batches.

    from nanoseek.data import tokenize_corpus, PackedLoader, load_chat, ChatLoader
    tokenize_corpus(["data/"], "runs/tok", "runs/data")
    loader = PackedLoader("runs/data", batch_size=8, seq_len=512)

Modules (reading data files of every format and DataError live below, in `nanoseek.records`; corpus
documents in `nanoseek.tokenizer.documents`; both re-exported here): `shards` (tokenize_corpus, manifest),
`sampler` (deterministic, resumable, rank-disjoint order), `packed` (PackedLoader), `chat`
(load_chat, ChatFields, ChatLoader).
"""

from nanoseek.data.chat import (
    ChatDataset,
    ChatFields,
    ChatLoader,
    load_chat,
    load_chat_jsonl,
    parse_chat_record,
)
from nanoseek.data.packed import PackedLoader
from nanoseek.data.sampler import EpochSampler
from nanoseek.data.shards import read_manifest, tokenize_corpus, tokenize_main
from nanoseek.records import expand_sources, iter_records
from nanoseek.tokenizer.documents import DataError, expand_files, iter_documents, write_jsonl

__all__ = [
    "ChatDataset",
    "ChatFields",
    "ChatLoader",
    "DataError",
    "EpochSampler",
    "PackedLoader",
    "expand_files",
    "expand_sources",
    "iter_documents",
    "iter_records",
    "load_chat",
    "load_chat_jsonl",
    "parse_chat_record",
    "read_manifest",
    "tokenize_corpus",
    "tokenize_main",
    "write_jsonl",
]
