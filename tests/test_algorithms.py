"""The alternatives for step 4 — DPO, RLOO, GRPO, best-of-n: their losses and advantages against naive
references, invariance to microbatching, the cached reference logprobs, and each algorithm end to end on the
micro config (run folder contents, evaluation points, checkpoints, resume)."""

import copy
import json
import math
import shutil
import statistics

import numpy as np
import pytest
import torch

from rlhf_lab.steps.losses import (
    DPO_LOSSES,
    dpo_loss,
    grpo_advantages,
    grpo_policy_loss,
    rloo_advantages,
)
from tests.conftest import MICRO
from tests.test_policy_details import tiny_ctx, tiny_models, tiny_prompts


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# -- DPO ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "eps"), [("sigmoid", 0.0), ("sigmoid", 0.2), ("robust", 0.2)])
def test_dpo_loss_matches_naive(variant, eps):
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(5, generator=g) * 3 for _ in range(4))
    beta = 0.3
    loss, stats = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps, variant=variant)
    terms = []
    for i in range(5):
        h = (float(pc[i]) - float(rc[i])) - (float(pr[i]) - float(rr[i]))
        clean, flipped = -math.log(_sig(beta * h)), -math.log(_sig(-beta * h))
        if variant == "sigmoid":  # DPO (ε = 0) and conservative DPO: the expected loss under label noise ε
            terms.append((1 - eps) * clean + eps * flipped)
        else:  # robust DPO: unbiased under flips, [(1−ε)·ℓ(w, l) − ε·ℓ(l, w)] / (1 − 2ε)
            terms.append(((1 - eps) * clean - eps * flipped) / (1 - 2 * eps))
    assert abs(float(loss) - sum(terms) / 5) < 1e-5
    margins = [beta * ((float(pc[i]) - float(rc[i])) - (float(pr[i]) - float(rr[i]))) for i in range(5)]
    assert abs(float(stats["rewards/margin"]) - sum(margins) / 5) < 1e-5
    assert abs(float(stats["rewards/accuracy"]) - sum(m > 0 for m in margins) / 5) < 1e-6


def test_dpo_variants_are_a_dict_and_agree_without_noise():
    assert set(DPO_LOSSES) == {"sigmoid", "robust"}
    h = torch.linspace(-3, 3, 7)
    assert torch.allclose(DPO_LOSSES["sigmoid"](h, beta=0.5), DPO_LOSSES["robust"](h, beta=0.5))
    # at π = π_ref every variant is log 2 when ε = 0
    assert abs(float(DPO_LOSSES["sigmoid"](torch.zeros(1), beta=0.1)) - math.log(2)) < 1e-6


def test_dpo_reference_logprobs_are_cached_and_recomputed_when_stale(tmp_path, monkeypatch):
    from rlhf_lab.steps.policy import dpo

    ctx = tiny_ctx(tmp_path)
    _, ref, _ = tiny_models(ctx)
    tok = ctx.tokenizer
    triples = [(p, [7, 8, tok.eos_token_id], [9, tok.eos_token_id]) for p in tiny_prompts(ctx, 5)]
    path = tmp_path / dpo.REF_CACHE
    calls = []
    real = dpo.sequence_logps
    monkeypatch.setattr(dpo, "sequence_logps", lambda *a, **k: calls.append(1) or real(*a, **k))
    c1, r1 = dpo.reference_logps(ctx, ref, triples, path)
    assert path.exists() and calls
    n_calls = len(calls)
    c2, r2 = dpo.reference_logps(ctx, ref, triples, path)
    assert len(calls) == n_calls  # read from the file
    assert torch.equal(c1, c2) and torch.equal(r1, r2)
    dpo.reference_logps(ctx, ref, triples[:4], path)  # other pairs: recomputed
    assert len(calls) > n_calls
    # one pair's logprobs do not depend on its batch (left padding, positions)
    with torch.no_grad():
        alone = real(ref, triples[2:3], pad_token_id=tok.pad_token_id, device="cpu")
    assert abs(float(alone[0][0]) - float(c1[2])) < 1e-4 and abs(float(alone[1][0]) - float(r1[2])) < 1e-4


# -- RLOO and GRPO ------------------------------------------------------------------------------------------------


def test_rloo_advantages_match_naive():
    r = torch.tensor([[1.0, 2.0, 4.0, 0.0], [3.0, 3.0, -1.0, 5.0]])
    adv = rloo_advantages(r)
    for n in range(2):
        for i in range(4):
            others = [float(r[n, j]) for j in range(4) if j != i]
            assert abs(float(adv[n, i]) - (float(r[n, i]) - sum(others) / 3)) < 1e-6
    assert torch.allclose(adv.sum(1), torch.zeros(2), atol=1e-6)  # leave-one-out advantages sum to 0
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.ones(3, 1))


def test_grpo_advantages_match_naive():
    r = torch.tensor([[1.0, 2.0, 4.0, 0.0], [3.0, 3.0, 3.0, 3.0]])
    adv = grpo_advantages(r)
    row = [1.0, 2.0, 4.0, 0.0]
    mean, std = statistics.mean(row), statistics.stdev(row)  # Bessel-corrected, as TRL and the paper's code
    for i in range(4):
        assert abs(float(adv[0, i]) - (row[i] - mean) / (std + 1e-4)) < 1e-6
    assert torch.equal(adv[1], torch.zeros(4))  # a group of equal rewards teaches nothing


def test_grpo_policy_loss_matches_naive():
    g = torch.Generator().manual_seed(3)
    lp, old, ref = (torch.randn(3, 4, generator=g) * 0.4 - 1 for _ in range(3))
    adv = torch.tensor([1.0, -0.5, 2.0])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float)
    eps, beta = 0.2, 0.04
    loss, stats = grpo_policy_loss(lp, old, ref, adv, mask, cliprange=eps, beta=beta)
    per_seq = []
    for b in range(3):
        terms = []
        for t in range(4):
            if not mask[b, t]:
                continue
            ratio = math.exp(float(lp[b, t] - old[b, t]))
            surrogate = min(ratio * float(adv[b]), min(max(ratio, 1 - eps), 1 + eps) * float(adv[b]))
            log_r = float(ref[b, t] - lp[b, t])  # k3 = π_ref/π − log(π_ref/π) − 1
            terms.append(-surrogate + beta * (math.exp(log_r) - log_r - 1))
        per_seq.append(sum(terms) / len(terms))  # 1/|o_i| Σ_t
    assert abs(float(loss) - sum(per_seq) / 3) < 1e-5
    assert float(stats["kl"]) >= 0


def test_approxkl_is_per_token_in_every_algorithm():
    """`…/policy/approxkl_avg` means one unit everywhere: ½·mean over response tokens of (log π − log π_old)²."""
    from rlhf_lab.steps.losses import ppo_policy_loss
    from rlhf_lab.steps.policy.rloo import rloo_loss

    g = torch.Generator().manual_seed(0)
    old = -torch.rand(3, 5, generator=g)
    new = old + 0.3 * torch.randn(3, 5, generator=g)
    mask = torch.tensor([[1.0] * 5, [1.0, 1.0, 0, 0, 0], [1.0] * 3 + [0.0] * 2])
    adv = torch.tensor([0.5, -1.0, 2.0])
    naive = sum(0.5 * float(new[b, t] - old[b, t]) ** 2 for b in range(3) for t in range(5) if mask[b, t]) / 10
    _, ppo = ppo_policy_loss(new, old, adv[:, None].expand_as(new), mask, cliprange=0.2)
    _, grpo = grpo_policy_loss(new, old, old, adv, mask, cliprange=0.2, beta=0.0)
    _, rloo = rloo_loss(new, old, old, adv, mask, cliprange=0.2, beta=0.0)
    for stats in (ppo, grpo, rloo):
        assert abs(float(stats["approxkl"]) - naive) < 1e-6
    assert "clipfrac" not in rloo and "seq_clipfrac" in rloo  # RLOO clips whole completions: named so


def test_rloo_loss_is_reinforce_at_ratio_one():
    """At π = π_old RLOO's clipped sequence loss has REINFORCE's gradient −A·∇ log π(y)."""
    from rlhf_lab.steps.policy.rloo import rloo_loss

    g = torch.Generator().manual_seed(0)
    theta = torch.randn(2, 3, generator=g, requires_grad=True)  # per-token logprobs, as parameters
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([0.7, -1.3])
    loss, _ = rloo_loss(theta, theta.detach(), theta.detach(), adv, mask, cliprange=0.2, beta=0.1)
    loss.backward()
    expect = -(adv[:, None] * mask) / 2  # mean over the 2 completions
    assert torch.allclose(theta.grad, expect, atol=1e-6)


@pytest.mark.parametrize("name", ["rloo", "grpo"])
def test_critic_free_microbatch_invariance(tmp_path, name):
    """batch 8 × accumulation 1 == batch 1 × accumulation 8, completions of different lengths."""
    from rlhf_lab.steps.common import Context
    from rlhf_lab.steps.policy.critic_free import old_logprobs, policy_update
    from rlhf_lab.steps.policy.grpo import GRPO
    from rlhf_lab.steps.policy.online import rollout
    from rlhf_lab.steps.policy.prefix import GroupedLM
    from rlhf_lab.steps.policy.rloo import RLOO

    algo = {"rloo": RLOO, "grpo": GRPO}[name]
    ctx = tiny_ctx(tmp_path, algorithm=name, max_new_tokens=6, batch_size=8, k=4)
    lm, ref, rm = tiny_models(ctx)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(0.02 * torch.randn_like(p))
    prompt_ids = [p for p in tiny_prompts(ctx, 2) for _ in range(4)]
    smp = rollout(ctx, lm, ref, rm, prompt_ids, generator=torch.Generator().manual_seed(0), k=4)
    smp.logprobs = old_logprobs(ctx, lm, smp, k=4)
    smp.mask[1, 2:] = 0  # make lengths differ (as if EOS came early)
    smp.mask[5, 1:] = 0
    adv = algo.advantages(smp.scores.view(-1, 4)).reshape(-1)

    def delta(micro: int) -> torch.Tensor:
        cfg = ctx.cfg.model_copy(update={"policy": ctx.cfg.policy.model_copy(update={
            "microbatch_size": micro, "epochs": 1, "minibatches": 1, "max_grad_norm": 1e6})})
        model = copy.deepcopy(lm)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        policy_update(Context(cfg, ctx.run, _tokenizer=ctx.tokenizer), algo, GroupedLM(model), opt, smp, adv,
                      beta=0.05, rng=np.random.default_rng(0))
        return torch.cat([p.detach().flatten() for p in model.parameters()]) - before

    whole, split = delta(8), delta(1)
    assert whole.abs().max() > 1e-5
    assert torch.allclose(whole, split, atol=1e-6, rtol=1e-4)


def test_rloo_in_one_forward_equals_a_separate_old_logprob_forward(tmp_path):
    """Optimised once in one microbatch, RLOO takes log π_old for its KL penalty from the training forward: the
    same update as with log π_old from a separate forward first."""
    from functools import partial

    from rlhf_lab.steps.policy.critic_free import group_advantages, old_logprobs, policy_update
    from rlhf_lab.steps.policy.online import rollout
    from rlhf_lab.steps.policy.prefix import GroupedLM
    from rlhf_lab.steps.policy.rloo import RLOO

    ctx = tiny_ctx(tmp_path, algorithm="rloo", max_new_tokens=5, batch_size=8, k=4, epochs=1, minibatches=1,
                   microbatch_size=8, max_grad_norm=1e6)
    lm, ref, rm = tiny_models(ctx)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(0.05 * torch.randn_like(p))  # π ≠ π_ref: the KL penalty matters
    prompt_ids = [p for p in tiny_prompts(ctx, 2) for _ in range(4)]
    smp = rollout(ctx, lm, ref, rm, prompt_ids, generator=torch.Generator().manual_seed(0), k=4)
    smp.logprobs = old_logprobs(ctx, lm, smp, k=4)
    deltas, advs = [], []
    for precomputed in (True, False):
        model = copy.deepcopy(lm)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        s = copy.copy(smp)
        adv_of = partial(group_advantages, RLOO, s, k=4, beta=0.5, estimator="k1")
        if not precomputed:
            s.logprobs = None
        _, _, adv = policy_update(ctx, RLOO, GroupedLM(model), opt, s, adv_of(smp.logprobs) if precomputed else adv_of,
                                  beta=0.5, rng=np.random.default_rng(0))
        deltas.append(torch.cat([p.detach().flatten() for p in model.parameters()]) - before)
        advs.append(adv)
    assert torch.allclose(advs[0], advs[1], atol=1e-5)
    assert torch.allclose(deltas[0], deltas[1], atol=1e-6, rtol=1e-4)


def test_resume_only_trusts_a_checkpoint_of_the_same_config(tmp_path):
    from rlhf_lab.steps.policy.loop import checkpoint, resume

    ctx = tiny_ctx(tmp_path)
    lm, _, _ = tiny_models(ctx)
    opt = torch.optim.AdamW(lm.parameters())
    checkpoint(ctx, update=7, model=lm, optimizer=opt, generator=torch.Generator())
    assert resume(ctx, model=lm, optimizer=opt, generator=torch.Generator()) == 7
    other = tiny_ctx(tmp_path, kl_coef=0.2)  # the step rerun with other settings
    assert resume(other, model=lm, optimizer=opt, generator=torch.Generator()) == 0
    grpo = tiny_ctx(tmp_path, algorithm="grpo")
    assert resume(grpo, model=lm, optimizer=opt, generator=torch.Generator()) == 0


def test_shared_prompt_forward_equals_separate_forwards(tmp_path):
    """Each prompt computed once for its k completions: the same logits and the same gradient as k forwards."""
    from rlhf_lab.models.generation import left_pad
    from rlhf_lab.steps.common import join_query_response
    from rlhf_lab.steps.policy.prefix import distinct_prompts, grouped_response_logits

    ctx = tiny_ctx(tmp_path)
    lm, _, _ = tiny_models(ctx)
    pad, k = ctx.tokenizer.pad_token_id, 3
    prompts = tiny_prompts(ctx, 3)
    query = left_pad([p for p in prompts for _ in range(k)], pad)  # (9, P)
    g = torch.Generator().manual_seed(0)
    responses = torch.randint(3, 50, (9, 6), generator=g)
    responses[2, 3:] = pad  # a short one
    ids, mask, pos, rmask = join_query_response(query, responses, pad)
    P = query.input_ids.shape[1]

    def naive():
        return lm(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, P - 1: -1]

    idx = torch.tensor([0, 1, 2, 6, 8])  # any subset of completions, groups incomplete
    rows, prompt_of, cols = distinct_prompts(idx, k, query.attention_mask)
    assert rows.tolist() == [0, 6] and prompt_of.tolist() == [0, 0, 0, 1, 1]

    def shared():
        return grouped_response_logits(lm, query.input_ids[rows, cols], query.attention_mask[rows, cols], prompt_of,
                                       responses[idx], rmask[idx])

    a, b = naive()[idx], shared()
    m = rmask[idx].bool()
    assert torch.allclose(a[m], b[m], atol=1e-4)
    grads = []
    for f in (lambda: naive()[idx], shared):
        lm.zero_grad()
        (f().log_softmax(-1)[..., 5] * rmask[idx]).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in lm.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)



def test_sampling_copies_equals_sampling_the_repeated_batch(tmp_path):
    """k samples per prompt from one prompt forward = the samples of a batch holding each prompt k times."""
    from rlhf_lab.models.generation import left_pad, sample_loop

    ctx = tiny_ctx(tmp_path)
    lm, _, _ = tiny_models(ctx)
    pad, k = ctx.tokenizer.pad_token_id, 4
    prompts = tiny_prompts(ctx, 3)
    kw = dict(max_new_tokens=8, temperature=1.0, eos_token_id=ctx.tokenizer.eos_token_id, pad_token_id=pad)
    repeated = sample_loop(lm, left_pad([p for p in prompts for _ in range(k)], pad),
                           generator=torch.Generator().manual_seed(3), **kw)
    shared = sample_loop(lm, left_pad(prompts, pad), generator=torch.Generator().manual_seed(3), copies=k, **kw)
    assert shared.shape == repeated.shape == (3 * k, shared.shape[1])
    assert torch.equal(shared, repeated)
    assert len({tuple(r) for r in shared[:k].tolist()}) > 1  # the copies are independent samples


@pytest.mark.parametrize("kind", ["single", "distributional", "set"])
def test_grouped_score_equals_score_of_joined_sequences(tmp_path, kind):
    """The reward model's score with each prompt computed once = its score of every whole sequence."""
    from rlhf_lab.models.generation import left_pad
    from rlhf_lab.models.heads import ScalarHeadModel
    from rlhf_lab.models.reward_set import RewardSet
    from rlhf_lab.steps.common import join_query_response
    from rlhf_lab.steps.policy.prefix import distinct_prompts

    ctx = tiny_ctx(tmp_path)
    lm, _, rm = tiny_models(ctx)
    if kind == "distributional":
        rm = ScalarHeadModel.from_lm(lm, distributional=True).eval()
        rm.risk_z.fill_(-0.7)
    elif kind == "set":
        torch.manual_seed(5)
        rm = RewardSet([rm, ScalarHeadModel.from_lm(lm).eval()], aggregate="min").eval()
    if kind != "set":
        rm.gain.fill_(1.7)
        rm.bias.fill_(-0.3)
    pad, k = ctx.tokenizer.pad_token_id, 3
    query = left_pad([p for p in tiny_prompts(ctx, 3) for _ in range(k)], pad)  # (9, P)
    responses = torch.randint(3, 50, (9, 6), generator=torch.Generator().manual_seed(0))
    responses[1, 2:] = pad  # short ones
    responses[5, 1:] = pad
    ids, mask, _, rmask = join_query_response(query, responses, pad)
    rows, prompt_of, cols = distinct_prompts(torch.arange(9), k, query.attention_mask)
    with torch.no_grad():
        whole = rm.score(ids, mask)
        grouped = rm.score_grouped(query.input_ids[rows, cols], query.attention_mask[rows, cols], prompt_of,
                                   responses, rmask)
    assert torch.allclose(whole, grouped, atol=1e-5)
    assert whole.std() > 0


# -- best-of-n -----------------------------------------------------------------------------------------------------


def test_best_of_n_kl_and_choice(tmp_path):
    from rlhf_lab.models.best_of_n import kl_bound, kl_plugin
    from rlhf_lab.steps.policy.best_of_n import evaluate_best_of_n

    assert kl_bound(1) == 0.0
    assert abs(kl_bound(4) - (math.log(4) - 0.75)) < 1e-12
    ctx = tiny_ctx(tmp_path, max_new_tokens=5)
    lm, _, rm = tiny_models(ctx)
    prompts = ctx.world.prompts("eval", 6, seed=0)
    out = evaluate_best_of_n(ctx, lm, rm, prompts, [1, 2, 4], generator=torch.Generator().manual_seed(0),
                             temperature=1.0, max_new_tokens=5)
    proxies = {n: [r["proxy"] for r in out[n][1]] for n in (1, 2, 4)}
    for i in range(6):  # nested choices: best of more samples is never worse under the proxy
        assert proxies[1][i] <= proxies[2][i] <= proxies[4][i]
    # the KL logged is estimated from each prompt's 4 samples (the bound only where all 4 differ), the bound beside it
    for r in out[4][1]:
        assert r["kl_bound"] == pytest.approx(kl_bound(4)) and 0 <= r["kl"] <= r["kl_bound"] + 1e-9
    assert out[4][0]["eval/kl"] == pytest.approx(np.mean([r["kl"] for r in out[4][1]]))
    # over many distinct samples the estimate reaches the bound; over few, or repeated ones, it stays below
    many = kl_plugin(list(range(256)), [(i,) for i in range(256)], 4)
    few = kl_plugin([0.1, 0.2, 0.3, 0.4], [(1,), (2,), (3,), (4,)], 4)
    repeated = kl_plugin([0.1, 0.1, 0.3, 0.4], [(1,), (1,), (3,), (4,)], 4)
    assert many == pytest.approx(kl_bound(4), rel=1e-3) and repeated < few < kl_bound(4)


# -- end to end on the micro config ---------------------------------------------------------------------------------


def _rerun_policy(micro_run, out, algorithm: str, *extra: str):
    """The finished micro run with step 4 redone by `algorithm` through the pipeline (policy, evaluate, report)."""
    from rlhf_lab import load_config, run
    from rlhf_lab.pipeline import open_run
    from rlhf_lab.runfolder import RunFolder, write_jsonl

    shutil.copytree(micro_run, out, ignore=shutil.ignore_patterns("policy*", "checkpoints", "eval",
                                                                  "samples_table.jsonl", "report.html"))
    folder = RunFolder(out)
    write_jsonl(folder.metrics_path, [r for r in folder.metrics() if r.get("phase") not in ("policy", "evaluate")])
    from rlhf_lab.config import POLICY_CONFIGS

    # the micro settings of step 4 that this algorithm has (best-of-n has no updates, say)
    micro = [s for s in MICRO if not s.startswith("policy.") or
             s.split("=")[0].split(".")[1] in POLICY_CONFIGS[algorithm].model_fields]
    open_run(out, load_config(overrides=[*micro, f"policy.algorithm={algorithm}", *extra]))
    folder.clear_from("policy")
    run(out=out, resume=True)
    return [r for r in folder.metrics() if r.get("phase") == "policy"]


@pytest.mark.parametrize(("algorithm", "namespace", "eval_steps"), [
    ("grpo", "grpo/", [0, 2, 3]), ("rloo", "rloo/", [0, 2, 3]), ("dpo", "dpo/", [0, 1]),
    ("best_of_n", "best_of_n/", [1, 2, 4]),
])
def test_algorithm_end_to_end(micro_run, tmp_path, algorithm, namespace, eval_steps):
    from safetensors.torch import load_file

    out = tmp_path / algorithm
    records = _rerun_policy(micro_run, out, algorithm)
    evals = [r for r in records if "eval/proxy_reward" in r]
    assert [r["step"] for r in evals] == eval_steps
    assert all("eval/gold_utility" in r and abs(r["eval/kl"]) < 1e6 for r in evals)
    assert any(k.startswith(namespace) for r in records for k in r)
    assert (out / "policy" / "config.json").exists() and (out / "policy" / "model.safetensors").exists()
    for s in eval_steps:
        if s > 0:
            assert (out / "checkpoints" / f"step_{s:05d}" / "model.safetensors").exists()
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert "policy/gold_utility" in summary["policy"] and "sft/proxy_reward" in summary["sft"]
    assert (out / "report.html").exists()
    sft = load_file(str(out / "sft" / "model.safetensors"))
    pol = load_file(str(out / "policy" / "model.safetensors"))
    changed = sum(not torch.equal(sft[k], pol[k]) for k in sft)
    if algorithm == "best_of_n":
        assert changed == 0 and json.loads((out / "policy" / "best_of_n.json").read_text()) == {"n": 4}
        # the evaluation step selects among n samples: its KL is estimated from them, at most the bound
        assert 0 <= summary["policy"]["policy/kl"] <= math.log(4) - 0.75 + 1e-9
        assert summary["policy"]["policy/proxy_reward"] > summary["sft"]["sft/proxy_reward"]
    else:
        assert changed > len(sft) // 2
    if algorithm in ("grpo", "rloo"):
        updates = [r for r in records if "objective/kl" in r]
        assert [r["step"] for r in updates] == [1, 2, 3]
        assert updates[0]["objective/kl"] == pytest.approx(0.0, abs=1e-4)  # π = π_ref before the first step


@pytest.mark.parametrize("algorithm", ["grpo", "dpo"])
def test_resume_from_checkpoint_gives_the_same_result(micro_run, tmp_path, algorithm):
    """Redoing the updates after the last checkpoint (as after a crash) ends where the uninterrupted run ended."""
    from rlhf_lab import run
    from rlhf_lab.runfolder import RunFolder

    extra = {"dpo": ("policy.checkpoint_every=1", "policy.batch_size=4"),
             "grpo": ()}[algorithm]
    whole = tmp_path / "whole"
    records = _rerun_policy(micro_run, whole, algorithm, *extra)
    final = [r for r in records if "eval/proxy_reward" in r][-1]
    assert (whole / "policy_ckpt" / "state.json").exists()
    resumed = tmp_path / "resumed"
    shutil.copytree(whole, resumed, ignore=shutil.ignore_patterns("policy", "eval", "report.html"))
    RunFolder(resumed).clear_from("policy")
    run(out=resumed, resume=True, report=False)
    again = [r for r in RunFolder(resumed).metrics() if r.get("phase") == "policy"]
    final2 = [r for r in again if "eval/proxy_reward" in r][-1]
    assert final2["step"] == final["step"]
    for key in ("eval/proxy_reward", "eval/gold_utility", "eval/kl"):
        assert abs(final[key] - final2[key]) < 1e-4, (key, final[key], final2[key])
    steps = [r["step"] for r in again if "objective/kl" in r or "dpo/loss" in r]
    assert steps == sorted(set(steps))  # every update logged once


# -- the online loop --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["loop", "hf"])
def test_rollouts_sample_through_the_configured_backend(tmp_path, backend):
    """model.generation_backend reaches every online algorithm: the rollout's completions are those of the
    chosen backend, sampled with the same seeds (k copies of each prompt, adjacent)."""
    from rlhf_lab.models.generation import BACKENDS, left_pad
    from rlhf_lab.steps.policy.online import rollout

    ctx = tiny_ctx(tmp_path, algorithm="grpo", max_new_tokens=5, batch_size=4, k=2)
    ctx.cfg.model.generation_backend = backend
    lm, ref, rm = tiny_models(ctx)
    tok = ctx.tokenizer
    distinct = tiny_prompts(ctx, 2)
    torch.manual_seed(1)  # hf draws from the global generator
    ro = rollout(ctx, lm, ref, rm, [p for p in distinct for _ in range(2)], generator=torch.Generator().manual_seed(0),
                 k=2)
    torch.manual_seed(1)
    kw = dict(max_new_tokens=5, temperature=1.0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
              generator=torch.Generator().manual_seed(0))
    if backend == "hf":
        direct = BACKENDS[backend](lm, left_pad([p for p in distinct for _ in range(2)], tok.pad_token_id), **kw)
    else:
        direct = BACKENDS[backend](lm, left_pad(distinct, tok.pad_token_id), copies=2, **kw)
    assert torch.equal(ro.responses, direct)
