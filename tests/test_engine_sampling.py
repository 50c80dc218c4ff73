"""Sampling: truncation (top-k, top-p, min-p), penalties, per-row generators, logprobs, distributions."""

import math

import pytest
import torch

from nanoseek.engine.protocol import SamplingParams
from nanoseek.engine.sampling import Sampler, SampleRow, truncated_probs

PROBS = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05])
LOGITS = PROBS.log()
pytestmark = pytest.mark.usefixtures("one_thread")


def kept(**kw) -> list[int]:
    probs = truncated_probs(LOGITS[None], [SamplingParams(**kw)])[0]
    return (probs > 0).nonzero().flatten().tolist()


def test_truncation_keeps_the_right_tokens():
    assert kept() == [0, 1, 2, 3, 4]
    assert kept(top_k=2) == [0, 1]
    assert kept(top_p=0.7) == [0, 1]  # 0.4 + 0.3 reaches 0.7
    assert kept(top_p=0.71) == [0, 1, 2]
    assert kept(top_p=0.01) == [0]  # the most likely token always survives
    assert kept(min_p=0.3) == [0, 1, 2]  # >= 0.3 * 0.4
    assert kept(top_k=3, top_p=0.8) == [0, 1]  # nucleus of the renormalized top-3: 0.47 + 0.35
    probs = truncated_probs(LOGITS[None], [SamplingParams(top_k=2)])[0]
    assert probs[:2].tolist() == pytest.approx([0.4 / 0.7, 0.3 / 0.7])


def test_temperature_sharpens_and_flattens():
    cold = truncated_probs(LOGITS[None], [SamplingParams(temperature=0.5)])[0]
    hot = truncated_probs(LOGITS[None], [SamplingParams(temperature=2.0)])[0]
    assert cold[0] > PROBS[0] > hot[0]
    assert cold.tolist() == pytest.approx((PROBS**2 / (PROBS**2).sum()).tolist(), abs=1e-6)


def test_penalties_follow_openai_and_vllm():
    sampler = Sampler(vocab_size=5, num_slots=1)
    sampler.start(0, prompt_ids=[3])
    for token in [0, 0, 1]:
        sampler.record([0], [token])
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0]])
    params = SamplingParams(repetition_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25)
    out = sampler.apply_penalties(logits, [SampleRow(params, 0, None)])[0]
    # token 0: seen twice -> 2/2 - 0.5*2 - 0.25; token 1: once -> 1/2 - 0.5 - 0.25;
    # token 3: in the prompt only -> -1*2 (repetition only); tokens 2 and 4 untouched
    assert out.tolist() == pytest.approx([2 / 2 - 1.0 - 0.25, 0.5 - 0.5 - 0.25, 0.5, -2.0, 3.0])


def test_a_rows_sample_depends_only_on_its_generator():
    V = 50
    logits = torch.randn(6, V)
    params = SamplingParams(temperature=1.0, top_p=0.9)
    sampler = Sampler(V, num_slots=6)

    def rows(seeds):
        return [SampleRow(params, i, torch.Generator().manual_seed(s)) for i, s in enumerate(seeds)]

    alone, _ = sampler.sample(logits[2:3], rows([42]))
    batch, _ = sampler.sample(logits, rows([1, 2, 42, 3, 4, 5]))
    assert batch[2] == alone[0]
    greedy, _ = sampler.sample(logits, [SampleRow(SamplingParams(temperature=0), i, None) for i in range(6)])
    assert greedy == logits.argmax(-1).tolist()


def test_samples_follow_the_distribution():
    n = 4000
    sampler = Sampler(5, num_slots=1)
    params = SamplingParams(temperature=1.0)
    gen = torch.Generator().manual_seed(0)
    tokens, _ = sampler.sample(LOGITS.expand(n, 5), [SampleRow(params, 0, gen)] * n)
    freq = torch.bincount(torch.tensor(tokens), minlength=5).float() / n
    assert (freq - PROBS).abs().max() < 4 * math.sqrt(0.25 / n)  # within 4 standard errors


def test_logprobs_are_raw_log_softmax_with_sorted_alternatives():
    sampler = Sampler(5, num_slots=1)
    params = SamplingParams(temperature=0.5, top_k=2, logprobs=True, top_logprobs=3)
    tokens, logprobs = sampler.sample(LOGITS[None], [SampleRow(params, 0, torch.Generator().manual_seed(0))])
    lp = logprobs[0]
    assert lp.token_id == tokens[0] in (0, 1)
    assert lp.logprob == pytest.approx(math.log(PROBS[tokens[0]].item()), abs=1e-5)  # before temperature
    assert [t for t, _ in lp.top] == [0, 1, 2]
    assert [v for _, v in lp.top] == pytest.approx(PROBS[:3].log().tolist(), abs=1e-5)


def test_invalid_params_are_rejected():
    for bad in (dict(temperature=-1), dict(top_p=0), dict(n=0), dict(min_p=2), dict(max_new_tokens=-1)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    assert SamplingParams(stop="\n").stop == ["\n"]
