"""MTP speculative decoding: the MTP module drafts one token ahead, the main model verifies it.

    engine = Engine(model, tok, speculative=True)     # a model trained with num_nextn_predict_layers >= 1

DeepSeek-V3 trains an MTP module that, from the main model's hidden state h_p at position p and the
token t_{p+1}, predicts t_{p+2}. At inference it is a free drafter. One step for a sample whose
pending token t_n (sampled, not yet in the cache) sits at position n and whose draft is d:

    main model on [t_n, d] at positions [n, n+1]     -> logits_n, logits_{n+1}       (one decode step)
    t_{n+1} = sample(logits_n)                        exactly what plain decoding would sample
    if t_{n+1} == d:  t_{n+2} = sample(logits_{n+1})  the draft was right: a second token for free
    MTP on [h_n, h_{n+1}] with [t_{n+1}, t_{n+2}]     -> the next draft (and the MTP layer's cache)

Verification is exact match against the token the main model samples with the sample's own
generator, one draw per emitted token, the same draws as without speculation. So greedy output is
plain greedy output, and a seeded sample is the same text with or without speculation; a wrong draft
costs compute, never correctness. A rejected draft's cache entries sit past the sample's length and
are overwritten by the next step (attention only sees positions <= its own).

The pair runs through the decode path (`ModelRunner.decode_runs`) as two rows of the sample's slot:
both cache entries are written before either attends, and each attends up to its own position. On a
CPU a decode step costs what reading the weights costs, and two rows read them once, so a right
draft is a nearly free token. The MTP module runs the same way (`FastDecoder.mtp_hidden`). Drafts are
the MTP module's argmax; only the first MTP module (depth 1) is used.

It drives the engine through its public API only: `engine.runner` for the tensors,
`engine.sample_and_append` for every emitted token, `engine.stats.count_drafts` for the acceptance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from nanoseek.engine.scheduler import RequestState, Sequence, Status

if TYPE_CHECKING:
    from nanoseek.engine.engine import Engine


def prefill_mtp(engine: Engine, chunks: list[tuple[RequestState, int, int]], h: torch.Tensor) -> None:
    """Fill the MTP layer's cache for prompt positions [a, b) from the main hidden states h (B, T, C).
    Position p needs the token at p + 1: known inside the prompt; the prompt's last position gets its
    real entry in `first_drafts`, once the first token is sampled (until then a pad stands in)."""
    T = h.shape[1]
    next_ids = [g.prompt_ids[a + 1 : b + 1] for g, a, b in chunks]
    next_ids = [row + [0] * (T - len(row)) for row in next_ids]
    engine.runner.mtp_hidden(
        h, next_ids, [a for _, a, _ in chunks], [g.sequences[0].slot for g, _, _ in chunks]
    )


def first_drafts(engine: Engine, seqs: list[Sequence], last_h: torch.Tensor) -> None:
    """After prefill: each sample's MTP entry at the prompt's last position (from its own first
    token) and its first draft. last_h (B, C): main hidden state at the last prompt position."""
    live = [i for i, s in enumerate(seqs) if s.status is Status.RUNNING]
    if not live:
        return
    live_seqs = [seqs[i] for i in live]
    mh = engine.runner.mtp_hidden(
        last_h[live, None],
        [[s.output[-1]] for s in live_seqs],
        [s.num_cached - 1 for s in live_seqs],
        [s.slot for s in live_seqs],
    )  # (L, 1, C)
    drafts = engine.runner.mtp_logits(mh[:, 0]).argmax(-1).tolist()
    for seq, draft in zip(live_seqs, drafts):
        seq.draft = draft


def speculative_decode(engine: Engine, seqs: list[Sequence]) -> int:
    """One draft-and-verify step for every running sample. Returns the tokens run (2 per sample)."""
    runner = engine.runner
    starts = [s.num_cached for s in seqs]  # position of each pending token
    slots = [s.slot for s in seqs]
    h = runner.decode_runs([[s.output[-1], s.draft] for s in seqs], starts, slots)  # (B, 2, C)
    logits = runner.logits(h)  # (B, 2, V)
    for seq in seqs:
        seq.num_cached += 1  # the pending token is in the cache now
    drafts = [s.draft for s in seqs]
    first = engine.sample_and_append(seqs, logits[:, 0])
    accepted = [i for i, s in enumerate(seqs) if s.status is Status.RUNNING and first[i] == drafts[i]]
    engine.stats.count_drafts(len(seqs), len(accepted))
    second: dict[int, int] = {}
    if accepted:
        for i in accepted:
            seqs[i].num_cached += 1  # the draft was the right token: its cache entry is valid
        tokens = engine.sample_and_append([seqs[i] for i in accepted], logits[accepted, 1])
        second = dict(zip(accepted, tokens))
    live = [i for i, s in enumerate(seqs) if s.status is Status.RUNNING]
    if live:
        mh = runner.mtp_hidden(
            h[live],
            [[first[i], second.get(i, 0)] for i in live],
            [starts[i] for i in live],
            [slots[i] for i in live],
        )  # (L, 2, C): position n predicts t_{n+2}, position n+1 (if accepted) predicts t_{n+3}
        pick = torch.tensor([1 if i in second else 0 for i in live], device=mh.device)
        new_drafts = runner.mtp_logits(mh[torch.arange(len(live), device=mh.device), pick]).argmax(-1)
        for i, draft in zip(live, new_drafts.tolist()):
            seqs[i].draft = draft
    return 2 * len(seqs)
