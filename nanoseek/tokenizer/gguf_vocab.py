"""A GGUF file's tokenizer as a Hugging Face tokenizer.json (+ tokenizer_config.json with its chat template).

    from nanoseek.tokenizer.gguf_vocab import save_gguf_tokenizer, tokenizer_from_gguf
    tok = tokenizer_from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")     # a tokenizers.Tokenizer
    save_gguf_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf", "out/")  # tokenizer.json, tokenizer_config.json
    gguf_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")           # nanoseek's Tokenizer, in memory

A GGUF stores no tokenizer.json but the pieces of one, under llama.cpp's keys: `tokenizer.ggml.model`
("gpt2": byte-level BPE), `.tokens` (id -> token, spelled in GPT-2's byte alphabet), `.merges`
("a b" pairs, best first), `.token_type` (1 normal, 3 control, 4 user-defined), `.bos_token_id`,
`.eos_token_id`, `.padding_token_id`, `.add_bos_token`, `tokenizer.chat_template`, and `.pre`, the
name of the pre-tokenizer: how text is cut before BPE, which must be the one the merges were learned
with or the ids differ. `.pre` names llama.cpp's table (llama-vocab.cpp), rebuilt here for:

    smollm         digits one by one, then GPT-2's split (SmolLM/StarCoder's tokenizer.json)
    gpt2, default  GPT-2's split (ByteLevel's own regex)
    llama-bpe      Llama 3's split; merges ignored for whole-word vocabulary hits (as its tokenizer.json)
    dbrx           the same split (GPT-4's cl100k regex), merges always applied: nanoseek's own tokenizers
    qwen2, deepseek-r1-qwen   Qwen2's split, NFC-normalized

Control tokens become special added tokens (never split, `skip_special_tokens` drops them), user-
defined ones plain added tokens (kept whole: `<think>`). A `.pre` or `.model` not in the table is one
CheckpointError line naming it and the supported ones (a guessed split would give wrong ids silently).
The other way, `gguf_tokenizer_metadata(tokenizer, vocab_size)` gives those keys for a tokenizer, to
write into a GGUF (`nanoseek export gguf`): the `.pre` is the first of the table whose normalizer and
merge rule are the tokenizer's and whose ids equal the tokenizer's own on PROBE, checked again on the
rebuilt vocabulary; none is one CheckpointError line (llama.cpp would cut the text differently).
Reading the file needs the `gguf` package (`pip install 'nanoseek[gguf]'`); `tokenizer_from_gguf` also
takes the metadata as a dict ({key: value}) from a reader already open.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from nanoseek.errors import CheckpointError
from nanoseek.tokenizer.chat_format import CHAT_TEMPLATE

CONTROL, USER_DEFINED = 3, 4

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _split(pattern: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


# tokenizer.ggml.pre -> (normalizer or None, pre-tokenizer, BPE ignore_merges)
PRE_TOKENIZERS = {
    "smollm": lambda: (
        None,
        pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        ),
        False,
    ),
    "gpt2": lambda: (None, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), False),
    "default": lambda: (None, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), False),
    "llama-bpe": lambda: (None, _split(_LLAMA3_SPLIT), True),
    "llama3": lambda: (None, _split(_LLAMA3_SPLIT), True),
    "dbrx": lambda: (None, _split(_LLAMA3_SPLIT), False),  # GPT-4's split, merges always applied
    "qwen2": lambda: (normalizers.NFC(), _split(_QWEN2_SPLIT), False),
    "deepseek-r1-qwen": lambda: (normalizers.NFC(), _split(_QWEN2_SPLIT), False),
}


@cache
def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character map, in which byte-level vocabularies spell their tokens."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    extra = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The tokenizer.* metadata of a GGUF file (plus general.architecture and the context length)."""
    path = Path(path)
    try:
        import gguf
    except ImportError:
        raise ImportError(
            "reading GGUF files needs the `gguf` package: pip install 'nanoseek[gguf]'"
        ) from None
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # the reader fails in many ways on a bad file (ValueError, struct/numpy errors)
        problem = (
            f"not a readable GGUF file ({type(e).__name__}: {str(e)[:200]}); is it truncated or corrupt?"
        )
        raise CheckpointError(path, problem) from None
    arch = reader.fields.get("general.architecture")
    keep = ("tokenizer.", "general.architecture", f"{arch.contents()}.context_length" if arch else "-")
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith(keep)}


def _metadata(source: str | Path | Mapping[str, Any]) -> tuple[Mapping[str, Any], str | Path]:
    if isinstance(source, Mapping):
        return source, "GGUF metadata"
    return read_metadata(source), source


def tokenizer_from_gguf(source: str | Path | Mapping[str, Any]) -> Tokenizer:
    """The `tokenizers.Tokenizer` a GGUF file (or its metadata) describes."""
    return _build(*_metadata(source))


def _build(meta: Mapping[str, Any], where: str | Path) -> Tokenizer:
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        problem = f"tokenizer.ggml.model: {kind!r} is not supported; supported: 'gpt2' (byte-level BPE)"
        raise CheckpointError(where, problem, "tokenizer.ggml.model")
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        problem = f"tokenizer.ggml.pre: {pre!r} is not supported; supported: {', '.join(PRE_TOKENIZERS)}"
        raise CheckpointError(where, problem, "tokenizer.ggml.pre")
    tokens: list[str] = list(meta.get("tokenizer.ggml.tokens") or [])
    types: list[int] = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    if not tokens or len(types) != len(tokens) or any(len(m) != 2 for m in merges):
        problem = "expected tokenizer.ggml.tokens, a token_type per token and merges of two pieces each"
        raise CheckpointError(where, problem, "tokenizer.ggml.tokens")
    alphabet = byte_alphabet()
    spelled = set(alphabet.values())
    # a control or user-defined token keeps its own text (DeepSeek's <｜User｜> is no byte-level spelling)
    vocab = {
        (
            t
            if set(t) <= spelled or k in (CONTROL, USER_DEFINED)
            else "".join(alphabet[b] for b in t.encode())
        ): i
        for i, (t, k) in enumerate(zip(tokens, types))
    }
    normalizer, pre_tokenizer, ignore_merges = PRE_TOKENIZERS[pre]()
    tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    control = [t for t, k in zip(tokens, types) if k == CONTROL]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    user = [t for t, k in zip(tokens, types) if k == USER_DEFINED and t in vocab]
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    bos = meta.get("tokenizer.ggml.bos_token_id")
    if meta.get("tokenizer.ggml.add_bos_token") and bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A",
            pair=f"{tokens[bos]} $A {tokens[bos]} $B",
            special_tokens=[(tokens[bos], bos)],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def tokenizer_config(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """tokenizer_config.json for a GGUF's tokenizer: its special tokens, add_bos_token, chat_template."""
    meta, _ = _metadata(source)
    tokens = meta.get("tokenizer.ggml.tokens") or []
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
    }
    for name, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        if i is not None and 0 <= i < len(tokens):
            config[f"{name}_token"] = tokens[i]
    config["add_bos_token"] = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    config["add_eos_token"] = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    arch = meta.get("general.architecture")
    if meta.get(f"{arch}.context_length"):
        config["model_max_length"] = int(meta[f"{arch}.context_length"])
    if meta.get("tokenizer.chat_template"):
        config["chat_template"] = meta["tokenizer.chat_template"]
    return config


def save_gguf_tokenizer(source: str | Path | Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write tokenizer.json and tokenizer_config.json for a GGUF file (or its metadata) into `out_dir`."""
    meta, where = _metadata(source)
    tok = _build(meta, where)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = json.dumps(tokenizer_config(meta), indent=2, ensure_ascii=False)
    (out / "tokenizer_config.json").write_text(config + "\n", encoding="utf-8")
    return out


# ------------------------------------------------------------------------------ writing (export)
NORMAL, UNUSED = 1, 5
# text on which a declared pre-tokenizer must give the tokenizer's own ids: contractions in both cases,
# digit runs, runs of spaces, tabs and newlines, punctuation, accents, CJK, emoji
PROBE = (
    "Hello world! I'm SHOUTING, they'll see. It's 2024: 12345 + 678 = 13023.\n\n"
    "  indented\tcode = {'a': [1, 2]};  // trailing   \r\n\n\n"
    "naïve café — Ünïcödé, 你好世界, こんにちは, 🤖🚀!! ...?? x^2+y_1"
)


def gguf_tokenizer_metadata(
    tokenizer, vocab_size: int | None = None, where: str | Path = "tokenizer.json"
) -> dict[str, Any]:
    """The tokenizer.* keys of a GGUF for a `nanoseek.tokenizer.Tokenizer` (a byte-level BPE): tokens
    padded to the model's `vocab_size` with [PADn] (unused) as llama.cpp's converter does, token types,
    merges, BOS/EOS/PAD, add_bos_token, `.pre` (see the module docstring) and the chat template.
    `where`: the file a CheckpointError names."""
    spec = json.loads(tokenizer._tok.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise CheckpointError(where, "only byte-level BPE tokenizers can be exported to GGUF", "model")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in spec.get("added_tokens") or []}
    vocab |= {content: t["id"] for content, t in added.items()}
    size = max(vocab_size or 0, max(vocab.values()) + 1)
    tokens, types = [f"[PAD{i}]" for i in range(size)], [UNUSED] * size
    for text, i in vocab.items():
        tokens[i] = text
        types[i] = NORMAL if text not in added else CONTROL if added[text]["special"] else USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": tokenizer.bos_id,
        "tokenizer.ggml.eos_token_id": tokenizer.eos_id,
        "tokenizer.ggml.padding_token_id": tokenizer.pad_id,
        "tokenizer.ggml.add_bos_token": bool(tokenizer.add_bos_token),
        "tokenizer.ggml.add_eos_token": False,
    }
    meta["tokenizer.ggml.pre"] = _declared_pre(tokenizer, spec, meta, where)
    template = chat_template_source(tokenizer)
    if template:
        meta["tokenizer.chat_template"] = template
    return meta


def _declared_pre(tokenizer, spec: dict, meta: dict[str, Any], where: str | Path) -> str:
    """The first PRE_TOKENIZERS name that cuts text as `tokenizer` does (see the module docstring)."""
    want = tokenizer._tok.encode(PROBE, add_special_tokens=False).ids
    ignore_merges = bool(spec["model"].get("ignore_merges", False))
    tried = []
    for name, parts in PRE_TOKENIZERS.items():
        normalizer, _, ignores = parts()
        if ignores != ignore_merges or (normalizer is None) != (spec.get("normalizer") is None):
            continue
        tried.append(name)
        rebuilt = _build(meta | {"tokenizer.ggml.pre": name}, where)
        if rebuilt.encode(PROBE, add_special_tokens=False).ids == want:
            return name
    problem = (
        f"pre_tokenizer: none of llama.cpp's pre-tokenizers this exporter knows ({', '.join(tried) or 'none'}) "
        "gives this tokenizer's ids on the probe text, so llama.cpp would tokenize differently"
    )
    raise CheckpointError(where, problem, "pre_tokenizer")


def chat_template_source(tokenizer) -> str | None:
    """The Jinja chat template a tokenizer renders with (nanoseek's R1 template for its own tokenizers;
    of several named templates, "default")."""
    source = tokenizer.config.get("chat_template")
    if isinstance(source, dict):
        source = source.get("default", next(iter(source.values()), None))
    return CHAT_TEMPLATE if source is None and tokenizer.r1_format else source


# ------------------------------------------------------------------------------ reading (a model's tokenizer)


def gguf_tokenizer(source: str | Path | Mapping[str, Any]):
    """nanoseek's `Tokenizer` for a GGUF file (or its metadata), built in memory: what
    `save_gguf_tokenizer` writes, loaded (its chat template, special tokens and stop ids). None when
    the file holds no tokenizer (no `tokenizer.ggml.model`); CheckpointError naming the file when its
    tokenizer cannot be used."""
    from nanoseek.tokenizer.core import DEFAULT_MODEL_MAX_LENGTH
    from nanoseek.tokenizer.core import Tokenizer as ModelTokenizer

    meta, where = _metadata(source)
    if "tokenizer.ggml.model" not in meta:
        return None
    config = tokenizer_config(meta)
    ids = {f"{k}_token_id": meta.get(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos")}
    generation = {k: v for k, v in ids.items() if v is not None}  # as gguf_to_hf_dir's generation_config
    try:
        return ModelTokenizer(
            _build(meta, where),
            model_max_length=config.get("model_max_length", DEFAULT_MODEL_MAX_LENGTH),
            config=config,
            generation_config=generation,
        )
    except ValueError as exc:  # a broken template, no eos token
        raise CheckpointError(where, str(exc)) from None
