"""PackedLoader: BOS-aligned batches of (inputs, targets) from token shards, for pretraining.

    from nanoseek.data import PackedLoader
    loader = PackedLoader("runs/data", batch_size=8, seq_len=512, rank=rank, world_size=world_size)
    inputs, targets = next(loader)              # (8, 512) LongTensors; targets = inputs shifted by one
    state = loader.state_dict()                 # save with the checkpoint ...
    loader.load_state_dict(state)               # ... and the next batches are exactly the same again

BOS-aligned packing: every row (seq_len + 1 tokens) starts at the BOS of a document. Documents, visited
in a shuffled order, are placed in a row one after another, whole; the document that does not fit in
the rest of a row is cropped to fill it and the remainder of it is dropped (so a document longer than
a row contributes only its first seq_len + 1 tokens). Rows have no padding and the model never sees a
context that starts mid-document, the same as nanochat. The cost is the dropped tails; it is small when
documents are shorter than rows.

The document order comes from an `EpochSampler`: a permutation per epoch drawn from (seed, epoch), of
which rank r of world_size takes every world_size-th document, so data-parallel ranks read disjoint
documents. Because every row ends with a consumed document, the position between two batches is just
(epoch, cursor), which is what `state_dict` saves. The train split loops over epochs forever; the val
split (`split="val"`) is read once, in order, its last row padded (inputs with pad_id, targets with -100)
and its last batch possibly smaller.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nanoseek.data.sampler import EpochSampler
from nanoseek.data.shards import read_manifest

IGNORE_INDEX = -100


class PackedLoader:
    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int,
        seq_len: int,
        split: str = "train",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool | None = None,
        loop: bool | None = None,
    ):
        manifest = read_manifest(data_dir)
        if split not in manifest["splits"]:
            raise ValueError(f"no split {split!r} in {data_dir} (have {list(manifest['splits'])})")
        self.batch_size, self.seq_len, self.split = batch_size, seq_len, split
        self.bos_id, self.pad_id = manifest["bos_id"], manifest["pad_id"]
        self.shards, starts, lengths, shard_ids = [], [], [], []
        for i, shard in enumerate(manifest["splits"][split]["shards"]):
            tokens = np.memmap(Path(data_dir) / shard["file"], dtype=manifest["dtype"], mode="r")
            doc_starts = np.flatnonzero(tokens == self.bos_id)
            if len(doc_starts) != shard["documents"] or (len(tokens) and doc_starts[0] != 0):
                raise ValueError(
                    f"{shard['file']}: expected {shard['documents']} BOS-led documents, shard is corrupt"
                )
            self.shards.append(tokens)
            starts.append(doc_starts)
            lengths.append(np.diff(doc_starts, append=len(tokens)))
            shard_ids.append(np.full(len(doc_starts), i, dtype=np.int32))
        self.doc_starts = np.concatenate(starts) if starts else np.empty(0, np.int64)
        self.doc_lengths = np.concatenate(lengths) if lengths else np.empty(0, np.int64)
        self.doc_shards = np.concatenate(shard_ids) if shard_ids else np.empty(0, np.int32)
        if len(self.doc_starts) == 0:
            raise ValueError(f"split {split!r} of {data_dir} has no documents")
        is_train = split == "train"
        self.sampler = EpochSampler(
            len(self.doc_starts),
            seed=seed,
            rank=rank,
            world_size=world_size,
            shuffle=is_train if shuffle is None else shuffle,
            loop=is_train if loop is None else loop,
        )

    @property
    def num_documents(self) -> int:
        return len(self.doc_starts)

    @property
    def num_tokens(self) -> int:
        return int(self.doc_lengths.sum())

    def _fill_row(self, row: np.ndarray) -> int:
        """Fill `row` with whole documents, cropping the last; returns how many tokens were filled."""
        filled = 0
        while filled < len(row):
            doc = self.sampler.next()
            if doc is None:
                break
            take = min(int(self.doc_lengths[doc]), len(row) - filled)
            start = int(self.doc_starts[doc])
            row[filled : filled + take] = self.shards[self.doc_shards[doc]][start : start + take]
            filled += take
        return filled

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.full((self.batch_size, self.seq_len + 1), self.pad_id, dtype=np.int64)
        valid = np.zeros_like(rows, dtype=bool)
        n = 0
        while n < self.batch_size:
            filled = self._fill_row(rows[n])
            if filled == 0:
                break
            valid[n, :filled] = True
            n += 1
        if n == 0:
            raise StopIteration
        rows, valid = torch.from_numpy(rows[:n]), torch.from_numpy(valid[:n])
        inputs = rows[:, :-1].clone()
        targets = rows[:, 1:].masked_fill(~valid[:, 1:], IGNORE_INDEX)
        return inputs, targets

    def state_dict(self) -> dict:
        """The exact position: the next batch after load_state_dict is the one next(self) would give now."""
        s = self.sampler
        return {
            "split": self.split,
            "seed": s.seed,
            "rank": s.rank,
            "world_size": s.world_size,
            **s.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        s = self.sampler
        mine = {"split": self.split, "seed": s.seed, "rank": s.rank, "world_size": s.world_size}
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise ValueError(f"loader state is for {theirs}, this loader is {mine}")
        s.load_state_dict(state)
