"""Chat datasets: read conversations from data files in every common format and shape, and batch them
for SFT / distillation.

    from nanoseek.data import ChatFields, ChatLoader, load_chat
    conversations = load_chat("data/sft.jsonl")                        # raises DataError on a bad record
    conversations = load_chat("chat.parquet", skip_bad=True)            # ... or skips it:
    print(conversations.num_skipped, conversations.errors[:3])
    conversations = load_chat("data/", fields=ChatFields(format="sharegpt", messages_field="dialog"))
    loader = ChatLoader(conversations, tok, batch_size=8, max_len=1024)
    inputs, targets = next(loader)     # (8, L) LongTensors; L = longest row in the batch (<= max_len)

A source is anything `nanoseek.records` reads: JSONL (.gz/.zst), JSON, parquet, arrow, CSV/TSV, a
folder of them, a `datasets` save_to_disk folder, a Hub id (`open-r1/Mixture-of-Thoughts:math`).
`load_chat_jsonl` is the older name of `load_chat` (any format, despite the name).

The shape of a record (`ChatFields.format`, `data.format` in a recipe; "auto" decides per record, in
this order):
- `messages`: OpenAI's `{"messages": [{"role", "content"}, ...]}`, roles system / user / assistant, an
  optional `reasoning_content` string on assistant messages (DeepSeek's API field). Open-R1's data
  (Mixture-of-Thoughts; OpenR1-Math-220k's `messages` column) is this shape with the thinking inside
  the assistant content.
- `sharegpt`: `{"conversations": [{"from", "value"}, ...]}`, from = human / user, gpt / assistant,
  system (a message written with role/content there works too).
- `openr1_math`: OpenR1-Math-220k's columns: the user turn is `problem`; the assistant turn the first of
  `generations` marked correct by `correctness_math_verify` (else by `correctness_llama`, the Llama
  judge), and complete where `is_reasoning_complete` says so; without `generations`, `solution`.
- `pairs`: a prompt field (`prompt`, `instruction` (+ a non-empty `input`, as Alpaca), `question`,
  `query`, `problem`) and a response field (`response`, `completion`, `output`, `answer`,
  `solution`), with an optional reasoning field (`reasoning_content`, `reasoning`); prompt and
  completion may also be lists of messages (TRL's conversational prompt/completion).
`messages_field`, `prompt_field`, `response_field` and `reasoning_field` name other fields (the
messages field of both messages and sharegpt). A record's non-empty `system` string becomes the system
message when the conversation has none. In every shape, an assistant `content` that holds its own
thinking (`<think>...</think>answer`, as Open-R1's and many distillation datasets store it) and has no
reasoning_content is split into the two fields. A bad record is a DataError naming the file, the record
and the field as the file spells it (`conversations[2].from`).

ChatLoader renders every conversation with the chat format (`nanoseek.tokenizer.chat_format.render`),
keeps the first max_len + 1 tokens, and yields inputs = ids[:-1] and targets = ids[1:] with -100 (the
ignore index of cross-entropy) wherever the loss mask is 0 and in padding (inputs are padded with
pad_id). Conversations left without any target token are dropped (`num_dropped`); when none is left,
a DataError names `source` (the files the conversations came from). The order, the
rank split and the resumable position work as in PackedLoader (an `EpochSampler` over conversations).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanoseek.data.sampler import EpochSampler
from nanoseek.records import CORPUS_ONLY, DataError, Where, expand_sources, iter_records, suffix_of
from nanoseek.tokenizer.chat_format import (
    END_THINK,
    FormatError,
    _show,  # how the chat format's own errors quote a value
    render,
    split_completion,
    validate,
)
from nanoseek.tokenizer.core import Tokenizer

IGNORE_INDEX = -100
FORMATS = ("auto", "messages", "sharegpt", "openr1_math", "pairs")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
PROMPT_FIELDS = ("prompt", "instruction", "question", "query", "problem")
RESPONSE_FIELDS = ("response", "completion", "output", "answer", "solution")
REASONING_FIELDS = ("reasoning_content", "reasoning")


@dataclass(frozen=True)
class ChatFields:
    """Where a record keeps its conversation (the module docstring; `data.format`, `data.*_field`)."""

    format: str = "auto"  # auto | messages | sharegpt | openr1_math | pairs
    messages_field: str = ""  # "": "messages" (messages), "conversations" (sharegpt)
    prompt_field: str = ""  # pairs; "": the first of PROMPT_FIELDS the record has
    response_field: str = ""  # pairs; "": the first of RESPONSE_FIELDS
    reasoning_field: str = ""  # pairs; "": the first of REASONING_FIELDS, if any

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"chat format {self.format!r}: expected one of {', '.join(FORMATS)}")


class ChatDataset(list):
    """A list of conversations that also says what was skipped while loading it."""

    def __init__(self, conversations=(), errors: list[DataError] | None = None):
        super().__init__(conversations)
        self.errors: list[DataError] = errors or []

    @property
    def num_skipped(self) -> int:
        return len(self.errors)


def load_chat(
    source: str | Path, skip_bad: bool = False, fields: ChatFields | None = None, split: str | None = None
) -> ChatDataset:
    """Conversations of `source` (a file, a folder or a Hub id; `split` for a Hub id without @split or a
    saved DatasetDict). A bad record raises DataError (file, record, field, expectation), or with
    skip_bad=True is skipped and recorded in `.errors` / counted in `.num_skipped`."""
    fields = fields or ChatFields()
    data = ChatDataset()
    on_error = data.errors.append if skip_bad else None
    for inner in expand_sources([source]):
        if suffix_of(inner) in CORPUS_ONLY:
            raise DataError(
                inner, None, None, "plain text is a corpus, not chat data (records with messages)"
            )
        for where, record in iter_records(inner, split=split, on_error=on_error):
            try:
                data.append(parse_chat_record(record, where, fields=fields))
            except DataError as e:
                if not skip_bad:
                    raise
                data.errors.append(e)
    return data


load_chat_jsonl = load_chat  # the older name; it reads every format


def parse_chat_record(
    record: Any, path: str | Path = "<record>", lineno: int | None = None, fields: ChatFields | None = None
) -> list[dict]:
    """The clean conversation of one record, or a DataError naming `path` (a Where from iter_records, or
    a file name with `lineno`), the record and the field."""
    fields = fields or ChatFields()
    where = path if isinstance(path, Where) else Where(str(path), lineno)
    if not isinstance(record, dict):
        raise DataError(where, None, None, f"expected a JSON object, got {type(record).__name__}")
    shape = fields.format if fields.format != "auto" else _detect(record, fields, where)
    if shape in ("messages", "sharegpt"):
        name = fields.messages_field or ("messages" if shape == "messages" else "conversations")
        if name not in record:
            raise DataError(where, None, name, f"missing (expected a list of messages; keys: {list(record)})")
        conversation = _messages(record[name], name, where)
    elif shape == "openr1_math":
        conversation = _openr1_math(record, where)
    else:
        conversation = _pair(record, fields, where)
    return _with_system(record, conversation)


def _detect(record: dict, fields: ChatFields, where: Where) -> str:
    """The shape of a record in "auto" mode (module docstring: messages, sharegpt, openr1_math, pairs)."""
    if fields.messages_field in record or "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "problem" in record and "generations" in record:
        return "openr1_math"
    prompt = fields.prompt_field or next((k for k in PROMPT_FIELDS if k in record), None)
    response = fields.response_field or next((k for k in RESPONSE_FIELDS if k in record), None)
    if prompt in record and response in record:
        return "pairs"
    expected = (
        "a list of messages; or ShareGPT 'conversations', OpenR1-Math 'problem' + 'generations', "
        "or a prompt/response pair (data.format and data.*_field name others)"
    )
    name = fields.messages_field or "messages"
    raise DataError(where, None, name, f"missing (expected {expected}; keys: {list(record)})")


def _messages(value: Any, name: str, where: Where) -> list[dict]:
    """A clean conversation from a list of messages: role/content (+ reasoning_content) or from/value."""
    if isinstance(value, list):
        value = [_from_sharegpt(m, f"{name}[{i}]", where) for i, m in enumerate(value)]
    try:
        validate(value)
    except FormatError as e:
        raise DataError(where, None, name + e.field.removeprefix("messages"), e.problem) from None
    return [_clean(m) for m in value]


def _from_sharegpt(m: Any, field: str, where: Where) -> Any:
    """A ShareGPT message ({"from", "value"}) as role/content; any other value as it is."""
    if not isinstance(m, dict) or "from" not in m or m.get("role") is not None:
        return m
    role = SHAREGPT_ROLES.get(m["from"].lower() if isinstance(m["from"], str) else None)
    if role is None:
        names = ", ".join(map(repr, SHAREGPT_ROLES))
        raise DataError(where, None, f"{field}.from", f"expected one of {names}, got {_show(m['from'])}")
    if not isinstance(m.get("value"), str):
        raise DataError(where, None, f"{field}.value", f"expected a string, got {_show(m.get('value'))}")
    return {"role": role, "content": m["value"]}


def _clean(m: dict) -> dict:
    """role and content (and reasoning_content), the thinking inside an assistant content split out."""
    message = {"role": m["role"], "content": m["content"]}
    if m.get("reasoning_content") is not None:
        message["reasoning_content"] = m["reasoning_content"]
    elif m["role"] == "assistant" and END_THINK in m["content"]:
        message["reasoning_content"], message["content"] = split_completion(m["content"])
    return message


def _text(record: dict, name: str, where: Where) -> str:
    value = record.get(name)
    if name not in record:
        raise DataError(where, None, name, f"missing (keys: {list(record)})")
    if not isinstance(value, str) or not value.strip():
        raise DataError(where, None, name, f"expected a non-empty string, got {_show(value)}")
    return value


def _openr1_math(record: dict, where: Where) -> list[dict]:
    """problem -> the first generation judged correct (OpenR1-Math-220k's columns), else -> solution."""
    user = {"role": "user", "content": _text(record, "problem", where)}
    if "generations" not in record:
        return [user, _clean({"role": "assistant", "content": _text(record, "solution", where)})]
    generations = record["generations"]
    if not isinstance(generations, list) or not all(isinstance(g, str) for g in generations):
        raise DataError(where, None, "generations", f"expected a list of strings, got {_show(generations)}")
    complete = _flags(record, "is_reasoning_complete", len(generations), where)
    for judge in ("correctness_math_verify", "correctness_llama"):
        verdicts = _flags(record, judge, len(generations), where)
        for i, generation in enumerate(generations):
            if verdicts[i] and complete[i] is not False:
                return [user, _clean({"role": "assistant", "content": generation})]
    problem = "no complete generation is marked correct (correctness_math_verify, correctness_llama)"
    raise DataError(where, None, "generations", problem)


def _flags(record: dict, name: str, n: int, where: Where) -> list[bool | None]:
    """A per-generation list of booleans (None where the record has none or the judge did not judge)."""
    value = record.get(name)
    if value is None:
        return [None] * n
    if (
        not isinstance(value, list)
        or len(value) != n
        or not all(v is None or isinstance(v, bool) for v in value)
    ):
        raise DataError(
            where, None, name, f"expected a list of {n} booleans (one per generation), got {_show(value)}"
        )
    return value


def _pair(record: dict, fields: ChatFields, where: Where) -> list[dict]:
    """A prompt/response pair: strings, or lists of messages (TRL's conversational prompt/completion)."""
    prompt = fields.prompt_field or next((k for k in PROMPT_FIELDS if k in record), PROMPT_FIELDS[0])
    response = fields.response_field or next((k for k in RESPONSE_FIELDS if k in record), RESPONSE_FIELDS[0])
    if isinstance(record.get(prompt), list):
        head = _messages(record[prompt], prompt, where)
    else:
        text = _text(record, prompt, where)
        if prompt == "instruction" and isinstance(record.get("input"), str) and record["input"].strip():
            text = f"{text}\n\n{record['input']}"  # Alpaca: the instruction, then its input
        head = [{"role": "user", "content": text}]
    if isinstance(record.get(response), list):
        return head + _messages(record[response], response, where)
    answer = {"role": "assistant", "content": _text(record, response, where)}
    reasoning = fields.reasoning_field or next((k for k in REASONING_FIELDS if k in record), None)
    if reasoning is not None and record.get(reasoning) is not None:
        if not isinstance(record[reasoning], str):
            raise DataError(where, None, reasoning, f"expected a string, got {_show(record[reasoning])}")
        answer["reasoning_content"] = record[reasoning]
    return head + [_clean(answer)]


def _with_system(record: dict, conversation: list[dict]) -> list[dict]:
    system = record.get("system")
    if isinstance(system, str) and system.strip() and conversation[0]["role"] != "system":
        return [{"role": "system", "content": system}, *conversation]
    return conversation


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
