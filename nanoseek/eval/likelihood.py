"""Multiple choice by likelihood, as lm-evaluation-harness scores MMLU / ARC / HellaSwag: no generation.

    from nanoseek.eval.likelihood import LikelihoodScorer
    scorer = LikelihoodScorer(model, tokenizer, style="cloze")
    result = scorer.score(problem)        # problem.choices: the options; problem.reference: "A", "B", ...
    result["pred"], result["correct"], result["correct_norm"]

For each choice, the score is the sum of the log-probabilities of its continuation tokens given the
context: log p(continuation | context). `acc` picks the argmax of that sum; `acc_norm` the argmax of
the sum divided by the continuation's length in characters (lm-eval's acc_norm), which removes the
bias towards short options. Ties go to the first choice (numpy's argmax).

Contexts (plain text, after BOS where the tokenizer adds one, so base models can be scored; chat
models too):
    style="cloze"   "Question: {question}\\nAnswer:" + " {choice text}"        (lm-eval's ARC style)
    style="letter"  "{question}\\nA. ..\\nB. ..\\nAnswer:" + " A" / " B" / ...   (lm-eval's MMLU style)
Tokenization follows lm-eval: the context and the continuation are encoded together and the
continuation is what comes after the context's own tokens; whitespace at the end of the context moves
to the continuation. Sequences longer than the model's context are cut from the left.
"""

from __future__ import annotations

import string
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nanoseek.tasks import Problem
from nanoseek.tokenizer import Tokenizer

STYLES = ("cloze", "letter")


def question_text(problem: Problem) -> str:
    """The bare question of a multiple-choice problem (its prompt without the listed choices and the
    answer instruction, as `nanoseek.tasks.MultipleChoiceTask` builds it)."""
    letters = string.ascii_uppercase
    listed = "\n".join(f"{letter}) {choice}" for letter, choice in zip(letters, problem.choices or []))
    at = problem.prompt.find("\n\n" + listed)
    return (problem.prompt[:at] if listed and at >= 0 else problem.prompt).strip()


def mc_request(problem: Problem, style: str = "cloze") -> tuple[str, list[str]]:
    """(context, continuations) of a multiple-choice problem in the given style."""
    if not problem.choices:
        raise ValueError(f"problem {problem.id} has no choices; likelihood scoring is for multiple choice")
    if style not in STYLES:
        raise ValueError(f"unknown multiple-choice style {style!r}; choose one of {', '.join(STYLES)}")
    question = question_text(problem)
    if style == "cloze":
        return f"Question: {question}\nAnswer:", [f" {choice}" for choice in problem.choices]
    letters = string.ascii_uppercase[: len(problem.choices)]
    listed = "\n".join(f"{letter}. {choice}" for letter, choice in zip(letters, problem.choices))
    return f"{question}\n{listed}\nAnswer:", [f" {letter}" for letter in letters]


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval splits them (the context after the tokenizer's
    `bos_prefix`: BOS where Hugging Face's tokenizer adds one)."""
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    whole = tokenizer.encode_ordinary(stripped + continuation)
    n_context = len(tokenizer.encode_ordinary(stripped))
    return [*tokenizer.bos_prefix, *whole[:n_context]], whole[n_context:]


@torch.no_grad()
def continuation_logprobs(
    model: nn.Module, tokenizer: Tokenizer, context: str, continuations: list[str]
) -> list[tuple[float, int]]:
    """(sum of log p(token), number of tokens) of each continuation given the context; one forward."""
    max_len = getattr(getattr(model, "config", None), "max_position_embeddings", 1 << 30)
    rows, spans = [], []
    for continuation in continuations:
        context_ids, cont_ids = encode_pair(tokenizer, context, continuation)
        if not cont_ids:
            raise ValueError(f"continuation {continuation!r} encodes to no tokens")
        ids = (context_ids + cont_ids)[-(max_len + 1) :][:-1]  # inputs; the last token is only a target
        targets = cont_ids[-len(ids) :] if len(cont_ids) > len(ids) else cont_ids
        rows.append(ids)
        spans.append(targets)
    width = max(map(len, rows))
    batch = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    for i, ids in enumerate(rows):
        batch[i, : len(ids)] = torch.tensor(ids)  # right padding: causal attention never sees it
    device = next(model.parameters()).device
    logprobs = F.log_softmax(model(batch.to(device)).float(), dim=-1).cpu()
    out = []
    for i, (ids, targets) in enumerate(zip(rows, spans)):
        # the logits at position t predict token t + 1: the continuation's tokens sit at the end of the row
        start = len(ids) - len(targets)
        positions = torch.arange(start, len(ids))
        picked = logprobs[i, positions, torch.tensor(targets)]
        out.append((float(picked.sum()), len(targets)))
    return out


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # ties: the first


class LikelihoodScorer:
    """Scores multiple-choice problems with a causal LM (any registered family) and its tokenizer."""

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, style: str = "cloze"):
        if style not in STYLES:
            raise ValueError(f"unknown multiple-choice style {style!r}; choose one of {', '.join(STYLES)}")
        self.model, self.tokenizer, self.style = model.eval(), tokenizer, style

    def score(self, problem: Problem) -> dict[str, Any]:
        """Per-choice log-likelihoods, the acc / acc_norm predictions (letters) and their verdicts."""
        context, continuations = mc_request(problem, self.style)
        scored = continuation_logprobs(self.model, self.tokenizer, context, continuations)
        logprobs = [lp for lp, _ in scored]
        # lm-eval's acc_norm divides by the length of the choice text in characters
        lengths = [len(c) for c in (problem.choices if self.style == "cloze" else continuations)]
        normed = [lp / max(n, 1) for lp, n in zip(logprobs, lengths)]
        letters = string.ascii_uppercase
        pred, pred_norm = letters[_argmax(logprobs)], letters[_argmax(normed)]
        return {
            "context": context,
            "logprobs": logprobs,
            "num_tokens": [n for _, n in scored],
            "lengths": lengths,
            "pred": pred,
            "pred_norm": pred_norm,
            "correct": pred == problem.reference,
            "correct_norm": pred_norm == problem.reference,
        }
