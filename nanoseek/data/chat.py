"""Chat datasets: read conversations from JSONL and batch them for SFT / distillation.

    from nanoseek.data import ChatLoader, load_chat_jsonl
    conversations = load_chat_jsonl("data/sft.jsonl")                  # raises DataError on a bad record
    conversations = load_chat_jsonl("data/sft.jsonl", skip_bad=True)   # ... or skips it:
    print(conversations.num_skipped, conversations.errors[:3])
    loader = ChatLoader(conversations, tok, batch_size=8, max_len=1024)
    inputs, targets = next(loader)     # (8, L) LongTensors; L = longest row in the batch (<= max_len)

The file format is OpenAI's: one `{"messages": [{"role": ..., "content": ...}, ...]}` object per line,
roles system / user / assistant, and an optional `reasoning_content` string on assistant messages
(DeepSeek's API field). An assistant `content` that holds its own thinking (`<think>...</think>answer`,
as many distillation datasets store it) and has no reasoning_content is split into the two fields.

ChatLoader renders every conversation with the chat format (`nanoseek.tokenizer.chat_format.render`),
keeps the first max_len + 1 tokens, and yields inputs = ids[:-1] and targets = ids[1:] with -100 (the
ignore index of cross-entropy) wherever the loss mask is 0 and in padding (inputs are padded with
pad_id). Conversations left without any target token are dropped (`num_dropped`); when none is left,
a DataError names `source` (the files the conversations came from). The order, the
rank split and the resumable position work as in PackedLoader (an `EpochSampler` over conversations).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanoseek.data.sampler import EpochSampler
from nanoseek.tokenizer.chat_format import END_THINK, FormatError, render, split_completion, validate
from nanoseek.tokenizer.core import Tokenizer
from nanoseek.tokenizer.documents import DataError

IGNORE_INDEX = -100


class ChatDataset(list):
    """A list of conversations that also says what was skipped while loading it."""

    def __init__(self, conversations=(), errors: list[DataError] | None = None):
        super().__init__(conversations)
        self.errors: list[DataError] = errors or []

    @property
    def num_skipped(self) -> int:
        return len(self.errors)


def parse_chat_record(record: Any, path: str | Path = "<record>", lineno: int | None = None) -> list[dict]:
    """Validate one record ({"messages": [...]}) and return its clean conversation, or raise DataError."""
    if not isinstance(record, dict):
        raise DataError(path, lineno, None, f"expected a JSON object, got {type(record).__name__}")
    if "messages" not in record:
        raise DataError(
            path, lineno, "messages", f"missing (expected a list of messages; keys: {list(record)})"
        )
    try:
        validate(record["messages"])
    except FormatError as e:
        raise DataError(path, lineno, e.field, e.problem) from None
    conversation = []
    for m in record["messages"]:
        message = {"role": m["role"], "content": m["content"]}
        if m.get("reasoning_content") is not None:
            message["reasoning_content"] = m["reasoning_content"]
        elif m["role"] == "assistant" and END_THINK in m["content"]:
            message["reasoning_content"], message["content"] = split_completion(m["content"])
        conversation.append(message)
    return conversation


def load_chat_jsonl(path: str | Path, skip_bad: bool = False) -> ChatDataset:
    """Conversations of a chat JSONL file. A bad record raises DataError (file, line, field, expectation),
    or with skip_bad=True is skipped and recorded in `.errors` / counted in `.num_skipped`."""
    data = ChatDataset()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(
                        path, lineno, None, f"invalid JSON ({e.msg} at column {e.colno})"
                    ) from None
                data.append(parse_chat_record(record, path, lineno))
            except DataError as e:
                if not skip_bad:
                    raise
                data.errors.append(e)
    return data


def nothing_to_train_on(source: str | Path, count: int, first_answer: int | None, max_len: int) -> DataError:
    """The DataError of chat data that leaves no target token: empty, or every answer past max_len."""
    if not count:
        return DataError(source, None, None, "no conversations to train on")
    if first_answer is not None and first_answer >= 0:
        why = (
            f"the first conversation's answer starts at token {first_answer}, past the sequence length "
            f"{max_len}; raise the sequence length (train.seq_len) or shorten the prompts"
        )
    else:
        why = "the first has no assistant message to learn"
    return DataError(
        source, None, None, f"none of its {count} conversation(s) has an assistant token to train on ({why})"
    )


class ChatLoader:
    def __init__(
        self,
        conversations: list[list[dict]],
        tokenizer: Tokenizer,
        batch_size: int,
        max_len: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        loop: bool = True,
        source: str | Path = "<conversations>",
    ):
        self.batch_size, self.max_len, self.pad_id = batch_size, max_len, tokenizer.pad_id
        self.ids: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.num_dropped = 0
        first_answer: int | None = None  # where the first conversation's first target token is
        for conversation in conversations:
            ids, mask = render(tokenizer, conversation)
            if first_answer is None:
                first_answer = next((i for i, m in enumerate(mask) if m and i > 0), -1)
            ids, mask = (
                np.array(ids[: max_len + 1], dtype=np.int64),
                np.array(mask[: max_len + 1], dtype=bool),
            )
            targets = np.where(mask[1:], ids[1:], IGNORE_INDEX)
            if not mask[1:].any():
                self.num_dropped += 1
                continue
            self.ids.append(ids[:-1])
            self.targets.append(targets)
        if not self.ids:
            raise nothing_to_train_on(source, len(conversations), first_answer, max_len)
        self.sampler = EpochSampler(len(self.ids), seed, rank, world_size, shuffle, loop)

    def __len__(self) -> int:
        """Number of (kept) conversations."""
        return len(self.ids)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        picked = []
        while len(picked) < self.batch_size and (i := self.sampler.next()) is not None:
            picked.append(i)
        if not picked:
            raise StopIteration
        length = max(len(self.ids[i]) for i in picked)
        inputs = torch.full((len(picked), length), self.pad_id, dtype=torch.long)
        targets = torch.full((len(picked), length), IGNORE_INDEX, dtype=torch.long)
        for row, i in enumerate(picked):
            inputs[row, : len(self.ids[i])] = torch.from_numpy(self.ids[i])
            targets[row, : len(self.targets[i])] = torch.from_numpy(self.targets[i])
        return inputs, targets

    def state_dict(self) -> dict:
        s = self.sampler
        return {"seed": s.seed, "rank": s.rank, "world_size": s.world_size, **s.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        s = self.sampler
        mine = {"seed": s.seed, "rank": s.rank, "world_size": s.world_size}
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise ValueError(f"loader state is for {theirs}, this loader is {mine}")
        s.load_state_dict(state)
