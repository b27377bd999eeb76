"""Mitigation levers: reward aggregation rules, MaxMin, the distributional loss, and a micro sweep."""

import math

import pytest
import torch

from rlhf_lab.models.reward_set import AGGREGATORS, RewardSet
from rlhf_lab.steps.losses import bradley_terry_nll, probit_preference_nll


def test_aggregators_on_hand_numbers():
    s = torch.tensor([[1.0, -1.0, 0.0],
                      [3.0, 0.0, 0.0],
                      [2.0, -2.0, 0.0]])  # (K=3 members, B=3)
    assert torch.allclose(AGGREGATORS["mean"](s), torch.tensor([2.0, -1.0, 0.0]))
    assert torch.allclose(AGGREGATORS["min"](s), torch.tensor([1.0, -2.0, 0.0]))
    std0 = math.sqrt(((1 - 2) ** 2 + (3 - 2) ** 2 + 0) / 3)
    std1 = math.sqrt((0 + 1 + 1) / 3)
    got = AGGREGATORS["uncertainty"](s, uncertainty_coef=0.5)
    assert torch.allclose(got, torch.tensor([2 - 0.5 * std0, -1 - 0.5 * std1, 0.0]))
    w = torch.tensor([0.5, 0.25, 0.25])
    assert torch.allclose(AGGREGATORS["weighted_mean"](s, weights=w), torch.tensor([1.75, -1.0, 0.0]))


def test_maxmin_prefers_the_response_no_group_hates():
    # two groups; response 0 is loved by the majority and hated by the minority, response 1 is fine for both
    s = torch.tensor([[2.0, 0.5],   # majority group's reward
                      [-1.5, 0.4]])  # minority group's reward
    assert int(AGGREGATORS["weighted_mean"](s, weights=torch.tensor([0.8, 0.2])).argmax()) == 0
    assert int(AGGREGATORS["min"](s).argmax()) == 1


class _Const(torch.nn.Module):
    def __init__(self, v):
        super().__init__()
        self.v = v

    def score(self, ids, mask, normalized=True):
        return torch.full((ids.shape[0],), self.v)


def test_reward_set_scores_through_members():
    rs = RewardSet([_Const(1.0), _Const(3.0)], aggregate="min")
    assert torch.equal(rs.score(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3)), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError):
        RewardSet([_Const(1.0)], aggregate="median")


def test_probit_loss_reduces_to_a_ranking_loss():
    mu_c, mu_r = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    sd = torch.ones(2)
    nll = probit_preference_nll(mu_c, sd, mu_r, sd)
    z = torch.tensor([1.0, -1.0]) / math.sqrt(2)
    expect = -torch.log(0.5 * (1 + torch.erf(z / math.sqrt(2))))
    assert torch.allclose(nll, expect, atol=1e-5)
    # more spread → less confident preferences → loss nearer log 2
    wide = probit_preference_nll(mu_c, 10 * sd, mu_r, 10 * sd)
    assert abs(float(wide[0]) - math.log(2)) < abs(float(nll[0]) - math.log(2))
    assert torch.allclose(bradley_terry_nll(torch.tensor([0.0]), torch.tensor([0.0])), torch.tensor([math.log(2)]))


def test_sweep_file_errors_name_the_run(tmp_path):
    from rlhf_lab.config import ConfigError
    from rlhf_lab.sweep import load_sweep

    bad = tmp_path / "bad.yaml"
    bad.write_text("grid:\n  label.feedback: [foresight, hindsigt]\n")
    with pytest.raises(ConfigError, match=r"feedback-hindsigt.*label\.feedback"):
        load_sweep(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("name: x\n")
    with pytest.raises(ConfigError, match="no runs"):
        load_sweep(empty)
    name, _, runs = load_sweep("examples/sweeps/foresight_vs_hindsight.yaml")
    assert name == "feedback" and len(runs) == 8  # feedback × 4 seeds
    assert runs[0].override_list() == ["label.feedback=foresight", "seed=0"]


def test_micro_sweep_end_to_end(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "sweep"
    r = subprocess.run([sys.executable, "-m", "rlhf_lab.cli", "sweep", "examples/sweeps/micro.yaml", "--out", str(out),
                        "--jobs", "2"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == ["feedback-foresight", "feedback-hindsight", "shared"]
    # they differ only in who labels: their SFT policy and samples were made once, and copied
    assert "sharing saves 1 sft run, 1 sample run" in r.stdout
    (part,) = (p for p in (out / "shared").iterdir() if p.is_dir())
    assert part.name.startswith("sample-") and (part / "sft").is_dir() and not (part / "policy").exists()
    for name in runs[:2]:
        cfg = (out / name / "config.yaml").read_text()
        assert f"feedback: {name.split('-')[1]}" in cfg
        assert "evaluate" in json.loads((out / name / "state.json").read_text())["done"]
    assert (out / "compare.html").exists()
    # resumable: a second call finds everything finished and runs nothing
    r = subprocess.run([sys.executable, "-m", "rlhf_lab.cli", "sweep", "examples/sweeps/micro.yaml", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "2 finished already" in r.stdout


def _micro_run(tmp_path, name, extra):
    import json

    from rlhf_lab import load_config, run
    from rlhf_lab.ui import set_quiet
    from tests.conftest import MICRO

    set_quiet(True)
    out = run(load_config(overrides=[*MICRO, "policy.updates=2", *extra]), out=tmp_path / name, report=False).root
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return out, json.loads((out / "reward" / "set.json").read_text()), metrics


def test_ensemble_and_maxmin_runs_end_to_end(tmp_path):
    """A reward-model ensemble and per-group reward models learned by EM both train, steer the policy, and log
    their disagreement and each member's view at every evaluation point."""
    out, meta, metrics = _micro_run(tmp_path, "ens", ["reward.models=ensemble", "reward.ensemble_size=2",
                                                      "reward.ensemble_aggregate=worst_case"])
    assert meta["size"] == 2 and meta["aggregate"] == "min"
    evals = [m for m in metrics if "eval/reward_disagreement" in m]
    assert len(evals) >= 2 and all(m["eval/reward_disagreement"] >= 0 for m in evals)
    members = [f"eval/proxy_reward/member/member{k}" for k in range(2)]
    assert set(members) <= set(evals[-1])
    # worst case: the mean of the per-sample minimum is never above any member's mean
    assert evals[-1]["eval/proxy_reward"] <= min(evals[-1][k] for k in members) + 1e-6

    out, meta, metrics = _micro_run(tmp_path, "em", ["reward.models=per_group", "reward.group_source=em",
                                                     "reward.group_objective=maxmin"])
    assert meta["size"] == 2 and meta["aggregate"] == "min"
    assert (out / "reward" / "members" / "1" / "head.safetensors").exists()
    assert any("eval/reward_disagreement" in m for m in metrics)
