"""Tokenizer and chat format: byte-level BPE with DeepSeek-R1's special tokens, and THE chat format.

    from nanoseek.tokenizer import Tokenizer, train_tokenizer, chat_format
    tok = train_tokenizer(["corpus.txt"], vocab_size=512, out_dir="runs/tok")
    ids, loss_mask = chat_format.render(tok, conversation)
    tok = Tokenizer.from_dir("Qwen2.5-0.5B-Instruct")   # a model's own tokenizer and chat template

Modules: `core` (Tokenizer, StreamDecoder), `chat_format` (render / render_prompt / split_completion /
prompt_opens_think, our Jinja chat template), `chat_template` (a model's own Jinja template, rendered
as transformers renders it), `documents` (corpus files -> text documents, DataError), `train`
(train_tokenizer, train_digit_tokenizer and the `nanoseek tokenizer train` command).
"""

from nanoseek.tokenizer import chat_format
from nanoseek.tokenizer.chat_format import (
    CHAT_TEMPLATE,
    FormatError,
    prompt_opens_think,
    r1_zero_prompt,
    render,
    render_prompt,
    render_text,
    split_completion,
    split_r1_zero_completion,
)
from nanoseek.tokenizer.chat_template import ChatTemplate, TemplateError
from nanoseek.tokenizer.core import StreamDecoder, Tokenizer
from nanoseek.tokenizer.train import (
    compression_ratio,
    tokenizer_train_main,
    train_digit_tokenizer,
    train_tokenizer,
)

__all__ = [
    "CHAT_TEMPLATE",
    "ChatTemplate",
    "FormatError",
    "StreamDecoder",
    "TemplateError",
    "Tokenizer",
    "chat_format",
    "compression_ratio",
    "prompt_opens_think",
    "r1_zero_prompt",
    "render",
    "render_prompt",
    "render_text",
    "split_completion",
    "split_r1_zero_completion",
    "tokenizer_train_main",
    "train_digit_tokenizer",
    "train_tokenizer",
]
