"""Sampling: from next-token logits to tokens, per row of a batch, independent of the other rows.

    sampler = Sampler(vocab_size, num_slots)
    sampler.start(slot, prompt_ids)                      # a sequence takes a cache slot
    tokens, logprobs = sampler.sample(logits, rows)      # logits (B, V); rows: a SampleRow per row
    sampler.record(slots, tokens)                        # the tokens join the penalty counts

Processing order (as in vLLM), every step row-wise so a row's result never depends on its batch:

    logprobs = log_softmax(raw logits)                   reported logprobs: the model's distribution
    logits  <- repetition penalty on tokens in prompt or output   (x / p if x > 0 else x * p)
    logits  <- logits - frequency * count - presence * (count > 0)     (output tokens only)
    greedy:  token = argmax(logits)
    else:    logits / temperature -> keep top_k -> keep min_p * max prob -> keep top_p nucleus
             token = argmax(probs / E),  E ~ Exponential(1) drawn from the row's own torch.Generator

The exponential race `argmax(p / E)` is an exact sample from p and uses one fixed-size draw per
token, so a sequence seeded with s draws the same numbers whatever else is in the batch: the same
seed gives the same text alone or in a busy batch, and with or without speculative decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nanoseek.engine.protocol import SamplingParams, TokenLogprob


@dataclass
class SampleRow:
    """What sampling needs to know about the sequence behind one row of logits."""

    params: SamplingParams
    slot: int  # cache slot, which indexes the penalty counts
    generator: torch.Generator | None  # None only for greedy rows


class Sampler:
    def __init__(self, vocab_size: int, num_slots: int, device: torch.device | str = "cpu"):
        self.vocab_size = vocab_size
        # per slot: how often each token was generated, and which tokens the prompt holds
        self.output_counts = torch.zeros(num_slots, vocab_size, dtype=torch.int32, device=device)
        self.in_prompt = torch.zeros(num_slots, vocab_size, dtype=torch.bool, device=device)

    def start(self, slot: int, prompt_ids: list[int]) -> None:
        self.output_counts[slot].zero_()
        self.in_prompt[slot].zero_()
        if prompt_ids:
            self.in_prompt[slot, torch.tensor(prompt_ids, device=self.in_prompt.device)] = True

    def fork(self, src: int, dst: int) -> None:
        self.output_counts[dst] = self.output_counts[src]
        self.in_prompt[dst] = self.in_prompt[src]

    def record(self, slots: list[int], tokens: list[int]) -> None:
        """Count each row's new token (one token per slot per call). Only the penalties read the
        counts, so the engine records the rows of penalized requests only (an indexed add costs about
        a tenth of a small model's decode step)."""
        self.output_counts[slots, tokens] += 1

    @torch.no_grad()
    def sample(
        self, logits: torch.Tensor, rows: list[SampleRow]
    ) -> tuple[list[int], list[TokenLogprob | None]]:
        """logits (B, V) -> one token per row, and its TokenLogprob where the row asked for logprobs."""
        logits = logits.float()
        B = logits.shape[0]
        if all(
            r.params.greedy and not (r.params.penalized or r.params.logprobs or r.params.top_logprobs)
            for r in rows
        ):
            return logits.argmax(-1).tolist(), [None] * B  # the common case, without the bookkeeping
        logprobs: list[TokenLogprob | None] = [None] * B
        want_logprobs = [i for i, r in enumerate(rows) if r.params.logprobs or r.params.top_logprobs]
        raw_logp = logits[want_logprobs].log_softmax(-1) if want_logprobs else None
        logits = self.apply_penalties(logits, rows)
        tokens = logits.argmax(-1)  # greedy rows keep this
        sampled = [i for i, r in enumerate(rows) if not r.params.greedy]
        if sampled:
            probs = truncated_probs(logits[sampled], [rows[i].params for i in sampled])  # (b, V)
            noise = torch.empty_like(probs)  # (b, V): each row's draw from its own generator
            for j, i in enumerate(sampled):
                noise[j].exponential_(1.0, generator=rows[i].generator)
            tokens[sampled] = (probs / noise).argmax(-1)
        token_list = tokens.tolist()
        if want_logprobs:
            chosen = torch.tensor([token_list[i] for i in want_logprobs], device=logits.device)
            chosen_logp = raw_logp.gather(1, chosen[:, None]).squeeze(1).tolist()  # (w,)
        for j, i in enumerate(want_logprobs):
            k = rows[i].params.top_logprobs
            top = []
            if k:
                values, ids = raw_logp[j].topk(min(k, self.vocab_size))
                top = list(zip(ids.tolist(), values.tolist()))
            logprobs[i] = TokenLogprob(token_list[i], chosen_logp[j], top)
        return token_list, logprobs

    def apply_penalties(self, logits: torch.Tensor, rows: list[SampleRow]) -> torch.Tensor:
        """Repetition, frequency and presence penalties on the rows that set them; logits (B, V)."""
        idx = [i for i, r in enumerate(rows) if r.params.penalized]
        if not idx:
            return logits
        slots = torch.tensor([rows[i].slot for i in idx], device=logits.device)
        counts = self.output_counts[slots].float()  # (b, V)
        seen = counts > 0
        x = logits[idx]
        rep = torch.tensor([rows[i].params.repetition_penalty for i in idx], device=logits.device)[:, None]
        penalized = torch.where(x > 0, x / rep, x * rep)
        x = torch.where(seen | self.in_prompt[slots], penalized, x)
        freq = torch.tensor([rows[i].params.frequency_penalty for i in idx], device=logits.device)[:, None]
        pres = torch.tensor([rows[i].params.presence_penalty for i in idx], device=logits.device)[:, None]
        x = x - freq * counts - pres * seen.float()
        logits = logits.clone()
        logits[idx] = x
        return logits


def truncated_probs(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Temperature, top-k, min-p and top-p, row by row: logits (b, V) -> probabilities (b, V)."""
    device = logits.device
    temperature = torch.tensor([p.temperature for p in params], device=device)[:, None]
    probs = (logits / temperature).softmax(-1)
    min_p = torch.tensor([p.min_p for p in params], device=device)[:, None]
    if (min_p > 0).any():
        probs = probs.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, 0.0)
    if any(p.top_k for p in params) or any(p.top_p < 1 for p in params):
        sorted_probs, order = probs.sort(-1, descending=True)  # (b, V)
        V = probs.shape[-1]
        rank = torch.arange(V, device=device)[None, :]
        top_k = torch.tensor([p.top_k or V for p in params], device=device)[:, None]
        top_p = torch.tensor([p.top_p for p in params], device=device)[:, None]
        # the mass before a token, over the mass kept so far (min-p and top-k renormalize first)
        kept = sorted_probs.masked_fill(rank >= top_k, 0.0)
        before = (kept.cumsum(-1) - kept) / kept.sum(-1, keepdim=True)
        drop_sorted = (rank >= top_k) | ((before >= top_p) & (top_p < 1))
        drop_sorted[:, 0] = False  # the most likely token always survives
        drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
    return probs / probs.sum(-1, keepdim=True)
