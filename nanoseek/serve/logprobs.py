"""Log-probabilities in OpenAI's two formats, and token texts and bytes.

    texts = TokenTexts(tokenizer)
    chat_logprobs(texts, sample.logprobs)          # {"content": [{"token", "logprob", "bytes", "top_logprobs"}]}
    legacy_logprobs(texts, ids, logprobs, tops)    # {"tokens", "token_logprobs", "top_logprobs", "text_offset"}

Token texts: a byte-level BPE token can be part of a UTF-8 character; its `bytes` are exact (read
through the byte-level alphabet) and its text is the decoded bytes, or `bytes:\\xe4\\xb8` (vLLM's
spelling) when they are not valid UTF-8 on their own. The prompt's own log-probabilities (`echo`
with `logprobs`) come from the engine (`SamplingParams.prompt_logprobs`, see completions.py).
"""

from __future__ import annotations

import codecs
from typing import Any

from nanoseek.engine import TokenLogprob
from nanoseek.tokenizer import Tokenizer
from nanoseek.tokenizer.chat_format import SPECIAL_TOKENS


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-to-printable-character map, inverted: character -> byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


BYTE_OF_CHAR = _byte_level_alphabet()


class TokenTexts:
    """Cached (text, bytes) of token ids."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, tuple[str, list[int]]] = {}
        ids = (tokenizer.token_to_id(t) for t in SPECIAL_TOKENS)
        self.special_ids = {i for i in ids if i is not None}  # skipped in texts: zero width

    def get(self, token_id: int) -> tuple[str, list[int]]:
        hit = self._cache.get(token_id)
        if hit is not None:
            return hit
        raw = self.tokenizer.id_to_token(token_id) or ""
        if raw and all(ch in BYTE_OF_CHAR for ch in raw):
            data = bytes(BYTE_OF_CHAR[ch] for ch in raw)
        else:  # an added token (<think>, EOS, ...) or a tokenizer that is not byte-level
            data = self.tokenizer.decode([token_id]).encode("utf-8")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = "bytes:" + "".join(f"\\x{b:02x}" for b in data)
        self._cache[token_id] = (text, list(data))
        return self._cache[token_id]

    def text(self, token_id: int) -> str:
        return self.get(token_id)[0]


def _entry(texts: TokenTexts, token_id: int, logprob: float) -> dict[str, Any]:
    text, data = texts.get(token_id)
    return {"token": text, "logprob": _finite(logprob), "bytes": data}


def _finite(x: float) -> float:
    """JSON has no -inf: clamp to OpenAI's floor of -9999."""
    return x if x > -9999.0 else -9999.0


def chat_logprobs(texts: TokenTexts, logprobs: list[TokenLogprob]) -> list[dict[str, Any]]:
    """OpenAI chat `logprobs.content` entries for generated tokens."""
    out = []
    for lp in logprobs:
        entry = _entry(texts, lp.token_id, lp.logprob)
        entry["top_logprobs"] = [_entry(texts, t, v) for t, v in lp.top]
        out.append(entry)
    return out


def legacy_logprobs(
    texts: TokenTexts,
    token_ids: list[int],
    logprobs: list[float | None],
    tops: list[list[tuple[int, float]] | None],
    text_offset: int = 0,
) -> dict[str, Any]:
    """The completions API's `logprobs` object. The first prompt token has None logprob and top."""
    offsets, _ = text_offsets(texts, token_ids, text_offset)
    return {
        "tokens": [texts.text(t) for t in token_ids],
        "token_logprobs": [None if v is None else _finite(v) for v in logprobs],
        "top_logprobs": [
            None if top is None else {texts.text(t): _finite(v) for t, v in top} for top in tops
        ],
        "text_offset": offsets,
    }


def text_offsets(texts: TokenTexts, token_ids: list[int], start: int = 0) -> tuple[list[int], int]:
    """Character offset of each token in the decoded text (special tokens have no width, as the
    text skips them), and the offset after the last one."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offsets, at = [], start
    for token_id in token_ids:
        offsets.append(at)
        if token_id not in texts.special_ids:
            at += len(decoder.decode(bytes(texts.get(token_id)[1])))
    return offsets, at + len(decoder.decode(b"", final=True))
