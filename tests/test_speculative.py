"""MTP speculation: the sampled distribution is the model's, and the automatic on/off choice.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_speculative.py

Greedy equality with plain decoding (batch 1, ragged batches, int8) and seeded equality are in
tests/test_engine.py; here the distribution at temperature > 0 is checked against the model's own,
computed exactly, so the test needs no second sampler and no float-identical draws.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import bigram_model, random_model, tiny_config

from nanoseek.engine import Engine, GenerationRequest, SamplingParams
from nanoseek.engine.speculative import (
    MIN_ACCEPTANCE,
    auto_speculation,
    has_mtp,
    speculation_pays,
)

pytestmark = pytest.mark.usefixtures("one_thread")

V = 8  # a small vocabulary: the joint of two tokens has V * V outcomes
PROMPT = [3, 5, 7]
TEMPERATURE = 0.9


@pytest.fixture(scope="module")
def spread_model():
    """A permutation bigram whose head is scaled down: each next-token distribution puts ~60% of its
    mass on the successor (the MTP module's draft) and spreads the rest, so drafts are accepted
    about that often and both the accept and the resample branch are exercised."""
    cfg = tiny_config(vocab_size=V)
    perm = torch.randperm(V, generator=torch.Generator().manual_seed(3)).tolist()
    model = bigram_model(cfg, dict(enumerate(perm)))
    with torch.no_grad():
        model.lm_head.weight.mul_(0.0015)
    return model


def exact_joint(model, prompt: list[int], temperature: float) -> torch.Tensor:
    """P(t2, t3 | prompt) (V, V), the second and third sampled tokens: sum over t1 of
    p(t1) p(t2 | t1) p(t3 | t1, t2), from full forwards at `temperature`."""

    def dist(rows: list[list[int]]) -> torch.Tensor:
        return (model(torch.tensor(rows))[:, -1] / temperature).softmax(-1)

    with torch.no_grad():
        p1 = dist([prompt])[0]  # (V,)
        p2 = dist([[*prompt, a] for a in range(V)])  # (V, V): [t1, t2]
        p3 = dist([[*prompt, a, b] for a in range(V) for b in range(V)]).view(V, V, V)  # [t1, t2, t3]
    return (p1[:, None, None] * p2[:, :, None] * p3).sum(0)


def sampled_joint(model, speculative: bool, samples: int, temperature: float) -> tuple[torch.Tensor, Engine]:
    """The empirical P(t2, t3): t2 is the token a draft is checked against, t3 the one an accepted
    draft makes possible in the same step (the first draft is verified when t2 is sampled)."""
    engine = Engine(model, max_slots=64, token_budget=512, speculative=speculative)
    n = 64
    params = [
        SamplingParams(temperature=temperature, max_new_tokens=3, seed=s * n, n=n, ignore_eos=True)
        for s in range(samples // n)
    ]
    counts = torch.zeros(V, V)
    for c in engine.generate([GenerationRequest(prompt=PROMPT, params=p) for p in params]):
        counts[c.token_ids[1], c.token_ids[2]] += 1
    return counts / counts.sum(), engine


def tv_bound(outcomes: int, samples: int, failure: float = 1e-7) -> float:
    """A total-variation distance that N samples of the true distribution exceed with probability
    below `failure`: E[TV] <= sqrt(K / N) / 2, and TV moves by at most 1/N per sample, so McDiarmid
    gives P(TV >= E[TV] + eps) <= exp(-2 N eps^2)."""
    return math.sqrt(outcomes / samples) / 2 + math.sqrt(math.log(1 / failure) / (2 * samples))


def test_speculative_sampling_preserves_the_distribution(spread_model):
    samples = 2048
    exact = exact_joint(spread_model, PROMPT, TEMPERATURE)
    spec, engine = sampled_joint(spread_model, True, samples, TEMPERATURE)
    acceptance = engine.stats.acceptance
    assert 0.2 < acceptance < 0.9  # both branches: drafts accepted and drafts resampled
    bound = tv_bound(V * V, samples)
    tv = 0.5 * float((spec - exact).abs().sum())
    assert tv < bound, f"total variation {tv:.3f} from the model's distribution (bound {bound:.3f})"
    # the bound is tight enough to see a sampler that trusts its drafts: always taking the draft
    # (the likeliest third token) after the second is this far from the model
    draft_always = exact.sum(1)[:, None] * torch.nn.functional.one_hot(exact.argmax(1), V)
    assert 0.5 * float((draft_always - exact).abs().sum()) > 2 * bound


def test_plain_sampling_meets_the_same_bound(spread_model):
    """The control: plain decoding, the same test."""
    samples = 2048
    exact = exact_joint(spread_model, PROMPT, TEMPERATURE)
    plain, _ = sampled_joint(spread_model, False, samples, TEMPERATURE)
    assert 0.5 * float((plain - exact).abs().sum()) < tv_bound(V * V, samples)


# ----------------------------------------------------------------------------------- on or off


def test_speculation_pays_rule():
    assert speculation_pays(0.9, {1: 1.3, 16: 1.0})[0]
    assert not speculation_pays(0.1, {1: 1.3, 16: 1.2})[0]  # drafts wrong: timing is luck
    assert not speculation_pays(MIN_ACCEPTANCE - 0.01, {1: 2.0})[0]
    assert not speculation_pays(0.9, {1: 1.0, 16: 1.0})[0]  # not faster at batch 1
    off, why = speculation_pays(0.9, {1: 1.4, 16: 0.7})
    assert not off and "slower at batch 16" in why
    assert not speculation_pays(float("nan"), {1: 2.0})[0]


def test_auto_turns_an_untrained_mtp_module_off():
    """Random weights: the MTP module's drafts are right ~1 time in 300, whatever the timing."""
    engine = Engine(random_model(tiny_config(), seed=1), max_slots=4, speculative=True)
    choice = auto_speculation(engine, max_batch=2, repeats=1)
    assert not choice.on and not engine.speculative
    assert choice.acceptance < MIN_ACCEPTANCE and set(choice.gains) == {1, 2}
    assert "mostly wrong" in choice.reason
    assert dict(engine.stats) == dict.fromkeys(engine.stats, 0)  # the probe is not counted as traffic


def test_auto_probe_measures_acceptance_of_a_trained_module(spread_model):
    """A module that drafts the bigram's successor: greedy drafts are always right; whether that
    pays is the probe's timing (machine-dependent), so only the acceptance is asserted."""
    engine = Engine(spread_model, max_slots=2, speculative=True)
    choice = auto_speculation(engine, repeats=1)
    assert choice.acceptance > 0.9 and engine.speculative == choice.on
    engine.generate(
        [GenerationRequest(prompt=PROMPT, params=SamplingParams(temperature=0, max_new_tokens=4))]
    )


def test_flags_force_and_a_model_without_mtp_is_off(spread_model):
    engine = Engine(spread_model, max_slots=2, speculative=True)
    assert auto_speculation(engine, force=True).on and engine.speculative
    assert not auto_speculation(engine, force=False).on and not engine.speculative
    plain = Engine(random_model(tiny_config(num_nextn_predict_layers=0)), max_slots=2)
    choice = auto_speculation(plain)
    assert not choice.on and "no MTP module" in choice.reason


def test_has_mtp_reads_the_config(tmp_path):
    tiny = random_model(tiny_config(vocab_size=V))
    tiny.save_pretrained(tmp_path / "with")
    random_model(tiny_config(vocab_size=V, num_nextn_predict_layers=0)).save_pretrained(tmp_path / "without")
    assert has_mtp(tmp_path / "with") and not has_mtp(tmp_path / "without")
    assert not has_mtp(tmp_path / "missing")


def test_cli_speculates_only_where_it_pays_unless_told(tmp_path):
    """`nanoseek generate` / `chat` (and `serve`, the same two calls): an untrained MTP module is
    probed and turned off; --speculative forces it on, --no-speculative off."""
    import argparse

    from helpers import build_checkpoint

    from nanoseek.engine.cli import add_sampling_args, load_engine
    from nanoseek.tokenizer import Tokenizer

    path = build_checkpoint(tmp_path / "m", seed=0)  # a tokenizer and a model without MTP
    tok = Tokenizer.from_dir(path)
    ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id}
    cfg = tiny_config(vocab_size=tok.vocab_size, max_position_embeddings=256, **ids)
    random_model(cfg).save_pretrained(path)  # random weights, one MTP depth
    parser = argparse.ArgumentParser()
    add_sampling_args(parser)

    def engine(*flags: str) -> Engine:
        return load_engine(parser.parse_args(["--model", str(path), "--prefix-cache-mb", "0", *flags]))

    assert engine("--temperature", "0").speculative is False  # auto: the probe's drafts are wrong
    assert engine("--speculative").speculative is True
    assert engine("--no-speculative").speculative is False
