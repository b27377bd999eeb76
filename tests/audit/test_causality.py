"""Causality, not decoration: move one knob of the world, and the matching audit measurement moves the right
way. Nothing in the audit knows about the knobs; the effects come out of the world's mechanisms.

The reward-model tests label the same pairs under different label settings (foresight / hindsight /
p_know = 1 / one annotator group) and train a small reward model on each. The pairs are two responses
drawn from the world's demonstration distribution — what the SFT policy imitates — so the test does not
wait for an SFT model good enough to sample from; the reward models start from the micro run's SFT model.
"""

import itertools
import json
import random
import shutil

import numpy as np
import pytest
import yaml

from rlhf_lab import load_config, pipeline
from rlhf_lab.audit import flattening, overoptimisation, sycophancy
from rlhf_lab.audit.core import one_thread
from rlhf_lab.audit.sampling import AuditContext, AuditSizes
from rlhf_lab.config import WorldConfig
from rlhf_lab.runfolder import write_json, write_jsonl
from rlhf_lab.world import World
from rlhf_lab.world.styles import respond
from tests.conftest import MICRO

RM_DATA = [*MICRO, "reward.epochs=2"]
PROBES = AuditSizes(belief=60, pushback=60, feedback=60)
# Annotators who verify a sum 62 % of the time and an obscure place 20 % (the default until 2026-11-30, now 0.7):
# the cause is set here, not read from the default, so these tests keep testing it when the default moves.
FORESIGHT = ["label.p_know=0.5"]


@pytest.fixture(scope="module")
def pairs_folder(micro_run, tmp_path_factory):
    """A run folder up to the pairs: the micro run's SFT model and tokenizer, and 500 prompts × 3 responses
    from the world's demonstrations, every distinct pair of them."""
    from rlhf_lab.ui import set_quiet

    set_quiet(True)
    base = tmp_path_factory.mktemp("causal") / "base"
    base.mkdir()
    for d in ("sft", "tokenizer"):
        shutil.copytree(micro_run / d, base / d)
    (base / "config.yaml").write_text(load_config(overrides=RM_DATA).to_yaml())
    write_json(base / "state.json", {"done": {"sft": {}, "sample": {}}})
    ctx = AuditContext(base)
    rng = random.Random(0)
    rows = []
    for p in ctx.world.prompts("train", 500, seed=0):
        texts = [ctx.world.demonstration(p, rng).response for _ in range(3)]
        for a, b in itertools.combinations(range(3), 2):
            if texts[a] != texts[b]:
                rows.append({"pair_id": f"{p.id}/{a}-{b}", "prompt_id": p.id, "family": p.family,
                             "prompt": ctx.prompt_text(p), "response_a": texts[a], "response_b": texts[b],
                             "stopped_a": True, "stopped_b": True, "meta": p.to_dict()})
    write_jsonl(base / "pairs.jsonl", rows)
    return base


def reward_model_for(base, name: str, overrides: list[str]):
    """Label the shared pairs under `overrides` and train a reward model on them. → the variant's folder."""
    folder = base.parent / name
    if not (folder / "reward" / "head.safetensors").exists():
        shutil.copytree(base, folder, dirs_exist_ok=True)
        cfg = load_config(overrides=RM_DATA + overrides)
        with one_thread():
            pipeline.step("label", folder, cfg)
            pipeline.step("reward", folder, cfg)
    return folder


def sycophancy_preference(folder) -> float:
    margins = sycophancy.rm_sycophancy_pairs(AuditContext(folder, sizes=PROBES))
    return float(np.mean(np.concatenate(list(margins.values())) > 0))


def test_hindsight_and_verification_reduce_the_reward_for_sycophancy(pairs_folder):
    foresight = sycophancy_preference(reward_model_for(pairs_folder, "foresight", FORESIGHT))
    hindsight = sycophancy_preference(reward_model_for(pairs_folder, "hindsight", ["label.feedback=hindsight"]))
    p_know = sycophancy_preference(reward_model_for(pairs_folder, "p_know_1", ["label.p_know=1"]))
    # 180 constructed pairs each (measured: 0.67 / 0.00 / 0.28): a 15-point drop is far outside the noise.
    assert hindsight < foresight - 0.15, (foresight, hindsight)
    assert p_know < foresight - 0.15, (foresight, p_know)


@pytest.mark.slow
def test_the_pool_sets_whose_taste_the_reward_encodes(pairs_folder):
    def detail_preference(folder) -> float:
        return float(np.mean(flattening.rm_detail_margins(AuditContext(folder, sizes=PROBES), n=120) > 0))

    concise = reward_model_for(pairs_folder, "concise_pool", [
        "label.annotator_groups=[{name: concise, share: 1.0, detail_preference: -1.0}]"])
    detailed = reward_model_for(pairs_folder, "detailed_pool", [
        "label.annotator_groups=[{name: detailed, share: 1.0, detail_preference: 1.0}]"])
    # measured: 0.00 vs 1.00
    assert detail_preference(detailed) > detail_preference(concise) + 0.3


def test_best_of_n_gold_eventually_falls_for_a_small_reward_model(pairs_folder):
    """A reward model from ~1,200 foresight labels is a poor proxy. Best-of-n by it, over the responses the
    SFT policy imitates, keeps raising the proxy while the gold utility of the pick turns down (Gao et al.
    2022, Fig. 1) — computed with the audit's exact best-of-n estimator."""
    ctx = AuditContext(reward_model_for(pairs_folder, "foresight", FORESIGHT))
    rng = random.Random(1)
    prompts, N = ctx.world.prompts("audit", 48, seed=5), 64
    texts = [[ctx.world.demonstration(p, rng).response for _ in range(N)] for p in prompts]
    p_ids = ctx.prompt_ids([ctx.prompt_text(p) for p in prompts for _ in range(N)])
    proxy = ctx.score(p_ids, [ctx.response_ids(t) for ts in texts for t in ts]).reshape(len(prompts), N)
    gold = np.array([[ctx.world.gold(p, t) for t in ts] for p, ts in zip(prompts, texts, strict=True)])
    bp, bg = overoptimisation.best_of_n(proxy, gold, [1, 2, 4, 8, 16, 32, 64])
    proxy_curve, gold_curve = bp.mean(0), bg.mean(0)
    assert np.all(np.diff(proxy_curve) >= -1e-9) and proxy_curve[-1] > proxy_curve[0] + 0.3  # proxy keeps rising
    assert gold_curve[-1] < gold_curve.max() - 0.1, gold_curve  # gold has turned down (measured 0.47 → 0.20)


def _open_pairs_folder(tmp_path, groups: list[dict] | None, n: int = 150):
    """A run folder holding only a config and constructed pairs on open prompts (detailed vs concise, both
    correct): what the relabelling needs."""
    world = World(WorldConfig())
    rng = random.Random(0)
    rows = []
    for i, p in enumerate(world.prompts("train", n, seed=3, families=("open",))):
        rows.append({"pair_id": f"p{i}", "prompt_id": p.id, "family": "open", "prompt": p.text,
                     "response_a": respond(p, "correct_detailed", world.knowledge, rng),
                     "response_b": respond(p, "correct_plain", world.knowledge, rng), "meta": p.to_dict()})
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    overrides = [f"label.annotator_groups={json.dumps(groups)}"] if groups else []
    (tmp_path / "config.yaml").write_text(load_config(overrides=overrides).to_yaml())
    return tmp_path


def test_a_single_annotator_group_removes_the_disagreement_between_groups(tmp_path):
    sizes = AuditSizes(relabel_pairs=150, relabel_k=4)
    two = AuditContext(_open_pairs_folder(tmp_path / "two", None), sizes=sizes)
    one = AuditContext(_open_pairs_folder(tmp_path / "one", [{"name": "detailed", "share": 1.0,
                                                              "detail_preference": 1.0}]), sizes=sizes)
    agree_two = flattening.pairwise_agreement(flattening.relabel_counts(two)[0]["open"]).mean()
    agree_one = flattening.pairwise_agreement(flattening.relabel_counts(one)[0]["open"]).mean()
    # Detail-lovers and concise-lovers disagree on exactly these pairs; one group does not.
    assert agree_one > agree_two + 0.15, (agree_one, agree_two)
    # and with one group the audit reports no between-group gap, and says why
    cfg = yaml.safe_load((tmp_path / "one" / "config.yaml").read_text())
    assert len(cfg["label"]["annotator_groups"]) == 1


def test_single_group_run_reports_no_group_gap(micro_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(micro_run, run)
    rows = [json.loads(x) for x in (run / "reward" / "eval.jsonl").read_text().splitlines()]
    write_jsonl(run / "reward" / "eval.jsonl", [{**r, "annotator_group": "everyone"} for r in rows])
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["label"]["annotator_groups"] = [{"name": "everyone", "share": 1.0, "detail_preference": 0.0}]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    section = flattening.measure(AuditContext(run, sizes=AuditSizes.small()))
    assert "rm_accuracy_gap" not in section["metrics"]
    assert any("One annotator group" in n for n in section["notes"])
