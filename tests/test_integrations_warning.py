"""EarlyWarning inside TRL 1.16 (the peer): the detectors of early_warning.py on what GRPOTrainer logs. A detector
forced to fire (a threshold every value crosses) stops training at the step it fires and brings the model back to
the last checkpoint before it; warn only logs; off changes nothing."""

import json

import pytest
import torch

from rlhf_lab import early_warning
from rlhf_lab.integrations import EarlyWarning, TensionMonitor, proxy_reward
from rlhf_lab.integrations.rewards import world_dataset
from rlhf_lab.integrations.warning import trainer_records
from tests.test_integrations import COMMON, TINY, chat  # noqa: F401  (chat: the module's fixture)

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

# entropy_collapse fires when the per-token entropy's 4-step moving average falls below threshold × its first
# value; at 10 × any positive value fires the first time it can: step 5 (the moving average's second point)
FORCED = dict(detectors=["entropy_collapse"], thresholds={"entropy_collapse": 10.0})
FIRES_AT = 5
TIMING = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "step_time")


def _grpo(tmp_path, chat, *, steps: int, callbacks=(), save_steps: int | None = None,  # noqa: F811
          resume: str | None = None):
    folder, load, tok = chat
    save = dict(save_strategy="steps", save_steps=save_steps) if save_steps else {}
    args = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                          max_completion_length=6, max_steps=steps, learning_rate=1e-2,
                          **{**COMMON, **save})
    trainer = trl.GRPOTrainer(model=load(), reward_funcs=[proxy_reward(folder.parent / "rm", tok)], args=args,
                              train_dataset=datasets.Dataset.from_list(world_dataset(32, seed=1)),
                              processing_class=tok)
    for cb in callbacks:
        cb.attach(trainer)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def _training_log(trainer) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING and not k.startswith("warning/")}
            for h in trainer.state.log_history if set(h) - {"step", "epoch", "warning/entropy_collapse"}]


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_stop_ends_training_at_the_warning_and_keeps_the_checkpoint_before_it(tmp_path, chat):  # noqa: F811
    from safetensors.torch import load_file

    warning = EarlyWarning(mode="stop", **FORCED)
    trainer = _grpo(tmp_path, chat, steps=8, save_steps=2, callbacks=[warning])
    assert trainer.state.global_step == FIRES_AT  # of 8
    logged = [(h["step"], h["warning/entropy_collapse"]) for h in trainer.state.log_history
              if "warning/entropy_collapse" in h]
    assert logged == [(FIRES_AT, FIRES_AT)]
    # the step of the warning is not checkpointed; the one before it is kept, and the model is back to it
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    note = json.loads((tmp_path / "early_warning.json").read_text())
    assert note == {"stopped_at": FIRES_AT, "global_step": FIRES_AT, "warnings": {"entropy_collapse": FIRES_AT},
                    "checkpoint": "checkpoint-4", "restored": True}
    saved = load_file(tmp_path / "checkpoint-4" / "model.safetensors")
    now = trainer.model.state_dict()
    assert saved and all(torch.equal(now[k], v) for k, v in saved.items())
    # and checkpoint-4 is not the model training started from, so the comparison above can fail
    assert any(not torch.equal(chat[1]().state_dict()[k], v) for k, v in saved.items())


def test_warn_only_logs_and_off_changes_nothing(tmp_path, chat):  # noqa: F811
    base = _grpo(tmp_path / "none", chat, steps=6)
    off = _grpo(tmp_path / "off", chat, steps=6, callbacks=[EarlyWarning(mode="off", **FORCED)])
    warn = _grpo(tmp_path / "warn", chat, steps=6, callbacks=[EarlyWarning(mode="warn", **FORCED)])
    assert base.state.global_step == off.state.global_step == warn.state.global_step == 6
    assert [h["step"] for h in warn.state.log_history if "warning/entropy_collapse" in h] == [FIRES_AT]
    assert not any(k.startswith("warning/") for h in off.state.log_history for k in h)
    assert _training_log(off) == _training_log(base) == _training_log(warn)
    p = _params(base.model)
    for other in (off, warn):
        assert all(torch.equal(p[k], v) for k, v in _params(other.model).items())
    assert not (tmp_path / "warn" / "early_warning.json").exists()


def test_a_resumed_run_sees_the_steps_before_its_checkpoint(tmp_path, chat):  # noqa: F811
    """Resumed from checkpoint-4, the detectors read steps 1–4 from the checkpoint's log_history: the forced
    detector fires at step 5, as in an uninterrupted run (from step 5 alone its moving average starts at 8)."""
    first = _grpo(tmp_path, chat, steps=4, save_steps=2, callbacks=[EarlyWarning(mode="warn", **FORCED)])
    assert first.state.global_step == 4 and not any("warning/entropy_collapse" in h for h in first.state.log_history)
    again = _grpo(tmp_path, chat, steps=8, save_steps=2, callbacks=[EarlyWarning(mode="warn", **FORCED)],
                  resume=str(tmp_path / "checkpoint-4"))
    assert again.state.global_step == 8
    assert [h["step"] for h in again.state.log_history if "warning/entropy_collapse" in h] == [FIRES_AT]


def test_the_monitor_feeds_its_held_out_measures_to_the_detectors(tmp_path, chat):  # noqa: F811
    """TensionMonitor(early_warning=…): audit/degeneration/length/sft is the start (step 0) and /policy each
    measurement, so length_drift (forced: any change exceeds −1) fires at the first measurement after the start."""
    monitor = TensionMonitor(every=2, sizes=TINY, n_prompts=4, max_new_tokens=6, early_warning="warn",
                             early_warning_detectors=["length_drift"], early_warning_thresholds={"length_drift": -1})
    trainer = _grpo(tmp_path, chat, steps=2, callbacks=[monitor])
    assert [h["warning/length_drift"] for h in trainer.state.log_history if "warning/length_drift" in h] == [2]
    assert [r["step"] for r in monitor.early_warning.history if "eval/length" in r] == [0, 2]


def test_trainer_records_translate_trl_keys_and_never_read_gold():
    logs = {"reward": 0.4, "completions/mean_length": 10.0, "kl": 0.05, "entropy": 1.2, "loss": 0.1,
            "rewards/proxy_reward/mean": 0.4, "rewards/gold_reward/mean": -1.0}
    [rec] = trainer_records(logs, step=7)
    assert rec == pytest.approx({"step": 7, "objective/scores": 0.4, "objective/length": 10.0,
                                 "objective/kl": 0.5, "objective/entropy": 12.0})
    assert trainer_records({**logs, "rewards/gold_reward/mean": 5.0}, step=7) == [rec]
    assert trainer_records({"eval_reward": 0.2, "eval_rewards/gold_reward/mean": 3.0}, step=9) == \
        [{"step": 9, "eval/proxy_reward": 0.2}]
    monitor = {"audit/degeneration/stop_rate/sft": 0.9, "audit/degeneration/stop_rate/policy": 0.5,
               "audit/overoptimisation/gold/policy": 1.0}
    assert trainer_records(monitor, step=4) == [{"step": 0, "eval/stop_rate": 0.9}, {"step": 4, "eval/stop_rate": 0.5}]
    assert trainer_records(monitor, step=4, monitor=False) == []
    # a schema key passes as it is (TRL's PPO logs objective/kl per sequence already)
    assert trainer_records({"objective/kl": 3.0}, step=1) == [{"step": 1, "objective/kl": 3.0}]
    assert not any("gold" in k for d in early_warning.DETECTORS.values() for k in d.reads)


def test_bad_settings_name_the_argument():
    with pytest.raises(ValueError, match="mode must be one of off, warn, stop"):
        EarlyWarning(mode="halt")
    with pytest.raises(ValueError, match="EarlyWarning: detectors: unknown detector 'kl'"):
        EarlyWarning(detectors=["kl"])
    with pytest.raises(ValueError, match=r"EarlyWarning: thresholds\.kl_budget: nan is not a finite number"):
        EarlyWarning(thresholds={"kl_budget": float("nan")})
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        TensionMonitor(early_warning="stop", early_warning_thresholds={"nope": 1.0})
