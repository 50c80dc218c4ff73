"""GRPO loss math against the formulas written out by hand, element by element."""

import math

import pytest
import torch

from nanoseek.rl.loss import group_advantages, k3_kl, policy_loss


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0])  # 2 prompts x G=4
    adv = group_advantages(rewards, 4, mode="grpo", eps=0.0)
    std = math.sqrt(((0.5**2) * 4) / 3)  # unbiased std of [1, 0, 0, 1]
    assert adv[:4].tolist() == pytest.approx([0.5 / std, -0.5 / std, -0.5 / std, 0.5 / std])
    g2 = [1, 1, 0, 0]
    std2 = math.sqrt(sum((r - 0.5) ** 2 for r in g2) / 3)
    assert adv[4:].tolist() == pytest.approx([(r - 0.5) / std2 for r in g2])
    dr = group_advantages(rewards, 4, mode="dr_grpo")
    assert dr.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0.5, 0.5, -0.5, -0.5])


def test_all_equal_group_has_zero_advantage():
    adv = group_advantages(torch.tensor([1.0, 1.0, 1.0, 0.2, 0.2, 0.2]), 3)
    assert torch.equal(adv, torch.zeros(6))


def test_k3_kl_by_hand_and_nonnegative():
    logp, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.5, -1.0, -0.5])
    expected = [math.exp(r - p) - (r - p) - 1 for p, r in zip(logp.tolist(), ref.tolist())]
    assert k3_kl(logp, ref).tolist() == pytest.approx(expected)
    assert (k3_kl(torch.randn(100), torch.randn(100)) >= 0).all()


def hand_loss(logp, old, adv, mask, eps_low, eps_high, beta, ref, aggregation, max_len):
    """The same loss with Python loops over sequences and tokens (nested lists in, a float out)."""
    N, L = len(logp), len(logp[0])
    per_seq, total, count = [], 0.0, 0
    for i in range(N):
        seq_sum, seq_count = 0.0, 0
        for t in range(L):
            if not mask[i][t]:
                continue
            r = math.exp(logp[i][t] - old[i][t])
            obj = min(r * adv[i], min(max(r, 1 - eps_low), 1 + eps_high) * adv[i])
            kl = math.exp(ref[i][t] - logp[i][t]) - (ref[i][t] - logp[i][t]) - 1 if beta else 0.0
            term = -obj + beta * kl
            seq_sum, seq_count = seq_sum + term, seq_count + 1
        per_seq.append(seq_sum / max(seq_count, 1))
        total, count = total + seq_sum, count + seq_count
    if aggregation == "grpo":
        return sum(per_seq) / N
    if aggregation == "dapo":
        return total / count
    return total / (N * max_len)


@pytest.mark.parametrize("aggregation", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_policy_loss_equals_its_formula(aggregation, beta):
    torch.manual_seed(0)
    N, L = 6, 7
    logp = -torch.rand(N, L) * 3
    old = logp + 0.4 * torch.randn(N, L)  # ratios spread across both clip edges
    ref = logp + 0.3 * torch.randn(N, L)
    adv = torch.randn(N)
    mask = torch.ones(N, L, dtype=torch.bool)
    for i, length in enumerate([7, 3, 5, 1, 6, 2]):
        mask[i, length:] = False
    out = policy_loss(logp, old, adv, mask, 0.2, 0.28, beta, ref if beta else None, aggregation, max_len=10)
    expected = hand_loss(
        logp.tolist(), old.tolist(), adv.tolist(), mask, 0.2, 0.28, beta, ref.tolist(), aggregation, 10
    )
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert 0 < out.clip_fraction < 1


def test_mu1_beta0_gradient_is_reinforce_with_group_mean_baseline():
    torch.manual_seed(1)
    G, L, V = 4, 5, 11
    logits = torch.randn(G, L, V, requires_grad=True)
    tokens = torch.randint(0, V, (G, L))
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0])
    mask = torch.ones(G, L)
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    adv = group_advantages(rewards, G, mode="dr_grpo")
    policy_loss(logp, logp.detach(), adv, mask, aggregation="dapo").loss.backward()
    grad_grpo = logits.grad.clone()
    logits.grad = None
    # REINFORCE: -sum_i (r_i - mean r) * sum_t log pi(a_t) / number of tokens
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    baseline = rewards.mean()
    reinforce = -((rewards - baseline)[:, None] * logp).sum() / (G * L)
    reinforce.backward()
    assert torch.allclose(grad_grpo, logits.grad, atol=1e-7)


def test_clip_higher_lets_positive_advantages_grow_further():
    logp = torch.log(torch.tensor([[1.25]]))  # ratio 1.25 against old logp 0
    old = torch.zeros(1, 1)
    mask = torch.ones(1, 1)
    symmetric = policy_loss(logp, old, torch.tensor([1.0]), mask, eps_low=0.2, eps_high=0.2)
    higher = policy_loss(logp, old, torch.tensor([1.0]), mask, eps_low=0.2, eps_high=0.28)
    assert symmetric.clip_fraction == 1.0 and higher.clip_fraction == 0.0
    assert symmetric.loss.item() == pytest.approx(-1.2) and higher.loss.item() == pytest.approx(-1.25)


def test_bad_options_are_rejected():
    x = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="aggregation"):
        policy_loss(x, x, torch.zeros(1), x, aggregation="mean")
    with pytest.raises(ValueError, match="reference"):
        policy_loss(x, x, torch.zeros(1), x, beta=0.1)
    with pytest.raises(ValueError, match="advantage mode"):
        group_advantages(torch.zeros(4), 2, mode="ppo")
