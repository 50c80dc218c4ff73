"""Automatic prefix caching: cache rows of earlier prompts, reused block by block across requests.

    prefix = PrefixCache(engine_cache, block_size=16, max_bytes=256 * 2**20, disk_dir="~/.cache/px")
    prefix.set_fingerprint(weights_fingerprint(model, engine_cache, with_weights=True))
    hit = prefix.load(prompt_ids, slot)          # rows [0, hit) copied into the slot; prefill from hit
    ...prefill prompt[hit:] in chunks...
    prefix.store(prompt_ids, slot, upto=end)     # after a chunk: its full blocks, copied out

A chat turn re-sends the whole conversation, a GRPO batch or an eval run repeats a system prompt or
a few-shot header: the cache rows of those tokens were computed before. The engine's cache (MLA's
`LatentCache`, a GQA `KVCache`: anything with `kv`, one tensor per layer shaped (num_slots, max_len,
width), one row per token) is cut into blocks of `block_size` positions; block i of a prompt is
keyed by a hash chain, key_i = sha256(key_{i-1} + the block's token ids), with key_{-1} the model's
fingerprint (config, cache layout and, where a disk tier outlives the process, a checksum of the
weights), so a key names the whole prefix it ends and a block is never reused across different
weights. On admission the engine takes the longest chain of cached blocks that leaves at least one
prompt token to prefill (the last token's logits are needed), copies their rows into the new
sample's slot in every layer (the MTP layer too), and starts chunked prefill there.

Blocks are copies: a stored block is never written by a running sample, so samples that diverge
after a shared prefix share nothing mutable (copy-on-write without the bookkeeping). A copy of a
block's rows costs one memcpy per layer, against a forward pass per token to recompute them.

Memory: a byte budget over the stored rows, least recently used blocks evicted first. A block is
always touched after its descendants (`_touch_chain` walks leaf to root), so the least recently used
block has no cached child: eviction removes leaves, and no cached block is ever unreachable.
Disk (optional): every stored block is also written to `disk_dir/<key>.safetensors` (write to a
temporary name, then rename: a crash leaves no half file), with its own byte budget evicted by file
mtime, and read back on a memory miss. Files of other weights are never matched (their keys start
from another fingerprint); they age out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

BLOCK_SIZE = 16  # tokens per block: small enough to reuse most of a prefix, large enough to hash rarely
DEFAULT_MB = 256.0  # memory budget of `nanoseek serve` / `generate` and of Engine by default
DEFAULT_DISK_MB = 4096.0


def weights_checksum(model: torch.nn.Module) -> str:
    """sha256 over the model's parameters and persistent buffers (names, dtypes, shapes, bytes): the
    same weights give the same checksum in any process (~0.6 GB/s on one CPU core)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_fingerprint(model: torch.nn.Module, cache: Any, with_weights: bool) -> bytes:
    """The root of every block key: the model's config, the cache's layout and the weights' identity.
    with_weights: a checksum of the weights (needed by a disk tier, which another process reads);
    otherwise a fresh random nonce, so the key lives exactly as long as these weights in this engine."""
    config = getattr(model, "config", None)
    config = config.to_dict() if hasattr(config, "to_dict") else repr(config)
    layout = [(tuple(t.shape[2:]), str(t.dtype)) for t in cache.kv]
    weights = weights_checksum(model) if with_weights else uuid.uuid4().hex
    text = json.dumps([type(model).__name__, config, layout, weights], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).digest()


@dataclass
class Block:
    rows: list[torch.Tensor]  # one (block_size, width) tensor per cache layer
    nbytes: int


class PrefixCache:
    """Blocks of cache rows keyed by the prefix they end (see the module docstring)."""

    def __init__(
        self,
        cache: Any,
        block_size: int = BLOCK_SIZE,
        max_bytes: int = int(DEFAULT_MB * 2**20),
        disk_dir: str | Path | None = None,
        disk_max_bytes: int = int(DEFAULT_DISK_MB * 2**20),
    ):
        if block_size < 1:
            raise ValueError("prefix cache block_size must be >= 1")
        self.cache = cache
        self.block_size = block_size
        self.max_bytes = max_bytes
        self.blocks: OrderedDict[bytes, Block] = OrderedDict()  # least recently used first
        self.bytes = 0
        self.fingerprint = b""
        self.hit_tokens = self.miss_tokens = 0  # prompt tokens reused / computed, counted by `count`
        self.disk = DiskTier(Path(disk_dir).expanduser(), disk_max_bytes) if disk_dir else None

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def set_fingerprint(self, fingerprint: bytes) -> None:
        """New weights: every block in memory belongs to the old ones, so they go (disk blocks stay,
        keyed by their own weights' fingerprint)."""
        if fingerprint != self.fingerprint:
            self.blocks.clear()
            self.bytes = 0
            self.fingerprint = fingerprint

    def keys(self, ids: list[int], n_blocks: int) -> list[bytes]:
        """Keys of the first n_blocks full blocks of ids."""
        keys, key, B = [], self.fingerprint, self.block_size
        for i in range(n_blocks):
            block = np.asarray(ids[i * B : (i + 1) * B], dtype=np.int64).tobytes()
            key = hashlib.sha256(key + block).digest()
            keys.append(key)
        return keys

    # ------------------------------------------------------------------ the engine's two calls
    def load(self, ids: list[int], slot: int, keep: int = 1) -> int:
        """Copy the longest cached prefix of `ids` that leaves at least `keep` tokens to prefill into
        `slot` (every layer); returns its length in tokens (a multiple of block_size, or 0)."""
        if not self.enabled:
            return 0
        found: list[Block] = []
        keys = self.keys(ids, max(0, len(ids) - keep) // self.block_size)
        for key in keys:
            block = self.blocks.get(key) or self._from_disk(key)
            if block is None:
                break
            found.append(block)
        if not found:
            return 0
        self._touch_chain(keys[: len(found)])
        n = len(found) * self.block_size
        for layer, t in enumerate(self.cache.kv):
            t[slot, :n] = torch.cat([b.rows[layer] for b in found])
        return n

    def store(self, ids: list[int], slot: int, upto: int) -> int:
        """Copy out the full blocks of ids[:upto] (rows of `slot`) not cached yet; returns how many
        blocks were new."""
        if not self.enabled:
            return 0
        keys = self.keys(ids, upto // self.block_size)
        new = 0
        for i, key in enumerate(keys):
            if key in self.blocks:
                continue
            a, b = i * self.block_size, (i + 1) * self.block_size
            rows = [t[slot, a:b].clone() for t in self.cache.kv]
            block = Block(rows, sum(r.nbytes for r in rows))
            if block.nbytes > self.max_bytes:
                return new  # no block fits the budget
            self._insert(key, block)
            if self.disk is not None:
                self.disk.write(key, block.rows)
            new += 1
        self._touch_chain(keys)
        return new

    # ------------------------------------------------------------------ memory
    def _insert(self, key: bytes, block: Block) -> None:
        self.blocks[key] = block
        self.bytes += block.nbytes
        while self.bytes > self.max_bytes:
            _, old = self.blocks.popitem(last=False)  # a leaf (see _touch_chain)
            self.bytes -= old.nbytes

    def _touch_chain(self, keys: list[bytes]) -> None:
        """Mark a chain used, leaf first, so every block is more recent than its descendants."""
        for key in reversed(keys):
            if key in self.blocks:
                self.blocks.move_to_end(key)

    def _from_disk(self, key: bytes) -> Block | None:
        if self.disk is None:
            return None
        rows = self.disk.read(key, self.cache.kv)
        if rows is None:
            return None
        block = Block(rows, sum(r.nbytes for r in rows))
        if block.nbytes <= self.max_bytes:
            self._insert(key, block)
        return block

    def count(self, hit: int, miss: int) -> None:
        """Book one request's prompt tokens: `hit` reused from the cache, `miss` prefilled."""
        self.hit_tokens += hit
        self.miss_tokens += miss

    @property
    def hit_rate(self) -> float:
        """Fraction of prompt tokens reused (nan before any request)."""
        total = self.hit_tokens + self.miss_tokens
        return self.hit_tokens / total if total else float("nan")

    def stats(self) -> dict[str, int]:
        out = {
            "hit_tokens": self.hit_tokens,
            "miss_tokens": self.miss_tokens,
            "blocks": len(self.blocks),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
        }
        if self.disk is not None:
            out.update(disk_blocks=len(self.disk.files), disk_bytes=self.disk.bytes)
        return out


class DiskTier:
    """Blocks as safetensors files `<key hex>.safetensors` under one directory, least recently used
    first out within a byte budget. The index (name -> size, oldest first) is read from the directory
    once, at start-up, ordered by mtime; reads touch the file's mtime, so the order survives restarts."""

    SUFFIX = ".safetensors"

    def __init__(self, root: Path, max_bytes: int):
        self.root, self.max_bytes = root, max_bytes
        root.mkdir(parents=True, exist_ok=True)
        found = [(p.stat(), p.name) for p in root.glob("*" + self.SUFFIX)]
        found.sort(key=lambda item: item[0].st_mtime)
        self.files: OrderedDict[str, int] = OrderedDict((name, st.st_size) for st, name in found)
        self.bytes = sum(self.files.values())
        self._evict()

    def name(self, key: bytes) -> str:
        return key.hex() + self.SUFFIX

    def write(self, key: bytes, rows: list[torch.Tensor]) -> None:
        name = self.name(key)
        if name in self.files or self.max_bytes <= 0:
            return
        path = self.root / name
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        try:
            save_file({f"layer.{i}": r.detach().cpu().contiguous() for i, r in enumerate(rows)}, str(tmp))
            os.replace(tmp, path)
            size = path.stat().st_size
        except OSError as exc:  # a full or read-only disk costs the disk tier, never the request
            log.warning("prefix cache: could not write %s: %s", path, exc)
            tmp.unlink(missing_ok=True)
            return
        self.files[name] = size
        self.bytes += size
        self._evict()

    def read(self, key: bytes, like: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """The block's rows on the cache's devices and dtypes; None if absent or unreadable."""
        name = self.name(key)
        if name not in self.files:
            return None
        path = self.root / name
        try:
            tensors = load_file(str(path))
            rows = [tensors[f"layer.{i}"].to(t.device, t.dtype) for i, t in enumerate(like)]
            os.utime(path)  # recently used, for the next start-up's order
        except (OSError, KeyError, RuntimeError, ValueError) as exc:  # gone, or another layout
            log.warning("prefix cache: ignoring %s: %s", path, exc)
            self._forget(name)
            return None
        if len(tensors) != len(like) or any(r.shape[1:] != t.shape[2:] for r, t in zip(rows, like)):
            return None
        self.files.move_to_end(name)
        return rows

    def _forget(self, name: str) -> None:
        self.bytes -= self.files.pop(name, 0)

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and self.files:
            name = next(iter(self.files))
            (self.root / name).unlink(missing_ok=True)
            self._forget(name)
