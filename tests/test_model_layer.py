"""The model layer every user of a run folder shares (models/run_models.py): the audit measures the policy that
was trained — best-of-n as best-of-n, a reward set by the aggregate the policy optimised — and best-of-n's KL
is labelled a bound and estimated from samples."""

import itertools
import json
import math
import shutil

import numpy as np
import pytest
import torch

from rlhf_lab.audit.sampling import AuditContext, AuditSizes
from rlhf_lab.models.generation import generate

N_BEST = 4


@pytest.fixture
def bon_run(micro_run, tmp_path):
    """The micro run with its policy replaced by best-of-4 over its SFT policy, written the way the best-of-n
    step writes it (SFT weights + best_of_n.json), and no evaluation samples (the audit samples the policy)."""
    dst = tmp_path / "bon"
    shutil.copytree(micro_run, dst)
    shutil.rmtree(dst / "policy")
    shutil.copytree(dst / "sft", dst / "policy")
    (dst / "policy" / "best_of_n.json").write_text(json.dumps({"n": N_BEST}))
    shutil.rmtree(dst / "eval")
    return dst


def test_the_audit_samples_a_best_of_n_policy_as_best_of_n(bon_run):
    """Defect 1: the audit sampled the SFT weights twice, so every change was 0. Each answer of the policy must be
    the best, by the run's reward model, of n SFT samples drawn with the audit's generator."""
    ctx = AuditContext(bon_run, sizes=AuditSizes.small())
    tok = ctx.tok
    p_ids = ctx.prompt_ids([ctx.prompt_text(p) for p in ctx.probes["question"][:10]])
    chosen = ctx.generate("policy", p_ids, salt=5)
    repeated = [p for p in p_ids for _ in range(N_BEST)]
    draws = generate(ctx.models["sft"], repeated, max_new_tokens=ctx.cfg.generation.max_new_tokens,
                     temperature=ctx.cfg.generation.temperature, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id, batch_size=ctx.sizes.batch_size, generator=ctx.generator(5))
    scores = ctx.score(repeated, draws).reshape(len(p_ids), N_BEST)
    expected = [draws[i * N_BEST + int(j)] for i, j in enumerate(scores.argmax(1))]
    assert chosen == expected
    # and its answers score higher than the SFT policy's on the same prompts
    sft = ctx.generate("sft", p_ids, salt=5)
    assert ctx.score(p_ids, chosen).mean() > ctx.score(p_ids, sft).mean()


def test_a_best_of_n_audit_reports_a_change_and_its_kl_as_bound_and_estimate(bon_run):
    from rlhf_lab.audit import run_audit

    audit = run_audit(bon_run, sizes=AuditSizes.small(), log=False)
    section = audit["tensions"]["overoptimisation"]
    assert section["metrics"]["proxy"]["change"]["value"] > 0  # was exactly 0: SFT against itself
    bon = section["best_of_n"]
    assert bon["n"] == N_BEST and bon["kl_bound"] == pytest.approx(math.log(N_BEST) - (N_BEST - 1) / N_BEST)
    assert 0 <= bon["kl_estimate"]["value"] <= bon["kl_bound"] + 1e-9
    assert section["metrics"]["kl"]["policy"]["value"] == pytest.approx(bon["kl_estimate"]["value"])
    for row in section["bon"]["curve"]:
        assert row["kl"] <= row["kl_bound"] + 1e-9 and row["d"] == pytest.approx(math.sqrt(row["kl"]))


def test_the_best_of_n_step_and_the_audit_agree_on_the_policy(micro_run, tmp_path):
    """What the best-of-n step writes, every reader loads as best-of-n over the run's SFT policy and reward model."""
    from rlhf_lab.config import build_config, read_yaml
    from rlhf_lab.models.best_of_n import BestOfN
    from rlhf_lab.pipeline import step

    run = tmp_path / "bon_step"
    shutil.copytree(micro_run, run)
    data = read_yaml(run / "config.yaml")
    data["policy"] = {"algorithm": "best_of_n", "n": N_BEST}
    step("policy", run, cfg=build_config(data))
    step("evaluate", run)
    ctx = AuditContext(run, sizes=AuditSizes.small())
    policy = ctx.models["policy"]
    assert isinstance(policy, BestOfN) and policy.n == N_BEST and policy.sampler is ctx.models["sft"]
    sft, pol = ctx.probe_samples("sft"), ctx.probe_samples("policy")
    proxy = {name: np.mean([s.proxy for ss in samples.values() for s in ss]) for name, samples in
             (("sft", sft), ("policy", pol))}
    assert proxy["policy"] > proxy["sft"]
    # its evaluation points (n = 1, 2, 4) sit on the estimated KL axis, the bound kept beside it
    from rlhf_lab.audit import overoptimisation

    curve = overoptimisation.measure(ctx)["rl"]["curve"]
    assert [c["step"] for c in curve] == [1, 2, 4]
    for c in curve:
        assert c["kl_bound"] == pytest.approx(math.log(c["step"]) - (c["step"] - 1) / c["step"])
        assert 0 <= c["kl"] <= c["kl_bound"] + 1e-9 and c["d"] == pytest.approx(math.sqrt(c["kl"]))


def test_a_lora_policy_loads_as_the_network_that_was_trained(micro_run, tmp_path):
    """RunModels: a LoRA policy trains on the SFT weights with π_ref = adapters off, saves as adapters, and loads
    back (merged on its base) as the same function."""
    from rlhf_lab.config import build_config, read_yaml
    from rlhf_lab.models.lm import save_lm
    from rlhf_lab.models.run_models import RunModels, policy_kind

    data = read_yaml(micro_run / "config.yaml")
    data.setdefault("model", {})["lora"] = True
    models = RunModels(build_config(data), micro_run)
    tok = models.saved_tokenizer()
    policy, ref = models.trainable_policy(tok, torch.device("cpu"))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)  # fresh adapters are a no-op (B = 0): make them change the function
    save_lm(policy, tok, tmp_path / "policy")
    assert policy_kind(tmp_path / "policy") == "lora_adapters"
    loaded = models.policy(tmp_path / "policy", sampler=None, reward=None)
    ids = torch.tensor([tok("the capital of", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        trained, merged = policy(input_ids=ids).logits, loaded(input_ids=ids).logits
        reference, sft = ref(input_ids=ids).logits, models.sft_lm(tok)(input_ids=ids).logits
    assert torch.allclose(trained, merged, atol=1e-4) and not torch.allclose(trained, sft, atol=1e-3)
    assert torch.allclose(reference, sft, atol=1e-5)


# -- best-of-n's KL -----------------------------------------------------------------------------------------


def _naive_bon_kl(rewards, keys, n):
    """Enumerate every n-tuple of draws (with replacement) from the M samples; best-of-n answers with a draw of
    the highest reward. Answers of equal reward are one block (ties are split in proportion to the answers' own
    probabilities, so KL over answers is KL over blocks)."""
    M = len(keys)
    q: dict = {}
    for r in rewards:
        q[r] = q.get(r, 0.0) + 1 / M
    p: dict = {}
    for tup in itertools.product(range(M), repeat=n):
        top = max(rewards[i] for i in tup)
        p[top] = p.get(top, 0.0) + 1 / M**n
    return sum(pb * math.log(pb / q[r]) for r, pb in p.items())


@pytest.mark.parametrize(("rewards", "keys"), [
    ([0.1, 0.5, 0.5, 0.9, 0.2], ["a", "b", "b", "c", "d"]),  # a repeated answer
    ([0.3, 0.3, 0.7, 0.1], ["a", "b", "c", "d"]),  # two different answers with the same reward
    ([0.4, 0.1, 0.8], ["x", "y", "z"]),  # all distinct
])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_kl_plugin_against_enumerating_every_draw(rewards, keys, n):
    from rlhf_lab.models.best_of_n import kl_plugin

    assert kl_plugin(rewards, keys, n) == pytest.approx(_naive_bon_kl(rewards, keys, n), abs=1e-12)


def test_the_bound_is_loose_when_samples_repeat_and_tight_when_they_are_distinct():
    from rlhf_lab.models.best_of_n import kl_bound, kl_plugin

    # three of four samples are the same answer: q = (3/4, 1/4); best-of-4 picks the other with 1 − (3/4)^4
    rewards, keys, n = [1.0, 1.0, 1.0, 2.0], ["a", "a", "a", "b"], 4
    p_b = 1 - 0.75**4
    exact = (1 - p_b) * math.log((1 - p_b) / 0.75) + p_b * math.log(p_b / 0.25)
    assert kl_plugin(rewards, keys, n) == pytest.approx(exact)
    assert kl_bound(n) - kl_plugin(rewards, keys, n) > 0.2  # 0.636 against 0.415
    # 4000 distinct answers: the empirical distribution is near-continuous, the bound is reached from below
    rng = np.random.default_rng(0)
    r = rng.normal(size=4000)
    for n in (2, 8, 32):
        est = kl_plugin(r, list(range(4000)), n)
        assert est <= kl_bound(n) and est == pytest.approx(kl_bound(n), rel=0.01)
    # one sequence scored twice with a last-bit difference is still one answer
    assert kl_plugin([0.5, 0.5 + 1e-9, 0.1], ["s", "s", "t"], 2) == pytest.approx(
        kl_plugin([0.5, 0.5, 0.1], ["s", "s", "t"], 2), abs=1e-8)


# -- a reward set -------------------------------------------------------------------------------------------


@pytest.fixture
def ensemble_run(micro_run, tmp_path):
    """The micro run with a two-member reward set saved in reward/: its own reward model ("a") and the same model
    with its normalised score negated ("b"), aggregated by the minimum."""
    from rlhf_lab.models.heads import ScalarHeadModel
    from rlhf_lab.models.reward_set import RewardSet

    dst = tmp_path / "ens"
    shutil.copytree(micro_run, dst)
    a, b = ScalarHeadModel.load(dst / "reward"), ScalarHeadModel.load(dst / "reward")
    b.gain.mul_(-1)
    b.bias.mul_(-1)
    RewardSet([a, b], aggregate="min", names=["a", "B-2"]).save(dst / "reward")
    return dst


def test_the_audit_scores_with_the_aggregate_the_policy_optimised(ensemble_run):
    """Defect 2: the audit loaded member 0 only."""
    from rlhf_lab.models.heads import ScalarHeadModel

    ctx = AuditContext(ensemble_run, sizes=AuditSizes.small())
    prompts = ctx.probes["question"][:12]
    p_ids = ctx.prompt_ids([ctx.prompt_text(p) for p in prompts])
    r_ids = ctx.generate("sft", p_ids, salt=3)
    member0 = ScalarHeadModel.load(ensemble_run / "reward")
    seqs = [p + r for p, r in zip(p_ids, r_ids, strict=True)]
    with torch.no_grad():
        s0 = np.array([float(member0.score(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))) for s in seqs])
    assert np.allclose(ctx.score(p_ids, r_ids), -np.abs(s0), atol=1e-4)  # min(s, −s)
    _, members = ctx.scores(p_ids, r_ids)
    assert np.allclose(members, np.stack([s0, -s0]), atol=1e-4)


def test_the_audit_shows_what_each_member_pays_for(ensemble_run):
    from rlhf_lab.audit import flattening, sycophancy

    ctx = AuditContext(ensemble_run, sizes=AuditSizes.small())
    assert ctx.rm_members == {"a": "a", "B-2": "b_2"}
    m = sycophancy.measure(ctx)["metrics"]
    a, b = m["rm_prefers_sycophantic_member/a"]["rm"], m["rm_prefers_sycophantic_member/b_2"]["rm"]
    assert a["n"] == b["n"] == m["rm_prefers_sycophantic"]["rm"]["n"] > 0
    assert a["value"] + b["value"] == pytest.approx(1.0)  # b's margins are a's, negated (no exact ties here)
    f = flattening.measure(ctx)["metrics"]
    assert f["rm_prefers_detail_member/a"]["rm"]["value"] + f["rm_prefers_detail_member/b_2"]["rm"]["value"] == \
        pytest.approx(1.0)


def test_every_reward_model_follows_the_protocol(micro_run):
    from rlhf_lab.models.reward_set import RewardModel, RewardSet, load_reward

    single = load_reward(micro_run / "reward")
    assert isinstance(single, RewardModel) and single.names == ["rm"]
    assert isinstance(RewardSet([single], aggregate="mean"), RewardModel)
