"""A checkpoint's own chat template: its Jinja source rendered as `transformers.apply_chat_template` renders it.

    from nanoseek.tokenizer import Tokenizer
    tok = Tokenizer.from_dir("Qwen2.5-1.5B-Instruct")      # tokenizer.json + tokenizer_config.json
    tok.chat_template.text(messages, add_generation_prompt=True)   # the rendered string
    ids, mask = tok.render(conversation)                   # through chat_format.render, as for R1's format

A model that brings its tokenizer (Qwen, Llama, SmolLM2, the R1 distills) brings its chat format as a
Jinja template in tokenizer_config.json (`chat_template`: one string, or a list of named templates) or,
as transformers >= 4.43 saves it, in `chat_template.jinja` (+ `additional_chat_templates/NAME.jinja`).
This module renders it in the environment transformers builds (`_compile_jinja_template` in
transformers/utils/chat_template_utils.py): Jinja's ImmutableSandboxedEnvironment (a template from the
Hub is untrusted code), trim_blocks and lstrip_blocks, the loopcontrols extension, `raise_exception`,
`strftime_now`, a `tojson` that does not escape HTML, a `namespace` that refuses underscore attributes,
and the `{% generation %}` block that marks what the assistant writes. The template sees
`messages`, `tools`, `documents`, `add_generation_prompt`, the special tokens (`bos_token`,
`eos_token`, ...) and extra kwargs (`enable_thinking` for Qwen3); messages are copied with keys whose
value is None dropped and `reasoning_content` aliased as `thinking`, as transformers does.

Two things transformers leaves to the trainer are done here too, at the string level (the token level
is `chat_format.encode_rendered`):
- Which characters are the assistant's (the SFT loss mask): the `{% generation %}` spans when the
  template has them; otherwise, for each assistant message i, from the end of the longest common
  prefix of the full rendering and the rendering of messages[:i] with the generation prompt (so the
  loss starts exactly where generation starts: a `<think>\\n` the prompt already wrote is not in it)
  to the end of the message's content, found by rendering the conversation again with that content
  replaced by a sentinel, plus the end-of-turn token that follows it (`<|im_end|>`, `<|eot_id|>`,
  `<｜end▁of▁sentence｜>`). Prefix rendering alone (as TRL's old collators did) breaks on templates that
  render a turn differently once later turns exist (Qwen3 drops history reasoning); the sentinel
  does not.
- Control-token text typed inside a message ("<|im_end|>" in a user's content) is marked, so that it
  is encoded as plain text: the template's own control tokens are the only ones in the ids. This is
  `apply_chat_template(..., sanitize_control_tokens=True)`; for text without control-token strings it
  is the same as plain `apply_chat_template`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Private-use code points (plane 15) that never come from a tokenizer: they mark the control-token text
# found inside messages (encoded as plain text) and the {% generation %} spans; both are removed from
# the rendered string before encoding. The first two are transformers' own markers.
MARK_START, MARK_END = "\U000f0000", "\U000f0001"
GEN_START, GEN_END = "\U000f0002", "\U000f0003"
MARKERS = (MARK_START, MARK_END, GEN_START, GEN_END)
SENTINEL = "\U000f0004"  # stands in for an assistant message's content to locate it in the rendering
SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")

Span = tuple[int, int]  # [start, end) character offsets into a rendered string


class TemplateError(ValueError):
    """A chat template that cannot be compiled or that raised while rendering (its own raise_exception
    included); the message says which."""


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: the assistant's part, wrapped in markers the renderer
    turns into spans (transformers' AssistantTracker records the same spans)."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.CallBlock:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_wrap"), [], [], body).set_lineno(lineno)

    def _wrap(self, caller) -> str:
        return GEN_START + caller() + GEN_END


class _Namespace(jinja2.utils.Namespace):
    """Jinja's namespace(), refusing underscore attributes (no reaching CPython internals), as transformers'."""

    def __init__(*args, **kwargs):  # Jinja's signature trick, so namespace(self=...) works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes HTML characters; transformers' (and so every template's author) does not.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals.update(
        raise_exception=_raise_exception, strftime_now=_strftime_now, namespace=_Namespace, dict=dict
    )
    return env


@lru_cache(maxsize=32)
def compile_template(source: str) -> jinja2.Template:
    """The compiled template (cached by source); TemplateError if it is not valid Jinja."""
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"the chat template is not valid Jinja (line {exc.lineno}: {exc.message})"
        ) from None


@lru_cache(maxsize=32)
def literal_text(source: str) -> str:
    """The template's raw text and string constants, joined by NUL (what transformers searches for the
    control tokens a template writes)."""
    tree = _environment().parse(source)
    parts = {n.data for n in tree.find_all(jinja2.nodes.TemplateData)}
    parts |= {n.value for n in tree.find_all(jinja2.nodes.Const) if isinstance(n.value, str)}
    return "\0".join(parts)


def _strip_markers(text: str) -> str:
    for marker in MARKERS:
        text = text.replace(marker, "")
    return text


def _plain(value: Any, control: re.Pattern | None) -> Any:
    """A copy of the template's input built from JSON types, None-valued keys dropped, markers removed
    from strings and control-token text in them marked (when `control` is given)."""
    if isinstance(value, str):
        value = _strip_markers(str.__str__(value))
        return control.sub(lambda m: MARK_START + m.group(0) + MARK_END, value) if control else value
    if isinstance(value, dict):
        return {str(k): _plain(v, control) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v, control) for v in value]
    if value is None or type(value) in (int, float, bool):
        return value
    return f"<{type(value).__name__}>"  # anything else is an inert placeholder, as in transformers


def _alias_reasoning(messages: list[dict]) -> list[dict]:
    """Give each message's reasoning under both names templates read (`reasoning_content`, `thinking`)."""
    out = []
    for m in messages:
        reasoning = next((m[k] for k in REASONING_FIELDS if m.get(k) is not None), None)
        out.append(m if reasoning is None else {"thinking": reasoning, **m, "reasoning_content": reasoning})
    return out


def common_prefix(a: str, b: str) -> int:
    """Length of the common prefix of a and b (a binary search over slice comparisons, which run in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid - 1)
    return lo


def common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the common suffix of a and b, at most `limit`."""
    lo, hi = 0, min(len(a), len(b), limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if a[len(a) - mid :] == b[len(b) - mid :] else (lo, mid - 1)
    return lo


class Rendered:
    """One rendering: `text` (markers removed), `plain` (spans of control-token text typed by the user,
    to encode as plain text) and `generation` ({% generation %} spans)."""

    def __init__(self, marked: str):
        self.plain: list[Span] = []
        self.generation: list[Span] = []
        out: list[str] = []
        length = 0
        open_at: dict[str, int] = {}
        for piece in re.split(f"([{''.join(MARKERS)}])", marked):
            if piece in (MARK_START, GEN_START):
                open_at[piece] = length
            elif piece in (MARK_END, GEN_END):
                start = MARK_START if piece == MARK_END else GEN_START
                if start in open_at:  # a lone end marker (a template split the text) is dropped
                    spans = self.plain if piece == MARK_END else self.generation
                    spans.append((open_at.pop(start), length))
            else:
                out.append(piece)
                length += len(piece)
        self.text = "".join(out)


class ChatTemplate:
    """A chat template (one Jinja source, or several by name) with the special tokens it renders.

    `source`: the template string, or {name: template} (transformers picks "tool_use" when tools are
    given and it exists, else "default"). `special_tokens`: bos_token, eos_token, ... as strings.
    `control_tokens`: the tokenizer's added tokens as (text, is_special) pairs; user text matching a
    special one, or one the template writes, is marked to be encoded as plain text."""

    def __init__(
        self,
        source: str | dict[str, str],
        special_tokens: dict[str, str] | None = None,
        control_tokens: Iterable[tuple[str, bool]] = (),
    ):
        self.source = source
        self.templates = source if isinstance(source, dict) else {"default": source}
        if not self.templates or not all(isinstance(t, str) for t in self.templates.values()):
            raise TemplateError("expected a chat template string or a list of named template strings")
        for template in self.templates.values():
            compile_template(template)
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if isinstance(v, str)}
        self._control_tokens = [(t, bool(special)) for t, special in control_tokens if t and not t.isspace()]
        self._patterns: dict[str, re.Pattern | None] = {}

    def pick(self, tools: list | None = None) -> str:
        if tools is not None and "tool_use" in self.templates:
            return self.templates["tool_use"]
        if "default" in self.templates:
            return self.templates["default"]
        if len(self.templates) == 1:
            return next(iter(self.templates.values()))
        names = ", ".join(sorted(self.templates))
        raise TemplateError(f"several chat templates ({names}) and none is named 'default'")

    def _control_pattern(self, source: str) -> re.Pattern | None:
        """A regex of the control tokens to mark in user text: the special ones and those the template
        writes (as transformers chooses them), longest first; None if there are none."""
        if source not in self._patterns:
            literals = literal_text(source)
            tokens = sorted({t for t, special in self._control_tokens if special or t in literals}, key=len)
            self._patterns[source] = re.compile("|".join(map(re.escape, tokens[::-1]))) if tokens else None
        return self._patterns[source]

    def rendered(
        self,
        messages: list[dict],
        add_generation_prompt: bool = False,
        tools: list[dict] | None = None,
        **kwargs: Any,
    ) -> Rendered:
        """Render with markers for control-token text inside messages and for {% generation %} blocks."""
        source = self.pick(tools)
        control = self._control_pattern(source)
        context = {
            **self.special_tokens,
            **_plain(kwargs, control),
            "messages": _alias_reasoning(_plain(messages, control)),
            "tools": _plain(tools, control),
            "documents": None,
            "add_generation_prompt": add_generation_prompt,
        }
        try:
            return Rendered(compile_template(source).render(**context))
        except jinja2.TemplateError as exc:
            if type(exc) is jinja2.TemplateError:  # the template's own raise_exception(...)
                raise TemplateError(f"the chat template refused this conversation: {exc}") from None
            raise TemplateError(
                f"the chat template failed on this conversation ({type(exc).__name__}: {exc})"
            ) from None
        except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
            raise TemplateError(
                f"the chat template failed on this conversation ({type(exc).__name__}: {exc})"
            ) from None

    def text(self, messages: list[dict], add_generation_prompt: bool = False, **kwargs: Any) -> str:
        """The rendered string (what apply_chat_template(..., tokenize=False) returns)."""
        return self.rendered(messages, add_generation_prompt, **kwargs).text

    def assistant_spans(self, messages: list[dict], full: Rendered, **kwargs: Any) -> list[Span]:
        """Character spans of `full` (the rendering of `messages`) that the model writes: the
        {% generation %} blocks, or per assistant message what follows its generation prompt up to
        and including the end-of-turn token after its content."""
        if full.generation:
            return full.generation
        spans = []
        for i, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            content_start, content_end = self._content_span(messages, i, full.text, **kwargs)
            try:
                prompt = self.text(messages[:i], add_generation_prompt=True, **kwargs) if i else ""
            except TemplateError:  # e.g. a template that needs a user message first
                prompt = ""
            start = min(common_prefix(prompt, full.text), content_start)
            start = max(start, spans[-1][1] if spans else 0)
            spans.append((start, content_end + self._end_of_turn_length(full.text, content_end)))
        return spans

    def _content_span(self, messages: list[dict], i: int, full: str, **kwargs: Any) -> Span:
        """Where message i's content sits in `full`: the region that changes when the content does."""
        probe = [dict(m) for m in messages]
        probe[i]["content"] = SENTINEL
        other = self.text(probe, **kwargs)
        start = common_prefix(full, other)
        end = len(full) - common_suffix(full, other, len(full) - start)
        return start, end

    def _end_of_turn_length(self, text: str, at: int) -> int:
        """Length of the control token at text[at:] (the one closing a turn), 0 if there is none."""
        for token, _ in sorted(self._control_tokens, key=lambda t: -len(t[0])):
            if text.startswith(token, at):
                return len(token)
        return 0

    def end_of_turn(self) -> str | None:
        """The control token the template writes right after an assistant message's content
        (<|im_end|>, <|eot_id|>, <｜end▁of▁sentence｜>), found by rendering a probe conversation;
        None when no control token follows it (or the template cannot render the probe)."""
        probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
        try:
            full = self.text(probe)
            _, end = self._content_span(probe, 1, full)
        except TemplateError:
            return None
        n = self._end_of_turn_length(full, end)
        return full[end : end + n] or None
