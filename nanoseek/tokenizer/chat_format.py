"""The chat format: THE one definition of how a conversation becomes tokens (DeepSeek-R1 style).

Every part of nanoseek (SFT, GRPO, distill, eval, serve) renders and parses conversations through
this module; nothing else may hand-build prompts. The Jinja `CHAT_TEMPLATE` saved with every
tokenizer renders exactly the same tokens, so `transformers`, vLLM and llama.cpp agree with us.

A tokenizer that brings its own chat template (a Qwen, Llama or R1-distill checkpoint; see
`chat_template.py`) renders through that template instead, with the same functions: `render` gives
ids and a loss mask over the assistant turns (from the end of each turn's generation prompt through
its end-of-turn token), `render_prompt` the prompt (`think=False` is passed to the template as
`enable_thinking=False`, what Qwen3 reads; `tools` as `tools`), and `prompt_opens_think` says whether
a prompt leaves the model inside a think block (R1's format and R1-distill's template write
`<think>\n` into the generation prompt; Qwen3 lets the model open it), which is the `think` that
`split_completion` and the engine's streaming split take.

A conversation is a list of messages
    {"role": "system" | "user" | "assistant", "content": str,
     "reasoning_content": str (optional, assistant only)}

Rendering (BOS = <｜begin▁of▁sentence｜>, EOS = <｜end▁of▁sentence｜>), concatenated in this order:

    BOS{system}                          all system messages, wherever they are, joined by "\\n\\n"
    <｜User｜>{content}                   each user message
    <｜Assistant｜><think>\\n{reasoning}\\n</think>\\n\\n{content}EOS     each assistant message
    <｜Assistant｜><think>\\n</think>\\n\\n{content}EOS                  ... without reasoning_content

- Every assistant turn has a think block; without `reasoning_content` (or with "") it is empty and has
  a single newline, so that its tokens continue the generation prompt token for token ("\\n\\n" would
  be one BPE token). Reasoning is rendered for EVERY assistant turn that has it: R1's own template
  drops reasoning from history turns, but SFT/distillation needs it in the loss and one rule is
  simplest (a server that wants R1's API behaviour does not pass history `reasoning_content`).
  Texts are rendered as given: nothing is stripped or added.
- The generation prompt (`render_prompt`, `add_generation_prompt=True`) appends
  `<｜Assistant｜><think>\\n` (R1 forces the model to open its think block), or with `think=False`
  `<｜Assistant｜><think>\\n</think>\\n\\n` (an already-closed, empty think block: answer directly).
  So a prompt is a token prefix of the rendered conversation that continues it (as long as the
  reasoning does not start with whitespace, which BPE would merge with the newline before it), and
  the model is trained on exactly the tokens it has to generate after the prompt.
- Loss mask (`render`): 1 on every token after `<｜Assistant｜>` up to and including EOS (think block,
  reasoning, answer, EOS), 0 elsewhere.
- Special-token text inside message texts (e.g. a user typing "<｜Assistant｜>") is encoded as
  ordinary text, never as a control token: only the format itself emits control tokens. This is what
  `apply_chat_template(..., sanitize_control_tokens=True)` does; for texts without control-token
  strings it is the same as plain `apply_chat_template`.

Parsing a completion (the text generated after a `render_prompt` prompt) is `split_completion`.
For base models (R1-Zero) there is the plain-text prompt of the R1 paper, `r1_zero_prompt`.

    from nanoseek.tokenizer import Tokenizer, chat_format
    tok = Tokenizer.from_dir("runs/tok")
    ids, mask = chat_format.render(tok, [{"role": "user", "content": "2+2?"},
                                         {"role": "assistant", "content": "4", "reasoning_content": "2+2=4"}])
    prompt = chat_format.render_prompt(tok, [{"role": "user", "content": "2+2?"}])
    reasoning, answer = chat_format.split_completion("2+2=4\\n</think>\\n\\n4<｜end▁of▁sentence｜>")
"""

from __future__ import annotations

from typing import Any, Protocol

from nanoseek.tokenizer.chat_template import ChatTemplate, Rendered, Span

# DeepSeek-R1's special tokens (note the fullwidth ｜ U+FF5C and the ▁ U+2581 characters).
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK = "<think>"
END_THINK = "</think>"
# Tokens that are "special" (skipped by decode(skip_special_tokens=True)). <think>/</think> are single
# tokens too but not special, as in R1, so that decoded text keeps the thinking markup.
SPECIAL_TOKENS = [BOS, EOS, PAD, USER, ASSISTANT]
THINK_TOKENS = [THINK, END_THINK]
CONTROL_TOKENS = SPECIAL_TOKENS + THINK_TOKENS

ROLES = ("system", "user", "assistant")
Message = dict[str, Any]
Segment = tuple[str, bool, bool]  # (text, is_control_token, in_loss)

# Renders exactly what `render` / `render_prompt` render (see the tests). `enable_thinking=False`
# (passed as an extra kwarg to apply_chat_template) is the template's spelling of `think=False`.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='', first=true) -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- if ns.first -%}{%- set ns.system = message['content'] -%}{%- set ns.first = false -%}"
    "{%- else -%}{%- set ns.system = ns.system + '\\n\\n' + message['content'] -%}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{- bos_token + ns.system -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '<｜User｜>' + message['content'] -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- set reasoning = message['reasoning_content'] if message['reasoning_content'] is defined"
    " and message['reasoning_content'] is not none else '' -%}"
    "{{- '<｜Assistant｜><think>\\n' + (reasoning + '\\n' if reasoning else '') + '</think>\\n\\n'"
    " + message['content'] + '<｜end▁of▁sentence｜>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{%- if enable_thinking is defined and not enable_thinking -%}"
    "{{- '<｜Assistant｜><think>\\n</think>\\n\\n' -}}"
    "{%- else -%}{{- '<｜Assistant｜><think>\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)

R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>. User: {question} Assistant:"
)


# The end-of-turn texts of the template families we know, where `split_completion` cuts a completion
# decoded with its special tokens (R1's EOS first).
END_OF_TURN_TEXTS = (EOS, "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>")


class TokenizerLike(Protocol):
    """What rendering needs (nanoseek.tokenizer.Tokenizer; a template-carrying one also has
    `chat_template` and `encode_offsets`)."""

    def encode_ordinary(self, text: str) -> list[int]: ...
    def token_to_id(self, token: str) -> int | None: ...


class FormatError(ValueError):
    """A conversation that does not follow the format; `field` names the offending part."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def validate(conversation: Any) -> None:
    """Raise FormatError (naming the field, e.g. `messages[2].role`) unless this is a valid conversation."""
    if not isinstance(conversation, list) or not conversation:
        raise FormatError("messages", f"expected a non-empty list of messages, got {_show(conversation)}")
    for i, message in enumerate(conversation):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise FormatError(where, f"expected an object with 'role' and 'content', got {_show(message)}")
        role = message.get("role")
        if role not in ROLES:
            raise FormatError(
                f"{where}.role", f"expected one of {', '.join(map(repr, ROLES))}, got {_show(role)}"
            )
        if not isinstance(message.get("content"), str):
            raise FormatError(f"{where}.content", f"expected a string, got {_show(message.get('content'))}")
        reasoning = message.get("reasoning_content")
        if reasoning is not None:
            if role != "assistant":
                raise FormatError(
                    f"{where}.reasoning_content", f"only allowed on assistant messages, not {role}"
                )
            if not isinstance(reasoning, str):
                raise FormatError(f"{where}.reasoning_content", f"expected a string, got {_show(reasoning)}")


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def segments(
    conversation: list[Message], add_generation_prompt: bool = False, think: bool = True
) -> list[Segment]:
    """The rendering as a list of (text, is_control_token, in_loss) pieces; the functions below use it."""
    validate(conversation)
    system = "\n\n".join(m["content"] for m in conversation if m["role"] == "system")
    out = [(BOS, True, False), (system, False, False)]
    for m in conversation:
        if m["role"] == "user":
            out += [(USER, True, False), (m["content"], False, False)]
        elif m["role"] == "assistant":
            reasoning = m.get("reasoning_content") or ""
            out += [
                (ASSISTANT, True, False),
                (THINK, True, True),
                ("\n" + reasoning + "\n" if reasoning else "\n", False, True),
                (END_THINK, True, True),
                ("\n\n" + m["content"], False, True),
                (EOS, True, True),
            ]
    if add_generation_prompt:
        out += [(ASSISTANT, True, False), (THINK, True, False), ("\n", False, False)]
        if not think:
            out += [(END_THINK, True, False), ("\n\n", False, False)]
    return out


def render_text(conversation: list[Message], add_generation_prompt: bool = False, think: bool = True) -> str:
    """The rendered conversation as a string (what the Jinja template produces)."""
    return "".join(text for text, _, _ in segments(conversation, add_generation_prompt, think))


def _encode(tokenizer: TokenizerLike, pieces: list[Segment]) -> tuple[list[int], list[int]]:
    # Adjacent text pieces are merged first, so each run of text between two control tokens is
    # encoded in one go, exactly as a tokenizer encodes the whole rendered string.
    ids: list[int] = []
    mask: list[int] = []
    text, text_in_loss = "", False
    for piece, is_control, in_loss in pieces + [("", True, False)]:
        if not is_control:
            text, text_in_loss = text + piece, in_loss
            continue
        if text:
            new = tokenizer.encode_ordinary(text)
            ids += new
            mask += [int(text_in_loss)] * len(new)
            text = ""
        if piece:
            token_id = tokenizer.token_to_id(piece)
            if token_id is None:
                raise ValueError(f"the tokenizer has no {piece!r} token; it cannot render the chat format")
            ids.append(token_id)
            mask.append(int(in_loss))
    return ids, mask


def encode_rendered(
    tokenizer: Any, rendered: Rendered, spans: list[Span] = ()
) -> tuple[list[int], list[int]]:
    """Token ids of a template's rendering and a mask of the tokens overlapping `spans`.

    The text is encoded as a whole, as transformers encodes it, except the control-token text that
    came from inside a message (`rendered.plain`), which is encoded as plain text between the pieces
    around it. Each later piece is encoded after a "\\n" that is then dropped, so a SentencePiece
    tokenizer adds no prefix space to it (transformers' `encode_marked_chat` does the same)."""
    text = rendered.text
    cuts = [0, *(x for span in rendered.plain for x in span), len(text)]
    newline = tokenizer.encode_offsets("\n")[0]
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    for k, (start, end) in enumerate(zip(cuts, cuts[1:])):
        if start == end:
            continue
        piece, ordinary = text[start:end], k % 2 == 1
        piece_ids, piece_offsets = tokenizer.encode_offsets("\n" + piece, ordinary) if k else ([], [])
        if k and piece_ids[: len(newline)] == newline:
            piece_ids, piece_offsets, shift = (
                piece_ids[len(newline) :],
                piece_offsets[len(newline) :],
                start - 1,
            )
        else:
            (piece_ids, piece_offsets), shift = tokenizer.encode_offsets(piece, ordinary), start
        ids += piece_ids
        offsets += [(a + shift, b + shift) for a, b in piece_offsets]
    return ids, _overlap_mask(offsets, spans)


def _overlap_mask(offsets: list[tuple[int, int]], spans: list[Span]) -> list[int]:
    """1 for each token whose characters overlap one of the (sorted) spans, as transformers marks
    `assistant_masks`: one pass over both."""
    mask = [0] * len(offsets)
    k = 0
    for t, (start, end) in enumerate(offsets):
        while k < len(spans) and start >= spans[k][1]:
            k += 1
        if k == len(spans):
            break
        mask[t] = int(end > spans[k][0])
    return mask


def _template(tokenizer: TokenizerLike) -> ChatTemplate | None:
    """The tokenizer's own chat template; None for R1's format; ValueError if it has neither."""
    template = getattr(tokenizer, "chat_template", None)
    if template is None and not getattr(tokenizer, "r1_format", True):
        raise ValueError(
            "this tokenizer has no chat template (tokenizer_config.json has no chat_template) and not "
            "R1's control tokens: it cannot render a conversation; give the model a chat template"
        )
    return template


def render(tokenizer: TokenizerLike, conversation: list[Message]) -> tuple[list[int], list[int]]:
    """Token ids of a whole conversation and its loss mask (1 on assistant turns after <｜Assistant｜>;
    with a model's own template, after each turn's generation prompt, through its end-of-turn token)."""
    template = _template(tokenizer)
    if template is None:
        return _encode(tokenizer, segments(conversation))
    validate(conversation)
    full = template.rendered(conversation)
    return encode_rendered(tokenizer, full, template.assistant_spans(conversation, full))


def render_prompt(
    tokenizer: TokenizerLike,
    messages: list[Message],
    add_generation_prompt: bool = True,
    think: bool = True,
    tools: list[dict] | None = None,
) -> list[int]:
    """Token ids of a prompt: the messages, then `<｜Assistant｜><think>\\n` (think=False: an empty,
    closed think block `<｜Assistant｜><think>\\n</think>\\n\\n`). With a model's own template: its
    generation prompt, rendered with `enable_thinking=think` and `tools`."""
    template = _template(tokenizer)
    if template is None:
        if tools is not None:
            raise ValueError(
                "R1's chat format has no tool definitions; tools need a model's own chat template"
            )
        return _encode(tokenizer, segments(messages, add_generation_prompt, think))[0]
    validate(messages)
    rendered = template.rendered(messages, add_generation_prompt, tools=tools, enable_thinking=think)
    return encode_rendered(tokenizer, rendered)[0]


def prompt_opens_think(tokenizer: TokenizerLike, prompt_ids: list[int]) -> bool:
    """Whether a prompt leaves the model inside a think block: its last `<think>` comes after its last
    `</think>` (R1's `think=True` prompt, R1-distill's and QwQ's templates). The completion then starts
    with reasoning and has only the `</think>`; pass this as `think` to `split_completion`."""
    think_id, end_id = tokenizer.token_to_id(THINK), tokenizer.token_to_id(END_THINK)
    if think_id is None or think_id not in prompt_ids:
        return False
    last_think = len(prompt_ids) - 1 - prompt_ids[::-1].index(think_id)
    return end_id not in prompt_ids[last_think:]


def split_completion(text: str, think: bool = True) -> tuple[str, str]:
    """Split generated text into (reasoning_content, content), both stripped of surrounding whitespace.

    `text` is what the model generated after a `render_prompt` prompt, decoded with or without
    special tokens; `think` is whether that prompt opened a think block (`prompt_opens_think`).
    Tolerant of what small models do:
    - it is cut at the first end-of-turn text if there is one (EOS, `<|im_end|>`, `<|eot_id|>`, ...:
      `END_OF_TURN_TEXTS`; anything after it is ignored);
    - with a `</think>`: reasoning is the text before the first `</think>` (after a `<think>` if the
      model opened one again; text before that `<think>` is dropped), content is the text after it;
    - without a `</think>`: if the model wrote a `<think>`, everything after it is reasoning;
      otherwise everything is reasoning when the prompt opened a think block (`think=True`, the thinking
      never finished) and everything is content when it did not (`think=False`).
    """
    for end in END_OF_TURN_TEXTS:
        text = text.split(end, 1)[0]
    if END_THINK in text:
        reasoning, _, content = text.partition(END_THINK)
        if THINK in reasoning:
            reasoning = reasoning.partition(THINK)[2]
        return reasoning.strip(), content.strip()
    if THINK in text:
        return text.partition(THINK)[2].strip(), ""
    return (text.strip(), "") if think else ("", text.strip())


def r1_zero_prompt(question: str) -> str:
    """The R1-Zero plain-text prompt (DeepSeek-R1 paper, Table 1) for base models, ending in "Assistant:".
    As in the paper the question is followed by a period ("User: prompt. Assistant:"), unless it already
    ends with one of . ? !"""
    question = question.strip()
    return R1_ZERO_TEMPLATE.format(
        question=question if question.endswith((".", "?", "!")) else question + "."
    )


def split_r1_zero_completion(text: str) -> tuple[str, str | None]:
    """Parse an R1-Zero completion into (reasoning, answer): the texts inside <think>..</think> and
    <answer>..</answer>, stripped; answer is None when no complete <answer> block exists."""
    text = text.split(EOS, 1)[0]
    reasoning = ""
    if THINK in text:
        reasoning = text.partition(THINK)[2].partition(END_THINK)[0].strip()
    after_think = text.partition(END_THINK)[2] if END_THINK in text else text
    if "<answer>" not in after_think or "</answer>" not in after_think.partition("<answer>")[2]:
        return reasoning, None
    return reasoning, after_think.partition("<answer>")[2].partition("</answer>")[0].strip()
