"""The Tokenizer: a small wrapper around a Hugging Face `tokenizers.Tokenizer` with R1's special tokens.

    from nanoseek.tokenizer import Tokenizer, StreamDecoder
    tok = Tokenizer.from_dir("runs/tok")            # or Tokenizer.from_file(".../tokenizer.json")
    ids = tok.encode("Hello 世界")                   # never adds BOS/EOS implicitly
    tok.decode(ids)                                  # -> "Hello 世界"
    tok.save("runs/model")                           # tokenizer.json + tokenizer_config.json

Any tokenizer.json that has the chat format's control tokens works (DeepSeek-V3/R1's own does); training
a new one is `nanoseek.tokenizer.train_tokenizer`. `encode` turns control-token text into control
tokens (like Hugging Face); `encode_ordinary` treats every string as plain text (used for corpora and
message texts, so a document cannot inject a `<｜end▁of▁sentence｜>`). A tokenizer.json (or the
tokenizer_config.json beside it) that cannot be used raises `CheckpointError` naming the file (one type
for everything in a model directory; `nanoseek <command>` prints it as one line).

`StreamDecoder` turns a stream of token ids into text deltas for streaming responses without ever
emitting half of a multi-byte UTF-8 character (byte-level BPE splits emoji and CJK across tokens).
"""

from __future__ import annotations

import json
from pathlib import Path

import tokenizers

from nanoseek.errors import CheckpointError
from nanoseek.tokenizer import chat_format
from nanoseek.tokenizer.chat_format import ASSISTANT, BOS, END_THINK, EOS, PAD, THINK, USER

REQUIRED_TOKENS = [BOS, EOS, USER, ASSISTANT, THINK, END_THINK]
DEFAULT_MODEL_MAX_LENGTH = 131072


def _model_max_length(config_path: Path) -> int:
    """tokenizer_config.json's model_max_length (the default without the file or the field)."""
    if not config_path.is_file():
        return DEFAULT_MODEL_MAX_LENGTH
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        return int(config.get("model_max_length", DEFAULT_MODEL_MAX_LENGTH))
    except (UnicodeDecodeError, ValueError, TypeError, AttributeError, OverflowError) as exc:
        problem = f"expected a JSON object with an integer model_max_length ({type(exc).__name__}: {exc})"
        raise CheckpointError(config_path, problem, field="model_max_length") from None


class Tokenizer:
    def __init__(self, tokenizer: tokenizers.Tokenizer, model_max_length: int = DEFAULT_MODEL_MAX_LENGTH):
        missing = [t for t in REQUIRED_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"tokenizer lacks the chat format's control tokens {missing}")
        self._tok = tokenizer
        self.model_max_length = model_max_length
        self._plain_tok: tokenizers.Tokenizer | None = None
        ids: list[int] = [tokenizer.token_to_id(t) for t in REQUIRED_TOKENS]
        self.bos_id, self.eos_id, self.user_id, self.assistant_id, self.think_id, self.end_think_id = ids
        pad = tokenizer.token_to_id(PAD)
        self.pad_id: int = self.eos_id if pad is None else pad  # no pad token: EOS pads

    @property
    def _plain(self) -> tokenizers.Tokenizer:
        """The same tokenizer without its added tokens: every string is plain text to it (built on first use)."""
        if self._plain_tok is None:
            plain = json.loads(self._tok.to_str())
            plain["added_tokens"], plain["post_processor"] = [], None
            self._plain_tok = tokenizers.Tokenizer.from_str(json.dumps(plain))
        return self._plain_tok

    # ---- loading and saving

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Load a tokenizer.json (model_max_length is read from a tokenizer_config.json beside it).
        FileNotFoundError if it is missing; CheckpointError, naming the file, if it cannot be used."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}")
        max_length = _model_max_length(path.parent / "tokenizer_config.json")
        try:
            inner = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust library raises a bare Exception: "expected value at line 1 ..."
            raise CheckpointError(
                path, f"not a tokenizer file the `tokenizers` library reads ({exc})"
            ) from None
        try:
            return cls(inner, model_max_length=max_length)
        except ValueError as exc:  # lacks the chat format's control tokens
            raise CheckpointError(path, str(exc)) from None

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load from a directory holding tokenizer.json (a tokenizer, model or run directory)."""
        return cls.from_file(Path(path) / "tokenizer.json")

    def save(self, out_dir: str | Path) -> Path:
        """Write tokenizer.json and a tokenizer_config.json that `transformers.AutoTokenizer` loads."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(out_dir / "tokenizer.json"))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": self._tok.id_to_token(self.pad_id),
            "model_max_length": self.model_max_length,
            "clean_up_tokenization_spaces": False,
            "chat_template": chat_format.CHAT_TEMPLATE,
        }
        (out_dir / "tokenizer_config.json").write_text(
            json.dumps(config, indent=2, ensure_ascii=False) + "\n"
        )
        return out_dir

    # ---- encoding and decoding

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; control-token strings in it become control tokens. Adds no BOS/EOS."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text` as plain text: control-token strings in it are spelled out in bytes."""
        return self._plain.encode(text, add_special_tokens=False).ids

    def encode_ordinary_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._plain.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; skip_special_tokens drops BOS/EOS/PAD/User/Assistant but keeps <think>, </think>."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    # ---- the chat format (defined in chat_format; these are shortcuts)

    def render(self, conversation: list[dict]) -> tuple[list[int], list[int]]:
        return chat_format.render(self, conversation)

    def render_prompt(
        self, messages: list[dict], add_generation_prompt: bool = True, think: bool = True
    ) -> list[int]:
        return chat_format.render_prompt(self, messages, add_generation_prompt, think)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"


class StreamDecoder:
    """Incremental detokenizer: `push(token_id)` returns the new text, holding back incomplete characters.

        stream = StreamDecoder(tok)
        for token_id in generated:
            print(stream.push(token_id), end="", flush=True)
        print(stream.flush())

    It decodes a short window of recent tokens twice (with and without the new ones) and emits the
    difference once it no longer ends in U+FFFD (an incomplete UTF-8 sequence); this also keeps the
    spaces of tokenizers whose decoders depend on context.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0  # start of the decoding window
        self.read_offset = 0  # end of the text already emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        emitted = self._decode(self.ids[self.prefix_offset : self.read_offset])
        text = self._decode(self.ids[self.prefix_offset :])
        if len(text) > len(emitted) and not text.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return text[len(emitted) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character decodes as U+FFFD)."""
        emitted = self._decode(self.ids[self.prefix_offset : self.read_offset])
        text = self._decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return text[len(emitted) :]
