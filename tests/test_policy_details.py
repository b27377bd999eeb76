"""PPO's implementation details, one test per config field (issue 3 §1), and each per-token quantity against
a plain loop written from the papers (Ziegler et al. 2019; Schulman et al. 2016, 2017; Huang et al. 2024)."""

import copy
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from rlhf_lab.config import ConfigError, build_config
from rlhf_lab.models.generation import Batch, left_pad, sample_loop
from rlhf_lab.models.heads import PolicyAndValue, ScalarHeadModel
from rlhf_lab.models.lm import build_world_lm
from rlhf_lab.models.tokenizer import train_world_tokenizer
from rlhf_lab.runfolder import RunFolder
from rlhf_lab.steps.common import Context, get_accelerator, join_query_response
from rlhf_lab.steps.losses import gae, masked_whiten, ppo_value_loss, token_logprobs
from rlhf_lab.steps.policy.kl import AdaptiveKLController, FixedKLController, make_kl_controller
from rlhf_lab.steps.policy.loop import (
    annealed_lr,
    eval_points,
    global_masked_moments,
    global_means,
    minibatch_slices,
    process_seeds,
    score_completions,
    shard,
)
from rlhf_lab.steps.policy.ppo import Rollout, compute_rewards, ppo_update, rollout
from rlhf_lab.world import World

TINY = {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64}


@lru_cache(maxsize=1)
def world_tokenizer():
    return train_world_tokenizer(World(build_config().world).corpus())


def tiny_ctx(tmp_path, **policy) -> Context:
    """A context over an empty run folder with the world tokenizer and a tiny model config; `max_new_tokens`
    and `temperature` go to the generation section, the rest to the policy section."""
    generation = {k: policy.pop(k) for k in ("max_new_tokens", "temperature") if k in policy}
    cfg = build_config({"model": TINY, "generation": generation, "policy": policy})
    return Context(cfg, RunFolder(tmp_path), _tokenizer=world_tokenizer())


def tiny_models(ctx: Context, seed: int = 0):
    """(policy LM, reference LM, reward model), the reference a copy of the policy."""
    torch.manual_seed(seed)
    lm = build_world_lm(ctx.cfg.model, ctx.tokenizer)
    rm = ScalarHeadModel.from_lm(lm).eval()
    return lm, copy.deepcopy(lm).eval(), rm


def tiny_prompts(ctx: Context, n: int = 8) -> list[list[int]]:
    return ctx.prompt_ids(ctx.world.prompts("train", n, seed=0))


def hand_rollout(ctx: Context, pv, ref, rm, prompt_ids, lengths: list[int], R: int, seed: int = 0) -> Rollout:
    """A rollout with responses of chosen lengths (EOS last; R = no EOS, truncated), so that rows differ in
    length; logprobs, values and scores computed as `rollout` computes them."""
    tok = ctx.tokenizer
    pad, eos = tok.pad_token_id, tok.eos_token_id
    g = torch.Generator().manual_seed(seed)
    responses = torch.full((len(prompt_ids), R), pad)
    for i, n in enumerate(lengths):
        words = torch.randint(3, len(tok), (n,), generator=g)
        if n < R:
            words[-1] = eos
        responses[i, :n] = words
    query = left_pad(prompt_ids, pad)
    ids, mask, pos, rmask = join_query_response(query, responses, pad)
    P = query.input_ids.shape[1]
    with torch.no_grad():
        logits, values = pv(ids, mask, pos)
        logprobs = token_logprobs(logits[:, P - 1: -1], responses, pad_token_id=pad)
        ref_logprobs = token_logprobs(ref(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, P - 1: -1],
                                      responses, pad_token_id=pad)
        scores, contain_eos = score_completions(rm, ids, mask, responses, eos_token_id=eos, missing_eos_penalty=1.0)
    return Rollout(query, responses, rmask, scores, contain_eos, ref_logprobs, logprobs, values[:, P - 1: -1] * rmask)


# -- per-token quantities against plain loops -------------------------------------------------------------------


def _toy_rollout(B=4, R=6, seed=0) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, R)
    for b, n in enumerate([6, 3, 1, 5][:B]):
        mask[b, :n] = 1
    lp = -torch.rand(B, R, generator=g) * 3 * mask
    ref = -torch.rand(B, R, generator=g) * 3 * mask
    values, scores = torch.randn(B, R, generator=g) * mask, torch.randn(B, generator=g)
    return Rollout(Batch(torch.zeros(B, 1), torch.ones(B, 1)), torch.zeros(B, R, dtype=torch.long), mask, scores,
                   torch.ones(B, dtype=bool), ref, lp, values)


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_non_score_reward_and_score_placement_match_loop(estimator):
    ro = _toy_rollout()
    beta = 0.1
    rewards, non_score = compute_rewards(ro, kl_coef=beta, estimator=estimator)
    for b in range(4):
        n = int(ro.mask[b].sum())
        for t in range(6):
            if t >= n:
                assert rewards[b, t] == 0 and non_score[b, t] == 0
                continue
            log_ratio = float(ro.logprobs[b, t] - ro.ref_logprobs[b, t])
            kl = log_ratio if estimator == "k1" else math.exp(-log_ratio) - 1 + log_ratio
            expect = -beta * kl + (float(ro.scores[b]) if t == n - 1 else 0.0)  # the score on the last real token
            assert abs(float(non_score[b, t]) + beta * kl) < 1e-6
            assert abs(float(rewards[b, t]) - expect) < 1e-6


def test_gae_returns_and_whitening_match_loop():
    """The whole chain of step 5–6: rewards → GAE (γ, λ) → returns → whitened advantages, as plain loops."""
    ro = _toy_rollout(seed=3)
    gamma, lam = 0.99, 0.9
    rewards, _ = compute_rewards(ro, kl_coef=0.05, estimator="k1")
    adv, ret = gae(rewards, ro.values, ro.mask, gamma=gamma, lam=lam)
    white = masked_whiten(adv, ro.mask)
    flat_adv = []
    for b in range(4):
        n = int(ro.mask[b].sum())
        last = 0.0
        adv_b = [0.0] * n
        for t in reversed(range(n)):
            next_v = float(ro.values[b, t + 1]) if t + 1 < n else 0.0  # the episode ends at EOS
            delta = float(rewards[b, t]) + gamma * next_v - float(ro.values[b, t])
            last = delta + gamma * lam * last
            adv_b[t] = last
        for t in range(n):
            assert abs(float(adv[b, t]) - adv_b[t]) < 1e-5
            assert abs(float(ret[b, t]) - (adv_b[t] + float(ro.values[b, t]))) < 1e-5
        flat_adv += adv_b
    mean = sum(flat_adv) / len(flat_adv)
    var = sum((a - mean) ** 2 for a in flat_adv) / (len(flat_adv) - 1)
    k = 0
    for b in range(4):
        for t in range(int(ro.mask[b].sum())):
            assert abs(float(white[b, t]) - (flat_adv[k] - mean) / math.sqrt(var + 1e-8)) < 1e-4
            k += 1
    assert float((white * (1 - ro.mask)).abs().sum()) == 0


def test_whiten_rewards_keeps_the_mean():
    """policy.whiten_rewards: per-token rewards are scaled to unit variance, their mean kept (shift_mean=False)."""
    ro = _toy_rollout(seed=4)
    rewards, _ = compute_rewards(ro, kl_coef=0.05, estimator="k1")
    w = masked_whiten(rewards, ro.mask, shift_mean=False)
    vals, wv = rewards[ro.mask.bool()], w[ro.mask.bool()]
    assert abs(float(wv.mean()) - float(vals.mean())) < 1e-5
    assert abs(float(wv.std()) - 1.0) < 1e-3


# -- one test per config field -----------------------------------------------------------------------------------


def test_kl_controller_fixed_and_adaptive_hand_numbers():
    """policy.kl_controller / target_kl / kl_horizon (Ziegler et al. 2019, §2.2)."""
    fixed = make_kl_controller(build_config(overrides=["policy.kl_coef=0.05"]).policy)
    assert isinstance(fixed, FixedKLController)
    fixed.update(100.0, 64)
    assert fixed.value == 0.05
    cfg = build_config(overrides=["policy.kl_coef=0.05", "policy.kl_controller=adaptive", "policy.target_kl=6",
                                 "policy.kl_horizon=10000"])
    ctl = make_kl_controller(cfg.policy)
    assert isinstance(ctl, AdaptiveKLController)
    ctl.update(9.0, 64)  # error = clip(9/6 − 1, ±0.2) = 0.2 → β = 0.05 · (1 + 0.2 · 64/10000)
    assert abs(ctl.value - 0.05 * 1.00128) < 1e-12
    ctl.update(6.6, 100)  # error 0.1 → β · (1 + 0.1 · 0.01)
    assert abs(ctl.value - 0.05 * 1.00128 * 1.001) < 1e-12
    ctl.update(0.0, 10000)  # error −1 clipped to −0.2 over a full horizon → β · 0.8
    assert abs(ctl.value - 0.05 * 1.00128 * 1.001 * 0.8) < 1e-12


def test_kl_estimator_k1_and_k3_in_the_rewards():
    """policy.kl_estimator: log π = log 0.5, log π_ref = log 0.25 → k1 = log 2, k3 = (0.5 − 1) − log 0.5."""
    ro = Rollout(Batch(torch.zeros(1, 1), torch.ones(1, 1)), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1),
                 torch.zeros(1), torch.ones(1, dtype=bool), torch.tensor([[math.log(0.25)]]),
                 torch.tensor([[math.log(0.5)]]), torch.zeros(1, 1))
    _, k1 = compute_rewards(ro, kl_coef=1.0, estimator="k1")
    _, k3 = compute_rewards(ro, kl_coef=1.0, estimator="k3")
    assert abs(float(k1) + math.log(2)) < 1e-6
    assert abs(float(k3) + (-0.5 - math.log(0.5))) < 1e-6


def test_score_normalisation_and_missing_eos_penalty(tmp_path):
    """reward.n_norm_samples' gain/bias are applied to every score; policy.missing_eos_penalty to completions
    without EOS only."""
    ctx = tiny_ctx(tmp_path)
    _, _, rm = tiny_models(ctx)
    rm.gain.fill_(2.0)
    rm.bias.fill_(-0.5)
    pad, eos = ctx.tokenizer.pad_token_id, ctx.tokenizer.eos_token_id
    prompts = tiny_prompts(ctx, 2)
    responses = torch.tensor([[7, 8, eos, pad], [7, 8, 9, 10]])
    ids, mask, _, _ = join_query_response(left_pad(prompts, pad), responses, pad)
    with torch.no_grad():
        scores, contain_eos = score_completions(rm, ids, mask, responses, eos_token_id=eos, missing_eos_penalty=1.5)
        raw = torch.stack([rm(ids[i: i + 1, mask[i].bool()], mask[i: i + 1, mask[i].bool()])[0, -1] for i in range(2)])
    assert contain_eos.tolist() == [True, False]
    assert torch.allclose(scores, 2.0 * raw - 0.5 - torch.tensor([0.0, 1.5]), atol=1e-5)


def test_pad_is_not_eos_and_eos_is_a_response_token(tmp_path):
    """The response mask covers EOS (it earns the score) and nothing after it; pad never counts."""
    ctx = tiny_ctx(tmp_path)
    pad, eos = ctx.tokenizer.pad_token_id, ctx.tokenizer.eos_token_id
    assert pad != eos
    responses = torch.tensor([[5, eos, pad, pad], [5, 6, 7, eos]])
    _, _, _, rmask = join_query_response(left_pad([[4, 4], [4]], pad), responses, pad)
    assert rmask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    ro = Rollout(Batch(torch.zeros(2, 1), torch.ones(2, 1)), responses, rmask.float(), torch.tensor([3.0, 5.0]),
                 torch.ones(2, dtype=bool), torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 4))
    rewards, _ = compute_rewards(ro, kl_coef=0.0, estimator="k1")
    assert rewards.tolist() == [[0, 3, 0, 0], [0, 0, 0, 5]]


def test_logprobs_use_the_sampling_temperature(tmp_path):
    """policy.temperature: the first sampled token follows softmax(logits / T), the distribution the rollout's
    logprobs are computed from (and not softmax(logits))."""
    ctx = tiny_ctx(tmp_path)
    lm, _, _ = tiny_models(ctx)
    with torch.no_grad():
        lm.model.embed_tokens.weight.mul_(10.0)  # tied: sharper logits, so temperature matters visibly
    lm.eval()
    pad, eos = ctx.tokenizer.pad_token_id, ctx.tokenizer.eos_token_id
    N, T = 40000, 0.7
    query = left_pad(tiny_prompts(ctx, 1) * N, pad)
    first = sample_loop(lm, query, max_new_tokens=1, temperature=T, eos_token_id=eos, pad_token_id=pad,
                        generator=torch.Generator().manual_seed(0))[:, 0]
    with torch.no_grad():
        logits = lm(input_ids=query.input_ids[:1]).logits[:, -1:]  # (1, 1, V)
    V = logits.shape[-1]
    every = torch.arange(V)[None, :]  # each token's logprob under the rollout's definition
    p_T = token_logprobs(logits.expand(1, V, V), every, temperature=T, pad_token_id=pad).exp()[0]
    p_1 = token_logprobs(logits.expand(1, V, V), every, temperature=1.0, pad_token_id=pad).exp()[0]
    freq = torch.bincount(first, minlength=V).float() / N
    not_pad = every[0] != pad  # pad is never sampled; its logprob is defined as 0
    tv_T = 0.5 * float((freq - p_T * not_pad).abs().sum())
    tv_1 = 0.5 * float((freq - p_1 * not_pad).abs().sum())
    assert abs(float((p_T * not_pad).sum()) - 1) < 1e-5
    noise = 0.5 * float((2 * p_T * (1 - p_T) / (math.pi * N)).sqrt().sum())  # E[TV] of N draws from p_T
    assert tv_T < 1.5 * noise < 5 * noise < tv_1, (tv_T, noise, tv_1)


def test_left_padding_positions_agree_between_generation_and_training(tmp_path):
    """Prompts of different lengths, left padded in one batch: the rollout's logprobs, values and generated
    tokens equal those of each prompt alone (positions skip the padding in generation and in training)."""
    ctx = tiny_ctx(tmp_path, max_new_tokens=6)
    lm, ref, rm = tiny_models(ctx)
    pv = PolicyAndValue(lm).eval()
    prompts = tiny_prompts(ctx, 4)
    assert len({len(p) for p in prompts}) > 1
    ro = rollout(ctx, pv, ref, rm, prompts, generator=torch.Generator().manual_seed(0))
    pad = ctx.tokenizer.pad_token_id
    for i, p in enumerate(prompts):
        n = int(ro.mask[i].sum())
        resp = ro.responses[i: i + 1, :n]
        ids = torch.cat([torch.tensor([p]), resp], 1)  # no padding at all
        with torch.no_grad():
            logits, values = pv(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None])
            alone = token_logprobs(logits[:, len(p) - 1: -1], resp, pad_token_id=pad)
            score = rm.score(ids, torch.ones_like(ids))
        assert torch.allclose(ro.logprobs[i, :n], alone[0], atol=1e-4)
        assert torch.allclose(ro.values[i, :n], values[0, len(p) - 1: -1], atol=1e-4)
        if ro.contain_eos[i]:
            assert abs(float(ro.scores[i] - score[0])) < 1e-4
    # greedy generation in the padded batch = generation of each prompt alone
    kw = dict(max_new_tokens=6, temperature=1.0, eos_token_id=ctx.tokenizer.eos_token_id, pad_token_id=pad, top_k=1)
    batch = sample_loop(lm, left_pad(prompts, pad), **kw)
    for i, p in enumerate(prompts):
        alone = sample_loop(lm, left_pad([p], pad), **kw)[0]
        assert batch[i, : len(alone)].tolist() == alone.tolist()


def _update_delta(ctx, pv, ro, **policy) -> torch.Tensor:
    """Δθ of one ppo_update with plain SGD (lr 1): minus the (clipped) gradient."""
    cfg = ctx.cfg.model_copy(update={"policy": ctx.cfg.policy.model_copy(update=policy)})
    c = Context(cfg, ctx.run, _tokenizer=ctx.tokenizer)
    pv = copy.deepcopy(pv)
    before = torch.cat([p.detach().flatten().clone() for p in pv.parameters()])
    opt = torch.optim.SGD(pv.parameters(), lr=1.0)
    adv = masked_whiten(ro.scores[:, None].expand_as(ro.mask).clone() * ro.mask, ro.mask)
    returns = ro.scores[:, None] * ro.mask
    ppo_update(c, pv, opt, ro, adv, returns, rng=np.random.default_rng(0))
    return torch.cat([p.detach().flatten() for p in pv.parameters()]) - before


@pytest.fixture
def ppo_setup(tmp_path):
    ctx = tiny_ctx(tmp_path)
    lm, ref, rm = tiny_models(ctx)
    pv = PolicyAndValue(lm)
    with torch.no_grad():  # a policy one step away from the behaviour policy, so ratios and clipping matter
        for p in pv.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ro = hand_rollout(ctx, PolicyAndValue(copy.deepcopy(lm)), ref, rm, tiny_prompts(ctx, 8),
                      lengths=[8, 3, 1, 5, 8, 2, 6, 4], R=8)
    return ctx, pv, ro


def test_microbatch_invariance(ppo_setup):
    """policy.microbatch_size: batch 8 × accumulation 1 gives the same gradient as batch 1 × accumulation 8,
    with responses of different lengths (the losses are means over the minibatch's tokens)."""
    ctx, pv, ro = ppo_setup
    kw = dict(epochs=1, minibatches=1, max_grad_norm=1e6)
    whole = _update_delta(ctx, pv, ro, microbatch_size=8, **kw)
    split = _update_delta(ctx, pv, ro, microbatch_size=1, **kw)
    three = _update_delta(ctx, pv, ro, microbatch_size=3, **kw)
    assert whole.abs().max() > 1e-4
    assert torch.allclose(whole, split, atol=1e-6, rtol=1e-4)
    assert torch.allclose(whole, three, atol=1e-6, rtol=1e-4)


def test_gradient_clipping(ppo_setup):
    """policy.max_grad_norm: the global gradient norm of an optimiser step never exceeds it."""
    ctx, pv, ro = ppo_setup
    kw = dict(epochs=1, minibatches=1)
    free = _update_delta(ctx, pv, ro, max_grad_norm=1e6, **kw)
    assert float(free.norm()) > 1e-2
    clipped = _update_delta(ctx, pv, ro, max_grad_norm=0.1, **kw)
    assert abs(float(clipped.norm()) - 0.1) < 1e-4
    assert torch.allclose(clipped / clipped.norm(), free / free.norm(), atol=1e-5)  # same direction


def test_minibatches_reshuffle_every_epoch():
    """policy.minibatches / epochs: each epoch covers the batch once, in a fresh order, split into
    minibatches → microbatches of at most microbatch_size."""
    cfg = build_config(overrides=["policy.minibatches=3", "policy.microbatch_size=2"]).policy
    rng = np.random.default_rng(0)
    epochs = [minibatch_slices(10, cfg, rng) for _ in range(2)]
    for ep in epochs:
        assert len(ep) == 3
        assert all(len(mc) <= 2 for mb in ep for mc in mb)
        assert sorted(np.concatenate([np.concatenate(mb) for mb in ep]).tolist()) == list(range(10))
    orders = [np.concatenate([np.concatenate(mb) for mb in ep]).tolist() for ep in epochs]
    assert orders[0] != orders[1]


def test_a_minibatch_is_split_by_length_and_stays_the_same_minibatch():
    """With the sequences' lengths, each minibatch holds the same sequences as without them (same shuffle), ordered
    by length before the split into microbatches; with groups, siblings stay together, ordered by the longest."""
    lengths = np.array([5, 40, 12, 3, 33, 8, 21, 17, 2, 30, 9, 26])
    for group, over in ((1, []), (3, ["policy.algorithm=rloo", "policy.k=3", "policy.batch_size=12"])):
        cfg = build_config(overrides=[*over, "policy.minibatches=2", "policy.microbatch_size=3"]).policy
        plain = minibatch_slices(12, cfg, np.random.default_rng(5), group=group)
        by_len = minibatch_slices(12, cfg, np.random.default_rng(5), group=group, lengths=lengths)
        for a, b in zip(plain, by_len, strict=True):
            assert sorted(np.concatenate(a).tolist()) == sorted(np.concatenate(b).tolist())
            order = np.concatenate(b)
            assert all(len(mc) <= 3 for mc in b)
            longest = lengths[order].reshape(-1, group).max(1)
            assert (np.diff(longest) >= 0).all()
            assert (order.reshape(-1, group) // group == (order.reshape(-1, group) // group)[:, :1]).all()
        assert [len(mc) for mb in plain for mc in mb] == [len(mc) for mb in by_len for mc in mb]


def test_lr_annealing_hand_numbers():
    """policy.anneal_lr: lr · (1 − (update − 1) / updates), or constant."""
    cfg = build_config(overrides=["policy.lr=1e-3", "policy.anneal_lr=true"]).policy
    assert [annealed_lr(cfg, u, 4) for u in (1, 2, 4)] == pytest.approx([1e-3, 7.5e-4, 2.5e-4])
    flat = build_config(overrides=["policy.lr=1e-3", "policy.anneal_lr=false"]).policy
    assert annealed_lr(flat, 4, 4) == 1e-3


def test_value_clipping_hand_numbers():
    """policy.cliprange_value: V_old = 0, V = 1, return 1, ε_v = 0.2: the clipped value 0.2 is the worse one,
    so the loss is ½ (0.2 − 1)² = 0.32 and the gradient through V is zero."""
    v = torch.tensor([[1.0]], requires_grad=True)
    loss, stats = ppo_value_loss(v, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), cliprange_value=0.2)
    loss.backward()
    assert abs(loss.item() - 0.32) < 1e-6 and float(stats["clipfrac"]) == 1.0
    assert float(v.grad) == 0.0
    # inside the clip range the plain squared error counts
    v2 = torch.tensor([[0.1]], requires_grad=True)
    loss2, _ = ppo_value_loss(v2, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), cliprange_value=0.2)
    loss2.backward()
    assert abs(loss2.item() - 0.5 * 0.81) < 1e-6 and abs(float(v2.grad) + 0.9) < 1e-6


def test_per_process_seeds_and_prompt_shards():
    """Each process samples and shuffles with its own stream, evaluates with the shared one, and gets a
    disjoint share of every rollout's prompts."""
    s0, s1 = process_seeds(7, 0), process_seeds(7, 1)
    assert s0["sample"] != s1["sample"] and s0["shuffle"] != s1["shuffle"]
    assert s0["eval"] == s1["eval"]
    assert process_seeds(7, 1) == s1  # stable
    items = list(range(10))
    shares = [shard(items, r, 3) for r in range(3)]
    assert shares == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


# -- statistics over processes ------------------------------------------------------------------------------------


def test_global_moments_keep_their_precision_far_from_zero():
    """Whitening moments of values with |mean| ≫ std (a reward offset of 1000, spread 0.01) in fp32: the
    one-pass E[x²] − E[x]² loses the variance entirely; the two-pass form matches float64."""
    acc = get_accelerator(build_config())
    g = torch.Generator().manual_seed(0)
    x = (1000.0 + 0.01 * torch.randn(4, 64, generator=g, dtype=torch.float64))
    mask = torch.ones(4, 64)
    mask[1, 40:] = 0
    mean, var = global_masked_moments(acc, x.float(), mask)
    real = x[mask.bool()]
    assert abs(float(mean) - float(real.mean())) < 1e-3
    assert abs(float(var) / float(real.var()) - 1) < 1e-2


def _stats_worker(rank: int, port: int, out: str) -> None:
    """One of two gloo processes: its own share of a batch → statistics over both shares and the adaptive β."""
    import json
    import os

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"})
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    kl = torch.tensor([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]][rank])  # (B,) per sequence: rank 1 drifts far more
    adv = torch.tensor([[1000.0, 1000.5, 999.0], [1001.0, 998.0, 1000.25]][rank])
    stats = global_means(acc, {"kl": kl, "loss": torch.tensor([0.5 + rank])})
    ctl = AdaptiveKLController(value=0.1, target=6.0, horizon=100)
    ctl.update(stats["kl"], 6)
    mean, var = global_masked_moments(acc, adv, torch.ones_like(adv))
    with open(f"{out}.{rank}", "w") as fh:
        json.dump({"stats": stats, "beta": ctl.value, "mean": float(mean), "var": float(var)}, fh)


def test_statistics_and_adaptive_beta_agree_over_two_processes(tmp_path):
    """lm-human-preferences all-reduces before the KL controller and the log: with two processes each holding
    half a batch, every process must see the statistics of the whole batch and steer β to the same value."""
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "stats")
    mp.spawn(_stats_worker, args=(port, out), nprocs=2, join=True)
    r0, r1 = (json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1))
    assert r0 == r1
    assert abs(r0["stats"]["kl"] - 11.0) < 1e-6 and abs(r0["stats"]["loss"] - 1.0) < 1e-6
    whole = AdaptiveKLController(value=0.1, target=6.0, horizon=100)
    whole.update(11.0, 6)
    assert abs(r0["beta"] - whole.value) < 1e-9
    adv = torch.tensor([1000.0, 1000.5, 999.0, 1001.0, 998.0, 1000.25], dtype=torch.float64)
    assert abs(r0["mean"] - float(adv.mean())) < 1e-3 and abs(r0["var"] / float(adv.var()) - 1) < 1e-3


def test_evaluation_schedule_is_dense_from_the_start():
    """eval.schedule=log (the default): updates 1, 2, 4, 8, … and the last, so the start of the reward–KL curve
    is seen; every: each N-th and the last."""
    assert sorted(eval_points(build_config().eval, 80)) == [1, 2, 4, 8, 16, 32, 64, 80]
    assert sorted(eval_points(build_config().eval, build_config().policy.updates)) == [1, 2, 4, 8, 16, 32, 40]
    assert sorted(eval_points(build_config().eval, 1)) == [1]
    assert sorted(eval_points(build_config(overrides=["eval.growth=4"]).eval, 100)) == [1, 4, 16, 64, 100]
    assert sorted(eval_points(build_config(overrides=["eval.growth=1.5"]).eval, 10)) == [1, 2, 3, 5, 8, 10]
    every = build_config(overrides=["eval.schedule=every", "eval.every=10"]).eval
    assert sorted(eval_points(every, 25)) == [10, 20, 25]
    with pytest.raises(ConfigError, match=r"eval\.growth"):
        build_config(overrides=["eval.growth=1"])


# --- policy.optimise: gold --------------------------------------------------------------------------------------


def _styled(ctx: Context, n: int = 6) -> tuple[list, list[str]]:
    """Question prompts and one correct and one confidently wrong answer to each, in the world's words."""
    import random

    from rlhf_lab.world.styles import respond

    prompts = ctx.world.prompts("train", n, seed=3, families=("question",))
    rng = random.Random(0)
    texts = [respond(p, style, ctx.world.knowledge, rng) for p in prompts for style in ("correct_plain",
                                                                                           "confident_wrong")]
    return [p for p in prompts for _ in range(2)], texts


def test_gold_reward_is_the_worlds_gold_of_the_decoded_answer_scaled(tmp_path):
    """GoldReward scores a response's tokens — cut at EOS, pad skipped — by World.gold for its prompt's user, then
    gain·gold + bias; a right answer outscores a confidently wrong one."""
    from rlhf_lab.models.tokenizer import encode_response
    from rlhf_lab.steps.policy.gold import GoldReward

    ctx = tiny_ctx(tmp_path)
    tok = ctx.tokenizer
    prompts, texts = _styled(ctx)
    ids = [encode_response(tok, t) for t in texts]  # each ends with EOS
    R = max(map(len, ids)) + 3
    junk = tok.convert_tokens_to_ids(tok.tokenize("no"))[0]
    responses = torch.tensor([r + [junk] + [tok.pad_token_id] * (R - len(r) - 1) for r in ids])  # after EOS: ignored
    gold = np.array([ctx.world.gold(p, t) for p, t in zip(prompts, texts, strict=True)])
    scores = GoldReward(ctx.world, tok, gain=2.0, bias=-0.5).score(prompts, responses)
    assert scores.dtype == torch.float32 and scores.shape == (len(texts),)
    assert np.allclose(scores.numpy(), 2.0 * gold - 0.5, atol=1e-5)
    assert (gold[0::2] > gold[1::2]).all(), gold  # right above wrong: the test reads a real difference


@pytest.mark.parametrize("k", [1, 2])
def test_a_gold_rollout_scores_with_the_world_and_never_runs_the_reward_model(tmp_path, k):
    """policy.optimise: gold — each completion scored by its own prompt's gold (k copies of a prompt adjacent), the
    missing-EOS penalty as for a reward model, and the reward model not called at all."""
    from rlhf_lab.models.tokenizer import decode_response
    from rlhf_lab.steps.policy.gold import GoldReward
    from rlhf_lab.steps.policy.online import rollout as online_rollout

    ctx = tiny_ctx(tmp_path, max_new_tokens=5, missing_eos_penalty=1.5)
    lm, ref, rm = tiny_models(ctx)
    rm.forward = rm.score = rm.score_grouped = lambda *a, **kw: pytest.fail("the reward model was run")
    prompts = [p for p in ctx.world.prompts("train", 6, seed=0) for _ in range(k)]
    gold = GoldReward(ctx.world, ctx.tokenizer, gain=3.0, bias=1.0)
    ro = online_rollout(ctx, lm, ref, rm, ctx.prompt_ids(prompts), generator=torch.Generator().manual_seed(0),
                        k=k, gold=gold, prompts=prompts)
    eos, pad = ctx.tokenizer.eos_token_id, ctx.tokenizer.pad_token_id
    for row, p in zip(ro.query.input_ids.tolist(), prompts, strict=True):  # each answer is scored for its prompt
        assert [t for t in row if t != pad] == ctx.prompt_ids([p])[0]
    expect = [3.0 * ctx.world.gold(p, decode_response(ctx.tokenizer, r)) + 1.0 - (0 if eos in r else 1.5)
              for p, r in zip(prompts, ro.responses.tolist(), strict=True)]
    assert not ro.contain_eos.all()  # 5 tokens: some never stop, so the penalty is exercised
    assert torch.allclose(ro.scores, torch.tensor(expect), atol=1e-5)


@pytest.mark.parametrize("algorithm", ["ppo", "rloo"])
def test_policy_optimise_gold_end_to_end(tmp_path, algorithm):
    """A micro run with policy.optimise=gold: the scores it trained on (the sample table) are the gold of the
    logged answers to that update's prompts (k copies each for RLOO), scaled to mean 0 and std 1 on the norm
    samples the reward model is scaled on; evaluation still reads the proxy; the detectors that read the training
    scores are left out; the choices panel says what was optimised."""
    import json

    import yaml

    from rlhf_lab import load_config, run
    from rlhf_lab.audit.choices import choices
    from rlhf_lab.steps.policy.gold import GoldReward
    from rlhf_lab.steps.policy.loop import rl_prompts
    from rlhf_lab.steps.policy.warning import Watch
    from rlhf_lab.steps.reward import norm_prompts, norm_samples
    from rlhf_lab.ui import set_quiet
    from tests.conftest import MICRO

    set_quiet(True)
    extra = ["policy.algorithm=rloo", "policy.k=2"] if algorithm == "rloo" else []
    cfg = load_config(overrides=[*MICRO, *extra, "policy.updates=2", "policy.optimise=gold"])
    out = run(cfg, out=tmp_path / "gold", report=False).root
    ctx = Context(cfg, RunFolder(out))
    gold = GoldReward.fit(ctx)
    # the scale: the reward model's own norm samples (their prompt ids given or not: the same draws)
    p_ids, resp = norm_samples(ctx)
    assert (p_ids, resp) == norm_samples(ctx, prompt_ids=ctx.prompt_ids(norm_prompts(ctx)))
    scaled = gold.gain * gold.raw(norm_prompts(ctx), resp) + gold.bias
    assert abs(scaled.mean()) < 1e-6 and abs(scaled.std() - 1) < 1e-4
    k = cfg.policy.k if algorithm == "rloo" else 1
    table = [json.loads(x) for x in (out / "samples_table.jsonl").read_text().splitlines()]
    rows = [r for r in table if r["step"] == 2]
    prompts = [p for p in rl_prompts(ctx, 2, cfg.policy.batch_size // k) for _ in range(k)][: len(rows)]
    assert len(rows) == 8
    for p, r in zip(prompts, rows, strict=True):
        assert r["prompt"] == ctx.prompt_text(p)
        g = gold.gain * ctx.world.gold(p, r["response"]) + gold.bias
        assert min(abs(r["score"] - g), abs(r["score"] - g + cfg.policy.missing_eos_penalty)) < 1e-4, (r, g)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/proxy_reward" in m for m in metrics) and any("eval/gold_utility" in m for m in metrics)
    assert "proxy_gap" not in Watch(ctx).names and "kl_budget" in Watch(ctx).names
    assert any(k == "What the policy optimised" and "gold" in v
               for k, v in choices(yaml.safe_load((out / "config.yaml").read_text())))
