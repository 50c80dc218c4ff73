"""The Tokenizer: a small wrapper around a Hugging Face `tokenizers.Tokenizer`, with its chat format.

    from nanoseek.tokenizer import Tokenizer, StreamDecoder
    tok = Tokenizer.from_dir("runs/tok")            # or Tokenizer.from_file(".../tokenizer.json")
    ids = tok.encode("Hello 世界")                   # never adds BOS/EOS implicitly
    tok.decode(ids)                                  # -> "Hello 世界"
    tok.save("runs/model")                           # tokenizer.json + tokenizer_config.json

Two kinds of tokenizer directory load:
- nanoseek's own (or DeepSeek-V3/R1's): a tokenizer.json with R1's control tokens and no chat template
  in tokenizer_config.json, or ours (`chat_format.CHAT_TEMPLATE`). Conversations are rendered by THE
  chat format (`chat_format`); training one is `nanoseek.tokenizer.train_tokenizer`.
- a model's own (Qwen, Llama, SmolLM2, the R1 distills): tokenizer.json + tokenizer_config.json with a
  `chat_template` (a string, a list of named templates, or chat_template.jinja beside it), rendered by
  `chat_template.ChatTemplate` as transformers renders it; `bos_token` / `eos_token` / `pad_token` /
  `add_bos_token` / `added_tokens_decoder` from tokenizer_config.json, stop tokens from
  generation_config.json (`eos_token_id`, an int or a list) plus the template's end-of-turn token. A
  model's tokenizer without a template (a base Llama) loads too: it encodes and decodes, and rendering a
  conversation is a clear error.

Ids every stage reads: `bos_id` (what nanoseek puts before a document; without a bos_token, as in Qwen,
generation_config's bos_token_id, else EOS), `eos_id`, `pad_id` (EOS without a pad token), `stop_ids`
(every token that ends a generation), `think_id` / `end_think_id` (`<think>` / `</think>` when they are
single tokens, else None), and `add_bos_token` (whether Hugging Face's `tokenizer(text)` puts BOS first).

`encode` turns control-token text into control tokens (like Hugging Face); `encode_ordinary` treats
every string as plain text (used for corpora and message texts, so a document cannot inject a
`<｜end▁of▁sentence｜>`). A tokenizer.json (or a file beside it) that cannot be used raises
`CheckpointError` naming the file (one type for everything in a model directory; `nanoseek <command>`
prints it as one line).

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
from nanoseek.tokenizer.chat_template import SPECIAL_TOKEN_NAMES, ChatTemplate, TemplateError

REQUIRED_TOKENS = [BOS, EOS, USER, ASSISTANT, THINK, END_THINK]
DEFAULT_MODEL_MAX_LENGTH = 131072
TEMPLATE_FILE, TEMPLATE_DIR = "chat_template.jinja", "additional_chat_templates"


def _read_json(path: Path) -> dict:
    """A JSON object from `path` ({} if the file is absent); CheckpointError naming it otherwise."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(path, "not UTF-8 text; expected a JSON object") from None
    except json.JSONDecodeError as e:  # worded as config.json's (model/checkpoint.py)
        problem = f"not JSON ({e.msg} at line {e.lineno}, column {e.colno}); expected a JSON object"
        raise CheckpointError(path, problem) from None
    if not isinstance(data, dict):
        raise CheckpointError(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def read_tokenizer_config(folder: Path) -> dict:
    """tokenizer_config.json, with its chat template(s) resolved as transformers resolves them:
    chat_template.jinja (and additional_chat_templates/NAME.jinja) over the config's `chat_template`,
    a list of {"name", "template"} becoming a dict; CheckpointError naming the file and field."""
    path = folder / "tokenizer_config.json"
    config = _read_json(path)
    template = config.get("chat_template")
    if isinstance(template, list):
        try:
            template = {t["name"]: t["template"] for t in template}
        except (TypeError, KeyError):
            problem = 'expected a string or a list of {"name": ..., "template": ...} objects'
            raise CheckpointError(path, problem, field="chat_template") from None
    files = {}
    if (folder / TEMPLATE_FILE).is_file():
        files["default"] = folder / TEMPLATE_FILE
    if (folder / TEMPLATE_DIR).is_dir():
        files |= {f.stem: f for f in sorted((folder / TEMPLATE_DIR).glob("*.jinja"))}
    if files:
        try:
            texts = {name: f.read_text(encoding="utf-8") for name, f in files.items()}
        except UnicodeDecodeError as exc:
            raise CheckpointError(folder, f"a chat template file is not UTF-8 text ({exc})") from None
        template = texts["default"] if list(texts) == ["default"] else texts
    if template is not None and not isinstance(template, (str, dict)):
        problem = f"expected a string or a list of named templates, got {type(template).__name__}"
        raise CheckpointError(path, problem, field="chat_template")
    config["chat_template"] = template
    return config


def _blamed_file(tokenizer_json: Path, problem: str) -> Path:
    """The file a Tokenizer(...) ValueError is about: the template's file, tokenizer_config.json, or
    tokenizer.json itself (missing control tokens, or no config beside it)."""
    folder = tokenizer_json.parent
    if problem.startswith("chat_template:") and (folder / TEMPLATE_FILE).is_file():
        return folder / TEMPLATE_FILE
    if "control tokens" in problem or not (folder / "tokenizer_config.json").is_file():
        return tokenizer_json
    return folder / "tokenizer_config.json"


def _model_max_length(config: dict, path: Path) -> int:
    """tokenizer_config.json's model_max_length (the default without the field)."""
    try:
        return int(config.get("model_max_length", DEFAULT_MODEL_MAX_LENGTH))
    except (ValueError, TypeError, OverflowError) as exc:
        problem = f"expected an integer model_max_length ({type(exc).__name__}: {exc})"
        raise CheckpointError(path, problem, field="model_max_length") from None


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...} (an AddedToken)."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _id_list(value) -> list[int]:
    """generation_config.json's eos_token_id / bos_token_id: an int, a list of ints, or absent."""
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def _first(*values):
    return next((v for v in values if v is not None), None)


def _add_declared_tokens(tokenizer: tokenizers.Tokenizer, declared: dict) -> None:
    """Add the tokens tokenizer_config.json's added_tokens_decoder declares and tokenizer.json lacks
    (they must come at the next free ids, as transformers would add them); ValueError otherwise."""
    for key in sorted(declared, key=lambda k: int(k)):
        entry = declared[key]
        content = _token_text(entry)
        if content is None or tokenizer.token_to_id(content) is not None:
            continue
        special = bool(entry.get("special", False)) if isinstance(entry, dict) else False
        tokenizer.add_tokens([tokenizers.AddedToken(content, special=special, normalized=False)])
        if tokenizer.token_to_id(content) != int(key):
            raise ValueError(
                f"added_tokens_decoder: {content!r} is declared at id {key} but tokenizer.json has no "
                f"token there and the next free id is {tokenizer.token_to_id(content)}"
            )


class Tokenizer:
    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer,
        model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
        config: dict | None = None,
        generation_config: dict | None = None,
    ):
        """`config`: tokenizer_config.json's fields (`read_tokenizer_config` resolves the template
        files); `generation_config`: generation_config.json's. Without either (or with our own
        template) this is nanoseek's R1 format and the tokenizer must have its control tokens."""
        self.config = dict(config or {})
        self._tok = tokenizer
        self.model_max_length = model_max_length
        self._plain_tok: tokenizers.Tokenizer | None = None
        _add_declared_tokens(tokenizer, self.config.get("added_tokens_decoder") or {})
        names = {name: _token_text(self.config.get(name)) for name in SPECIAL_TOKEN_NAMES}
        self.chat_template: ChatTemplate | None = self._template(names)
        missing = [t for t in REQUIRED_TOKENS if tokenizer.token_to_id(t) is None]
        self.r1_format: bool = self.chat_template is None and not missing  # nanoseek's own chat format
        if not (self.r1_format or self.chat_template or names["eos_token"] or names["bos_token"]):
            raise ValueError(
                f"tokenizer lacks the chat format's control tokens {missing} and has no chat template "
                "(tokenizer_config.json with chat_template, bos_token and eos_token)"
            )
        self.user_id, self.assistant_id = tokenizer.token_to_id(USER), tokenizer.token_to_id(ASSISTANT)
        self.think_id, self.end_think_id = tokenizer.token_to_id(THINK), tokenizer.token_to_id(END_THINK)
        generation = generation_config or {}
        eos_ids, bos_ids = (_id_list(generation.get(k)) for k in ("eos_token_id", "bos_token_id"))
        end_of_turn = self.chat_template.end_of_turn() if self.chat_template else None
        end_of_turn_id = tokenizer.token_to_id(end_of_turn) if end_of_turn else None
        if self.r1_format:
            self.bos_id, self.eos_id = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
        else:
            eos = _first(self._named_id(names["eos_token"]), *eos_ids, end_of_turn_id)
            if eos is None:
                raise ValueError(
                    "no eos_token in tokenizer_config.json, no eos_token_id in generation_config.json"
                )
            self.eos_id: int = eos
            self.bos_id: int = _first(self._named_id(names["bos_token"]), *bos_ids, eos)
        pad = tokenizer.token_to_id(names["pad_token"] or PAD)
        self.pad_id: int = self.eos_id if pad is None else pad  # no pad token: EOS pads
        stops = (self.eos_id, *eos_ids, end_of_turn_id)
        self.stop_ids: tuple[int, ...] = tuple(dict.fromkeys(i for i in stops if i is not None))
        add_bos = self.config.get("add_bos_token")
        self.add_bos_token: bool = add_bos if isinstance(add_bos, bool) else self._post_processor_adds_bos()

    def _template(self, names: dict[str, str | None]) -> ChatTemplate | None:
        """The model's own chat template; None without one or with ours (the R1 format)."""
        source = self.config.get("chat_template")
        if source is None or source == chat_format.CHAT_TEMPLATE:
            return None
        try:
            return ChatTemplate(source, names, self._control_tokens())
        except TemplateError as exc:
            raise ValueError(f"chat_template: {exc}") from None

    def _named_id(self, token: str | None) -> int | None:
        """The id of a special token tokenizer_config.json names (ValueError if the vocabulary lacks it)."""
        if token is None:
            return None
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise ValueError(f"tokenizer_config.json names the token {token!r}, which tokenizer.json lacks")
        return token_id

    def _control_tokens(self) -> list[tuple[str, bool]]:
        """The added tokens as (text, special); added_tokens_decoder's flags override tokenizer.json's."""
        declared = {
            _token_text(v): bool(v.get("special"))
            for v in (self.config.get("added_tokens_decoder") or {}).values()
            if isinstance(v, dict) and _token_text(v)
        }
        added = self._tok.get_added_tokens_decoder().values()
        return [(t.content, declared.get(t.content, t.special)) for t in added]

    def _post_processor_adds_bos(self) -> bool:
        return self._tok.encode("a", add_special_tokens=True).ids[:1] == [self.bos_id]

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
        """Load a tokenizer.json and the files beside it (tokenizer_config.json, chat_template.jinja,
        generation_config.json). FileNotFoundError if it is missing; CheckpointError, naming the file,
        if it cannot be used."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}")
        config_path = path.parent / "tokenizer_config.json"
        config = read_tokenizer_config(path.parent)
        max_length = _model_max_length(config, config_path)
        generation = _read_json(path.parent / "generation_config.json")
        try:
            inner = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust library raises a bare Exception: "expected value at line 1 ..."
            raise CheckpointError(
                path, f"not a tokenizer file the `tokenizers` library reads ({exc})"
            ) from None
        try:
            return cls(inner, model_max_length=max_length, config=config, generation_config=generation)
        except ValueError as exc:  # no control tokens, a broken template, a token not in the vocabulary
            raise CheckpointError(_blamed_file(path, str(exc)), str(exc)) from None

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load from a directory holding tokenizer.json (a tokenizer, model or run directory)."""
        return cls.from_file(Path(path) / "tokenizer.json")

    def save(self, out_dir: str | Path) -> Path:
        """Write tokenizer.json and a tokenizer_config.json that `transformers.AutoTokenizer` loads:
        ours with R1's tokens and template, a model's own with its fields and template as loaded."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(out_dir / "tokenizer.json"))
        if self.r1_format:
            config = {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": BOS,
                "eos_token": EOS,
                "pad_token": self._tok.id_to_token(self.pad_id),
                "model_max_length": self.model_max_length,
                "clean_up_tokenization_spaces": False,
                "chat_template": chat_format.CHAT_TEMPLATE,
            }
        else:
            config = {**self.config, "model_max_length": self.model_max_length}
            source = config.pop("chat_template", None)
            if isinstance(source, dict):
                config["chat_template"] = [{"name": k, "template": v} for k, v in source.items()]
            elif source is not None:
                config["chat_template"] = source
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

    @property
    def bos_prefix(self) -> list[int]:
        """What goes before raw text (a base model's prompt, a scored context): [bos_id] where Hugging
        Face's `tokenizer(text)` puts BOS first (`add_bos_token`: nanoseek's tokenizers, Llama), else []
        (Qwen, SmolLM2). lm-evaluation-harness's HF backend encodes the same way."""
        return [self.bos_id] if self.add_bos_token else []

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text` as plain text: control-token strings in it are spelled out in bytes."""
        return self._plain.encode(text, add_special_tokens=False).ids

    def encode_ordinary_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._plain.encode_batch(texts, add_special_tokens=False)]

    def encode_offsets(self, text: str, ordinary: bool = False) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of `text` (as `encode`, or as `encode_ordinary`) and each token's character span."""
        encoding = (self._plain if ordinary else self._tok).encode(text, add_special_tokens=False)
        return encoding.ids, encoding.offsets

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
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        think: bool = True,
        tools: list[dict] | None = None,
    ) -> list[int]:
        return chat_format.render_prompt(self, messages, add_generation_prompt, think, tools)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __repr__(self) -> str:
        kind = (
            "R1 chat format"
            if self.r1_format
            else "own chat template"
            if self.chat_template
            else "no chat format"
        )
        return f"Tokenizer(vocab_size={self.vocab_size}, {kind})"


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
