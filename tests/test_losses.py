"""Losses and per-token quantities against naive loop implementations written from the papers."""

import math

import torch

from rlhf_lab.steps.losses import (
    bradley_terry_loss,
    entropy_from_logits,
    gae,
    kl_per_token,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
    sft_loss,
    token_logprobs,
)


def naive_gae(rewards, values, mask, gamma, lam):
    B, R = rewards.shape
    adv = torch.zeros(B, R)
    for b in range(B):
        n = int(mask[b].sum())
        last = 0.0
        for t in reversed(range(n)):
            next_v = float(values[b, t + 1]) if t + 1 < n else 0.0
            delta = float(rewards[b, t]) + gamma * next_v - float(values[b, t])
            last = delta + gamma * lam * last
            adv[b, t] = last
    returns = (adv + values) * mask
    return adv, returns


def test_gae_matches_loop():
    torch.manual_seed(0)
    rewards, values = torch.randn(5, 9), torch.randn(5, 9)
    mask = torch.ones(5, 9)
    for b, n in enumerate([9, 4, 1, 7, 6]):
        mask[b, n:] = 0
    for gamma, lam in [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)]:
        adv, ret = gae(rewards, values, mask, gamma=gamma, lam=lam)
        adv_n, ret_n = naive_gae(rewards, values, mask, gamma, lam)
        assert torch.allclose(adv * mask, adv_n, atol=1e-5)
        assert torch.allclose(ret * mask, ret_n, atol=1e-5)


def test_gae_lambda_one_is_reward_to_go_minus_value():
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.2, 0.3, 0.4]])
    adv, ret = gae(r, v, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert torch.allclose(ret, torch.ones(1, 3))
    assert torch.allclose(adv, torch.tensor([[0.8, 0.7, 0.6]]))


def test_bradley_terry_loss():
    c, r = torch.tensor([1.0, 0.0, -2.0]), torch.tensor([0.0, 0.0, 1.0])
    naive = sum(-math.log(1 / (1 + math.exp(-(a - b)))) for a, b in zip(c.tolist(), r.tolist(), strict=True)) / 3
    assert abs(float(bradley_terry_loss(c, r)) - naive) < 1e-6
    # a margin shifts the difference
    assert float(bradley_terry_loss(c, r, margin=torch.ones(3))) > float(bradley_terry_loss(c, r))


def test_kl_estimators_on_hand_values():
    lp = torch.tensor([[math.log(0.5), math.log(0.2)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.4)]])
    k1 = kl_per_token(lp, ref, "k1")
    assert torch.allclose(k1, torch.tensor([[math.log(2), math.log(0.5)]]))
    k3 = kl_per_token(lp, ref, "k3")
    # k3 = (r − 1) − log r with r = π_ref / π
    expect = [(0.5 - 1) - math.log(0.5), (2 - 1) - math.log(2)]
    assert torch.allclose(k3, torch.tensor([expect]), atol=1e-6)
    assert (k3 >= 0).all()


def test_k1_and_k3_are_unbiased_for_true_kl():
    torch.manual_seed(0)
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.3, 0.3, 0.4])
    true_kl = float((p * (p / q).log()).sum())
    x = torch.multinomial(p, 200_000, replacement=True)
    lp, lq = p.log()[x], q.log()[x]
    assert abs(float(kl_per_token(lp, lq, "k1").mean()) - true_kl) < 0.01
    assert abs(float(kl_per_token(lp, lq, "k3").mean()) - true_kl) < 0.01


def test_ppo_policy_loss_matches_naive():
    torch.manual_seed(1)
    lp, old, adv = torch.randn(3, 4) * 0.3, torch.randn(3, 4) * 0.3, torch.randn(3, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float)
    eps = 0.2
    loss, stats = ppo_policy_loss(lp, old, adv, mask, cliprange=eps)
    terms, clipped = [], []
    for b in range(3):
        for t in range(4):
            if mask[b, t]:
                ratio = math.exp(float(lp[b, t] - old[b, t]))
                unclipped = -float(adv[b, t]) * ratio
                cl = -float(adv[b, t]) * min(max(ratio, 1 - eps), 1 + eps)
                terms.append(max(unclipped, cl))
                clipped.append(cl > unclipped)
    assert abs(float(loss) - sum(terms) / len(terms)) < 1e-6
    assert abs(float(stats["clipfrac"]) - sum(clipped) / len(clipped)) < 1e-6


def test_ppo_value_loss_matches_naive():
    torch.manual_seed(2)
    v, old, ret = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.float)
    loss, _ = ppo_value_loss(v, old, ret, mask, cliprange_value=0.1)
    terms = []
    for b in range(2):
        for t in range(3):
            if mask[b, t]:
                vc = float(old[b, t]) + min(max(float(v[b, t] - old[b, t]), -0.1), 0.1)
                terms.append(max((float(v[b, t]) - float(ret[b, t])) ** 2, (vc - float(ret[b, t])) ** 2))
    assert abs(float(loss) - 0.5 * sum(terms) / len(terms)) < 1e-6


def test_whitening_and_masked_mean():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1, 1, 1, 0]], dtype=torch.float)
    assert float(masked_mean(x, m)) == 2.0
    w = masked_whiten(x, m)
    vals = w[0, :3]
    assert abs(float(vals.mean())) < 1e-6
    assert abs(float(vals.std(unbiased=True)) - 1.0) < 1e-3
    assert float(w[0, 3]) == 0.0


def test_token_logprobs_temperature_and_pad():
    logits = torch.tensor([[[2.0, 1.0, 0.0, 5.0]]])  # pad id 3 has the highest logit
    lp = token_logprobs(logits, torch.tensor([[0]]), temperature=2.0, pad_token_id=3)
    expect = torch.log_softmax(torch.tensor([1.0, 0.5, 0.0]), -1)[0]
    assert torch.allclose(lp[0, 0], expect)
    assert float(token_logprobs(logits, torch.tensor([[3]]), pad_token_id=3)) == 0.0


def test_entropy_and_sft_loss():
    logits = torch.zeros(1, 1, 4)
    assert abs(float(entropy_from_logits(logits)) - math.log(4)) < 1e-6
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, 2, -100, -100]])
    naive, n = 0.0, 0
    for b in range(2):
        for t in range(1, 5):
            if labels[b, t] >= 0:
                naive -= float(torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]])
                n += 1
    assert abs(float(sft_loss(logits, labels)) - naive / n) < 1e-5


def test_entropy_leaves_pad_out_like_the_logprobs():
    """The entropy is that of the distribution sampled from and scored by `token_logprobs`: pad excluded."""
    torch.manual_seed(0)
    logits, pad = torch.randn(2, 3, 6), 4
    logits[..., pad] = 3.0  # a likely pad token: counting it would change the entropy a lot
    ent = entropy_from_logits(logits, pad_token_id=pad)  # (2, 3)
    for b in range(2):
        for t in range(3):
            naive = 0.0
            for v in range(6):
                if v == pad:
                    continue
                lp = float(token_logprobs(logits[b:b + 1, t:t + 1], torch.tensor([[v]]), pad_token_id=pad))
                naive -= math.exp(lp) * lp
            assert abs(float(ent[b, t]) - naive) < 1e-5
    # without a pad token it is the entropy of the full softmax
    p = logits.softmax(-1)
    assert torch.allclose(entropy_from_logits(logits), -(p * p.log()).sum(-1), atol=1e-5)
