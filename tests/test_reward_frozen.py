"""`reward.train: head_on_frozen`: the head learns over cached features of a frozen backbone, and the saved
model scores exactly as it was trained and evaluated (the features are what `ScalarHeadModel.score` reads)."""

import numpy as np
import pytest
import torch

from tests.conftest import MICRO

FROZEN = [*MICRO, "reward.train=head_on_frozen", "reward.epochs=40", "reward.batch_size=16", "reward.lr=1e-2"]


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory):
    from rlhf_lab import load_config
    from rlhf_lab.pipeline import step
    from rlhf_lab.ui import set_quiet

    set_quiet(True)
    out = tmp_path_factory.mktemp("frozen") / "run"
    cfg = load_config(overrides=FROZEN)
    for name in ("sft", "sample", "label", "reward"):
        step(name, out, cfg)
    return cfg, out


def test_backbone_stays_as_initialised(frozen_run):
    from rlhf_lab.models.heads import ScalarHeadModel
    from rlhf_lab.models.lm import load_lm

    _, out = frozen_run
    rm = ScalarHeadModel.load(out / "reward")
    sft = load_lm(out / "sft")[0].base_model.state_dict()
    for name, tensor in rm.backbone.state_dict().items():
        assert torch.equal(tensor, sft[name]), name


def test_saved_model_ranks_as_the_cached_features_did(frozen_run):
    """Held-out accuracy from the cached features == accuracy of the saved model through its own forward,
    and the head separates its training pairs well above chance."""
    import json

    from rlhf_lab.data import read_preferences
    from rlhf_lab.models.heads import ScalarHeadModel
    from rlhf_lab.runfolder import RunFolder
    from rlhf_lab.steps.common import Context
    from rlhf_lab.steps.reward import accuracy, split_rows, tokenize_pairs

    cfg, out = frozen_run
    ctx = Context(cfg, RunFolder(out))
    rows = read_preferences(out / "preferences.parquet")
    train_rows, held_rows = split_rows(rows, cfg.reward.eval_share, cfg.seed)
    rm = ScalarHeadModel.load(out / "reward")
    pad = ctx.tokenizer.pad_token_id
    held = accuracy(rm, tokenize_pairs(ctx, held_rows), pad, "cpu")
    stats = json.loads((out / "reward" / "metrics.json").read_text())
    assert stats["reward/n_eval"] == len(held_rows) > 0
    assert stats["reward/accuracy"] == pytest.approx(float(np.mean(held)))
    assert accuracy(rm, tokenize_pairs(ctx, train_rows), pad, "cpu").mean() > 0.6


def test_choices_panel_says_how_the_reward_model_learned():
    from rlhf_lab import load_config
    from rlhf_lab.audit.choices import choices

    def rows(*overrides):
        return dict(choices(load_config(overrides=list(overrides)).model_dump(mode="json")))

    assert "How the reward model learned" not in rows()
    said = rows("reward.train=head_on_frozen", "sft.enabled=false")["How the reward model learned"]
    assert "frozen base model" in said and "head_on_frozen" in said


def test_choices_panel_says_whether_the_learning_rate_was_annealed():
    from rlhf_lab import load_config
    from rlhf_lab.audit.choices import choices

    def algorithm(*overrides):
        return dict(choices(load_config(overrides=list(overrides)).model_dump(mode="json")))["Algorithm"]

    assert algorithm().endswith("learning rate 0.0001 constant")
    assert algorithm("policy.anneal_lr=true").endswith("annealed linearly to 0")
    assert algorithm("policy.algorithm=rloo").endswith("annealed linearly to 0")
