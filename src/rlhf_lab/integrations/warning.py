"""EarlyWarning: `policy.early_warning` (off | warn | stop) inside a `transformers.Trainer` — TRL's GRPOTrainer,
RLOOTrainer, … The detectors are rlhf_lab/early_warning.py's, unchanged: this module only turns what the trainer
logs into their history (`trainer_records`) and acts on what they return, as steps/policy/warning.py does in
rlhf-lab's own loop.

    EarlyWarning(mode="stop").attach(trainer)          # or TensionMonitor(early_warning="stop").attach(trainer)
    trainer.train()                                     # stopped: trainer.model is checkpoint-N's, N < the warning

warn: the first time a detector fires, `warning/<detector>` = the step it fired at is logged through `Trainer.log`
(so log_history and every report_to tracker get it). stop: also `control.should_training_stop`; the step's
checkpoint is not written (so `save_total_limit` cannot rotate away the one before it); at the end of training the
model is reloaded from the last `checkpoint-N` in output_dir with N < the warning's step, and
`<output_dir>/early_warning.json` says which (null when no checkpoint precedes the warning: the model is then left
as trained, and the file says so).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from transformers import Trainer, TrainerCallback

from rlhf_lab import early_warning

log = logging.getLogger(__name__)
NOTE_FILE = "early_warning.json"
# the degeneration metrics TensionMonitor measures on its held-out questions, as the detectors' eval/<metric>
MONITOR_EVAL = ("length", "stop_rate", "repeated_ngram_share", "same_opener")
READS = {k for d in early_warning.DETECTORS.values() for k in d.reads}


def trainer_records(logs: dict, *, step: int, monitor: bool = True) -> list[dict]:
    """What one trainer log (`logs`, at optimiser step `step`) gives the detectors: [] or records with a "step".

    Read, and nothing else (an allow-list: a gold reward logged beside the proxy, `rewards/gold_reward/mean`, is
    never read):
    - keys already in the detectors' schema (TRL's PPO logs objective/kl, objective/scores, objective/entropy);
    - TRL's GRPO/RLOO keys: `reward` (the weighted sum of the reward functions on the rollouts) → objective/scores;
      `completions/mean_length` → objective/length; `kl` and `entropy`, per-token means, × the mean length →
      objective/kl and objective/entropy, per completion as the detectors read them (a product of means: exact
      when the completions are equally long); `eval_reward` (the same on eval_dataset) → eval/proxy_reward;
    - with `monitor`, TensionMonitor's audit/degeneration/<m>/policy → eval/<m> at `step`, and its /sft (the model
      when training began) → eval/<m> at step 0, the start the detectors compare against."""
    now: dict = {k: v for k, v in logs.items() if k in READS}
    length = logs.get("completions/mean_length")
    if "reward" in logs:
        now["objective/scores"] = logs["reward"]
    if length is not None:
        now["objective/length"] = length
        for ours, trl in (("objective/kl", "kl"), ("objective/entropy", "entropy")):
            if logs.get(trl) is not None:
                now[ours] = logs[trl] * length
    if "eval_reward" in logs:
        now["eval/proxy_reward"] = logs["eval_reward"]
    start: dict = {}
    if monitor:
        for m in MONITOR_EVAL:
            for who, into in (("policy", now), ("sft", start)):
                if (v := logs.get(f"audit/degeneration/{m}/{who}")) is not None:
                    into[f"eval/{m}"] = v
    return [{"step": s, **r} for s, r in ((0, start), (step, now)) if r]


class EarlyWarning(TrainerCallback):
    """The early-warning detectors on a Trainer's own log. mode: off | warn | stop. detectors: names in
    early_warning.DETECTORS (None: all). thresholds: per detector, in place of its default (e.g. the one
    `rlhf-lab warnings-scoreboard` calibrated)."""

    def __init__(self, *, mode: str = "warn", detectors: Sequence[str] | None = None,
                 thresholds: dict[str, float] | None = None):
        if mode not in early_warning.MODES:
            raise ValueError(f"EarlyWarning: mode must be one of {', '.join(early_warning.MODES)} (got {mode!r})")
        self.thresholds = dict(thresholds or {})
        self.names = list(detectors) if detectors is not None else None
        early_warning.check_choice(self.names, self.thresholds, detectors_key="EarlyWarning: detectors",
                                   thresholds_key="EarlyWarning: thresholds")
        self.mode = mode
        self.trainer: Trainer | None = None
        self.history: list[dict] = []
        self.warned: dict[str, int] = {}  # detector → the step it fired at
        self.stopped_at: int | None = None
        self._logging = False

    def attach(self, trainer: Trainer) -> Trainer:
        """Register on `trainer` (it logs the warnings and, with stop, reloads the checkpoint); returns it."""
        self.trainer = trainer
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        return trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if self.mode != "off" and self.trainer is None:
            raise ValueError("EarlyWarning needs its trainer: use EarlyWarning(...).attach(trainer)")
        # resumed from a checkpoint: its log_history is this run's history up to there, warnings included (the
        # detectors see the steps before the checkpoint; a warning is not logged twice)
        self.history, self.stopped_at = [], None
        for h in state.log_history:
            self._add(trainer_records(h, step=h.get("step", 0), monitor=args.world_size == 1))
        self.warned = early_warning.warnings_logged(state.log_history)

    def _add(self, records: list[dict]) -> None:
        for r in records:
            # the start (step 0) is the model training began from; a measurement after a resume starts from the
            # checkpoint's model, and every measurement logs it again
            if r["step"] > 0 or not any(h["step"] == 0 for h in self.history):
                self.history.append(r)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.mode == "off" or self._logging:
            return  # the warning records this callback logs are not signals
        # TensionMonitor measures on the main process only; with several processes the detectors read only the
        # trainer's metrics, gathered over all of them, so every process reaches the same decision unprompted
        self._add(trainer_records(logs or {}, step=state.global_step, monitor=args.world_size == 1))
        new = early_warning.new_warnings(self.history, warned=self.warned, thresholds=self.thresholds,
                                         names=self.names)
        if not new:
            return self._hold(control)
        self.warned.update(new)
        for name, u in new.items():
            log.warning("early warning at step %d: %s", u, early_warning.describe(name, self.thresholds))
        self._logging = True
        try:  # Trainer.log itself: a TRL override would fold its buffered training metrics into this record
            Trainer.log(self.trainer, {f"warning/{name}": u for name, u in new.items()})
        finally:
            self._logging = False
        if self.mode == "stop" and self.stopped_at is None:
            self.stopped_at = min(new.values())
        return self._hold(control)

    def _hold(self, control):
        """After a stop: end training, and write no checkpoint of the model past the warning."""
        if self.stopped_at is not None:
            control.should_training_stop = True
            control.should_save = False
        return control

    def on_step_end(self, args, state, control, **kwargs):
        return self._hold(control)  # DefaultFlowCallback may have asked for a save at this step

    def on_epoch_end(self, args, state, control, **kwargs):
        return self._hold(control)  # and for one at the end of the (cut) epoch

    def on_train_end(self, args, state, control, **kwargs):
        if self.stopped_at is None:
            return
        ckpt = last_checkpoint_before(Path(args.output_dir), self.stopped_at)
        # load_best_model_at_end: the trainer already loaded the checkpoint the user's metric chose; keep it
        restore = ckpt is not None and not args.load_best_model_at_end
        if restore:
            self.trainer._load_from_checkpoint(str(ckpt))
        note = {"stopped_at": self.stopped_at, "global_step": state.global_step, "warnings": dict(self.warned),
                "checkpoint": ckpt.name if ckpt else None, "restored": restore}
        if state.is_world_process_zero:
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(args.output_dir) / NOTE_FILE).write_text(json.dumps(note, indent=1))
        if restore:
            log.warning("early_warning=stop: training ended at step %d; the model is %s's", state.global_step,
                        ckpt.name)
        else:
            log.warning("early_warning=stop: training ended at step %d; no checkpoint before the warning at step "
                        "%d was kept%s, so the model is left as trained", state.global_step, self.stopped_at,
                        " (load_best_model_at_end: the best one)" if ckpt else "")


def last_checkpoint_before(output_dir: Path, step: int) -> Path | None:
    """The `checkpoint-N` folder in `output_dir` with the largest N < `step`, or None."""
    found = [(int(m.group(1)), p) for p in output_dir.glob("checkpoint-*")
             if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and int(m.group(1)) < step]
    return max(found)[1] if found else None
