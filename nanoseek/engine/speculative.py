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
costs compute, never correctness. This is speculative sampling's accept/resample rule for a greedy
draft: with the draft distribution q = one-hot(d), the rule accepts d with probability
min(1, p(d) / q(d)) = p(d) and otherwise resamples from (p - q)+ normalized, which is p restricted to
tokens other than d; sampling t ~ p and accepting when t == d gives both with the same probabilities
(tests/test_speculative.py checks the sampled distribution against the model's, exactly computed).
A rejected draft's cache entries sit past the sample's length and are overwritten by the next step
(attention only sees positions <= its own).

The pair runs through the decode path (`ModelRunner.decode_logits`) as two rows of the sample's slot:
both cache entries are written before either attends, and each attends up to its own position. On a
CPU a large model's decode step costs what reading the weights costs, and two rows read them once, so
a right draft is a nearly free token. The MTP module runs the same way (`ModelRunner.mtp_drafts`: its
block as a one-layer C step, the head's argmax in the same call). A small model's step is not bound
by its weights: on the speedrun's 2-layer model the pair costs 1.08 one-row steps and the drafter
0.7, which bounds the gain near 1.1x (docs/engine.md). Drafts are the MTP module's argmax; only the first MTP module (depth 1) is used.

It drives the engine through its public API only: `engine.runner` for the tensors,
`engine.sample_and_append` for every emitted token, `engine.stats.count_drafts` for the acceptance.

Whether it pays (`auto_speculation`, what `nanoseek serve` / `chat` / `generate` do unless
--speculative or --no-speculative says): a model without an MTP module never speculates; otherwise a
short probe decodes the same greedy tokens with and without drafts, at batch 1 and at the engine's
largest batch, and speculation stays on only if its drafts are accepted (an untrained MTP module's
are not) and it is faster at batch 1 without being slower at the largest batch. Output is the same
either way; only speed depends on the choice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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
    drafts = engine.runner.mtp_drafts(
        last_h[live, None],
        [[s.output[-1]] for s in live_seqs],
        [s.num_cached - 1 for s in live_seqs],
        [s.slot for s in live_seqs],
        [0] * len(live_seqs),
    )
    for seq, draft in zip(live_seqs, drafts):
        seq.draft = draft


def speculative_decode(engine: Engine, seqs: list[Sequence]) -> int:
    """One draft-and-verify step for every running sample. Returns the tokens run (2 per sample)."""
    runner = engine.runner
    starts = [s.num_cached for s in seqs]  # position of each pending token
    slots = [s.slot for s in seqs]
    h, logits = runner.decode_logits([[s.output[-1], s.draft] for s in seqs], starts, slots)  # (B, 2, C|V)
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
    if live:  # position n predicts t_{n+2}, position n+1 (if the draft was right) t_{n+3}
        new_drafts = runner.mtp_drafts(
            h if len(live) == len(seqs) else h[live],
            [[first[i], second.get(i, 0)] for i in live],
            [starts[i] for i in live],
            [slots[i] for i in live],
            [1 if i in second else 0 for i in live],
        )
        for i, draft in zip(live, new_drafts):
            seqs[i].draft = draft
    return 2 * len(seqs)


# ----------------------------------------------------------------------------------- when it pays

PROBE_TOKENS = 48  # greedy tokens per probe request
MIN_ACCEPTANCE = 0.5  # below this the drafts cannot pay for the MTP block on any machine
MIN_GAIN = 1.05  # speculation must be this much faster at batch 1...
MAX_LOSS = 0.95  # ...and at least this fast (relative) at the engine's largest batch


@dataclass
class SpeculationChoice:
    on: bool
    reason: str
    acceptance: float = float("nan")
    gains: dict[int, float] | None = None  # batch size -> plain seconds / speculative seconds


def speculation_pays(acceptance: float, gains: dict[int, float]) -> tuple[bool, str]:
    """The rule on a probe's figures: drafts accepted at least MIN_ACCEPTANCE, at least MIN_GAIN x
    faster at batch 1, and no slower than MAX_LOSS x at the largest batch probed."""
    shown = ", ".join(f"{g:.2f}x at batch {b}" for b, g in sorted(gains.items()))
    figures = f"drafts accepted {acceptance:.0%}, {shown}"
    if not acceptance >= MIN_ACCEPTANCE:
        return False, f"{figures}: the MTP module's drafts are mostly wrong (an untrained module?)"
    if gains.get(1, 0.0) < MIN_GAIN:
        return False, f"{figures}: not faster at batch 1"
    largest = max(gains)
    if gains[largest] < MAX_LOSS:
        return False, f"{figures}: slower at batch {largest}"
    return True, figures


def _probe_requests(engine: Engine, batch: int, temperature: float):
    from nanoseek.engine.protocol import GenerationRequest, SamplingParams

    def params(i: int) -> SamplingParams:  # seeded: the same tokens with and without drafts
        return SamplingParams(temperature=temperature, max_new_tokens=PROBE_TOKENS, ignore_eos=True, seed=i)

    if engine.tokenizer is not None:
        topics = ("Sort 3, 1, 2.", "What is 12 + 34?", "Hello! Who are you?", "Name a prime number.")
        return [
            GenerationRequest(
                messages=[{"role": "user", "content": topics[i % len(topics)]}], params=params(i)
            )
            for i in range(batch)
        ]
    bos = engine.model.config.bos_token_id or 0
    return [GenerationRequest(prompt=[bos, 5 + i], params=params(i)) for i in range(batch)]


def has_mtp(model_dir: str | Path) -> bool:
    """Whether a model directory (or run directory) has an MTP module (`num_nextn_predict_layers`)."""
    from nanoseek.model.run_dirs import resolve_model_dir

    try:
        cfg = json.loads((resolve_model_dir(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return False  # loading the model reports what is wrong with it
    return bool(cfg.get("num_nextn_predict_layers") or cfg.get("num_mtp_layers"))


def _timed(engine: Engine, requests) -> float:
    t0 = time.perf_counter()
    engine.generate(requests)
    return time.perf_counter() - t0


@contextmanager
def _probing(engine: Engine) -> Iterator[None]:
    """The probe is not traffic: the engine's counters start from zero and are put back after, and
    the prefix cache is off meanwhile (a plain pass would store blocks whose MTP rows were never
    computed, which a speculative pass, or later traffic, would then reuse)."""
    counters = dict(engine.stats)
    for name in counters:
        setattr(engine.stats, name, 0)
    cache = getattr(engine, "prefix_cache", None)
    saved = (cache.max_bytes, cache.hit_tokens, cache.miss_tokens) if cache is not None else None
    if cache is not None:
        cache.max_bytes = 0
    try:
        yield
    finally:
        for name, value in counters.items():
            setattr(engine.stats, name, value)
        if cache is not None:
            cache.max_bytes, cache.hit_tokens, cache.miss_tokens = saved


def auto_speculation(
    engine: Engine,
    force: bool | None = None,
    temperature: float = 0.0,
    max_batch: int | None = None,
    repeats: int = 2,
) -> SpeculationChoice:
    """Decide and set `engine.speculative` before the engine serves anything. force True / False
    keeps it on / turns it off; None (auto) probes: PROBE_TOKENS tokens at `temperature` (seeded), at
    batch 1 and at max_batch (default: the engine's slots), with and without drafts (interleaved, the
    best of `repeats` each), then `speculation_pays`. The engine must have been built with
    speculative=True (the MTP layer's cache) to speculate at all."""
    if force is not None or not engine.speculative:
        engine.speculative = bool(force) and engine.speculative
        why = "forced by the flag" if force is not None else "the model has no MTP module"
        return SpeculationChoice(engine.speculative, why)
    batches = sorted({1, max_batch or engine.runner.num_slots})
    gains: dict[int, float] = {}
    with _probing(engine):
        for batch in batches:
            requests = _probe_requests(engine, batch, temperature)
            best = {True: float("inf"), False: float("inf")}
            for _ in range(repeats):
                for mode in (True, False):
                    engine.speculative = mode
                    best[mode] = min(best[mode], _timed(engine, requests))
            gains[batch] = best[False] / best[True]
        acceptance = engine.stats.acceptance if engine.stats.drafted else 0.0
    on, reason = speculation_pays(acceptance, gains)
    engine.speculative = on
    return SpeculationChoice(on, reason, acceptance, gains)
