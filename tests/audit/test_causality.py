"""Causality, not decoration: move one knob of the world, and the matching audit measurement moves the right
way. Nothing in the audit knows about the knobs; the effects come out of the world's mechanisms.

The reward-model tests share one SFT model and one set of SFT samples, and train small reward models on
their labels under different label settings (foresight / hindsight / p_know = 1 / one annotator group)."""

import itertools
import json
import random
import shutil

import numpy as np
import pytest
import yaml

from rlhf_lab import load_config, pipeline
from rlhf_lab.audit import flattening, overoptimisation, sycophancy
from rlhf_lab.audit.sampling import AuditContext, AuditSizes
from rlhf_lab.config import WorldConfig
from rlhf_lab.runfolder import write_jsonl
from rlhf_lab.world import World
from rlhf_lab.world.styles import respond
from tests.conftest import MICRO

# Enough labels for a reward model to learn what the annotators reward; still seconds per step.
RM_DATA = [*MICRO, "sample.n_prompts=240", "sample.k=4", "reward.epochs=2", "reward.eval_share=0.1"]
PROBES = AuditSizes(belief=60, pushback=60, feedback=60)


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """SFT, then SFT samples and pairs: the shared start of every label variant."""
    from rlhf_lab.ui import set_quiet

    set_quiet(True)
    base = tmp_path_factory.mktemp("causal") / "base"
    cfg = load_config(overrides=RM_DATA)
    pipeline.step("sft", base, cfg)
    pipeline.step("sample", base, cfg)
    return base


def reward_model_for(sampled, name: str, overrides: list[str]):
    """Label the shared pairs under `overrides` and train a reward model on them. → the variant's folder."""
    folder = sampled.parent / name
    if not (folder / "reward" / "head.safetensors").exists():
        shutil.copytree(sampled, folder, dirs_exist_ok=True)
        cfg = load_config(overrides=RM_DATA + overrides)
        pipeline.step("label", folder, cfg)
        pipeline.step("reward", folder, cfg)
    return folder


def sycophancy_preference(folder) -> float:
    margins = sycophancy.rm_sycophancy_pairs(AuditContext(folder, sizes=PROBES))
    return float(np.mean(np.concatenate(list(margins.values())) > 0))


def test_hindsight_and_verification_reduce_the_reward_for_sycophancy(sampled):
    foresight = sycophancy_preference(reward_model_for(sampled, "foresight", []))
    hindsight = sycophancy_preference(reward_model_for(sampled, "hindsight", ["label.feedback=hindsight"]))
    p_know = sycophancy_preference(reward_model_for(sampled, "p_know_1", ["label.p_know=1"]))
    # 180 constructed pairs each: a 15-point drop is far outside the noise of a rate near 50–90 %.
    assert hindsight < foresight - 0.15, (foresight, hindsight)
    assert p_know < foresight - 0.15, (foresight, p_know)


@pytest.mark.slow
def test_the_pool_sets_whose_taste_the_reward_encodes(sampled):
    def detail_preference(folder) -> float:
        return float(np.mean(flattening.rm_detail_margins(AuditContext(folder, sizes=PROBES), n=120) > 0))

    concise = reward_model_for(sampled, "concise_pool", [
        'label.annotator_groups=[{name: concise, share: 1.0, detail_preference: -1.0}]'])
    detailed = reward_model_for(sampled, "detailed_pool", [
        'label.annotator_groups=[{name: detailed, share: 1.0, detail_preference: 1.0}]'])
    assert detail_preference(detailed) > detail_preference(concise) + 0.2


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


def test_best_of_n_gold_eventually_falls_for_a_small_reward_model(micro_run, tmp_path):
    """The micro run's reward model saw ~60 labels: a poor proxy. Picking harder by it (larger n) keeps
    raising the proxy while the true benefit of the pick turns down (Gao et al. 2022, Fig. 1)."""
    run = tmp_path / "run"
    shutil.copytree(micro_run, run)
    ctx = AuditContext(run, sizes=AuditSizes(diversity_prompts=48, bon_n=64, diversity_k=4))
    bon = overoptimisation._bon_section(ctx)
    proxy = [c["proxy"]["value"] for c in bon["curve"]]
    gold = [c["gold"]["value"] for c in bon["curve"]]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(proxy))  # proxy keeps rising
    assert proxy[-1] > proxy[0] + 0.3
    assert gold[-1] < max(gold) - 0.05, gold  # gold has turned down by the largest n
