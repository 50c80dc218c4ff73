"""The R1 output format: `<think>reasoning</think>` then the answer, and its format reward.

    answer_part("<think>\\n2+2 is 4\\n</think>\\n\\nThe answer is 4.")  # "The answer is 4."
    format_reward("<think>\\n2+2 is 4\\n</think>\\n\\n4")               # 1.0
    format_reward("<think>2+2 is 4</think> <answer>4</answer>", answer_tag=True)  # 1.0 (R1-Zero)

R1's chat template opens the think block in the prompt (`<｜Assistant｜><think>\\n`), so a completion
may start inside the thinking without its own `<think>`; both spellings count. The split agrees with
`nanoseek.tokenizer`'s chat format: the answer is the text after the first `</think>`.
"""

import re

THINK = "<think>"
END_THINK = "</think>"


def answer_part(completion: str) -> str:
    """The answer a completion gives, to be scored: the text after `</think>`, inside `<answer>` tags if any.

    Blank lines around the answer are dropped; the indentation of its first line is kept (code).
    Text the chat format has already split (no think tags) is all answer. A completion that opened a
    think block and never closed it has no answer: scoring must not read numbers out of unfinished
    thinking."""
    if END_THINK in completion:
        answer = completion.split(END_THINK, 1)[1]
    elif THINK in completion:
        return ""
    else:
        answer = completion
    match = re.search(r"<answer>(.*?)</answer>", answer, re.DOTALL)
    if match:
        return match.group(1).strip()
    # drop blank lines around it, but keep the first line's indentation: it may be a function body
    return re.sub(r"^(?:[ \t]*\r?\n)+", "", answer).rstrip()


def format_reward(completion: str, answer_tag: bool = False) -> float:
    """1.0 when `completion` is `[<think>] reasoning </think> answer` with non-empty reasoning and answer,
    else 0.0. With `answer_tag` (the R1-Zero template) the answer must be `<answer>...</answer>`.

    Exactly one `</think>`, at most one `<think>` and only before it, nothing but whitespace before a
    `<think>`."""
    if completion.count(END_THINK) != 1 or completion.count(THINK) > 1:
        return 0.0
    thinking, answer = completion.split(END_THINK)
    if THINK in thinking:
        before, thinking = thinking.split(THINK)
        if before.strip():
            return 0.0
    if THINK in answer or not thinking.strip() or not answer.strip():
        return 0.0
    if answer_tag:
        match = re.fullmatch(r"\s*<answer>(.*?)</answer>\s*", answer, re.DOTALL)
        if match is None or not match.group(1).strip() or "<answer>" in match.group(1):
            return 0.0
    return 1.0
