"""Data: corpora -> token shards -> packed pretraining batches; chat JSONL -> SFT batches.

    from nanoseek.data import tokenize_corpus, PackedLoader, load_chat_jsonl, ChatLoader
    tokenize_corpus(["data/"], "runs/tok", "runs/data")
    loader = PackedLoader("runs/data", batch_size=8, seq_len=512)

Modules (reading .txt/.jsonl/.parquet files and DataError live below, in `nanoseek.tokenizer.documents`,
re-exported here): `shards` (tokenize_corpus, manifest),
`sampler` (deterministic, resumable, rank-disjoint order), `packed` (PackedLoader), `chat`
(load_chat_jsonl, ChatLoader).
"""

from nanoseek.data.chat import ChatDataset, ChatLoader, load_chat_jsonl, parse_chat_record
from nanoseek.data.packed import PackedLoader
from nanoseek.data.sampler import EpochSampler
from nanoseek.data.shards import read_manifest, tokenize_corpus, tokenize_main
from nanoseek.tokenizer.documents import DataError, expand_files, iter_documents, write_jsonl

__all__ = [
    "ChatDataset",
    "ChatLoader",
    "DataError",
    "EpochSampler",
    "PackedLoader",
    "expand_files",
    "iter_documents",
    "load_chat_jsonl",
    "parse_chat_record",
    "read_manifest",
    "tokenize_corpus",
    "tokenize_main",
    "write_jsonl",
]
