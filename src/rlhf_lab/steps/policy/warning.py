"""`policy.early_warning` inside the online loop: the detectors of rlhf_lab/early_warning.py run on the history
the loop logs (never gold); a warning is logged once per detector as warning/<detector> = the update it fired
at; with `stop` the loop ends there and the policy saved is the one of the last evaluation point before the
warning — the checkpoints/step_NNNNN the schedule saved (update 0: the untrained policy, = the SFT policy).

    watch = Watch(ctx, start=start)            # resumed: metrics.jsonl's records up to `start` are history
    watch.observe(update, record)              # each update's record and each evaluation point's summary
    if watch.check(update): break              # True: stop
    last_eval = watch.save(policy, last_eval, update=...)  # run/policy: the trained policy or, stopped, the one before
"""

from __future__ import annotations

import shutil

from rlhf_lab import early_warning
from rlhf_lab.models.lm import save_lm
from rlhf_lab.runfolder import atomic_dir, write_json
from rlhf_lab.steps.common import Context
from rlhf_lab.steps.policy.loop import save_policy
from rlhf_lab.ui import info


class Watch:
    def __init__(self, ctx: Context, *, start: int = 0):
        cfg = ctx.cfg.policy
        self.ctx = ctx
        self.mode = getattr(cfg, "early_warning", "off")
        self.names = getattr(cfg, "early_warning_detectors", None)
        if getattr(cfg, "optimise", "proxy") == "gold":  # objective/scores is gold then, which no detector may read
            self.names = [name for name, d in early_warning.DETECTORS.items()
                          if "objective/scores" not in d.reads and (self.names is None or name in self.names)]
        self.thresholds = getattr(cfg, "early_warning_thresholds", {})
        # resumed from update `start`: metrics.jsonl holds this run's records up to it, which the detectors see
        # too; from the start, its policy records are a previous run's (replaced when this one commits)
        self.history = [r for r in ctx.run.phase_metrics("policy") if r.get("step", 0) <= start] \
            if self.mode != "off" and start > 0 else []
        self.warned = early_warning.warnings_logged(self.history)
        self.stopped_at: int | None = None

    def observe(self, update: int, record: dict) -> None:
        if self.mode != "off":
            self.history.append({**record, "step": update, "phase": "policy"})

    def check(self, update: int) -> bool:
        """Log the detectors that fire for the first time; True when training must stop."""
        if self.mode == "off":
            return False
        new = early_warning.new_warnings(self.history, warned=self.warned, thresholds=self.thresholds,
                                         names=self.names)
        acc = self.ctx.accelerator
        if acc.num_processes > 1:  # one decision for every process: the main process's
            from accelerate.utils import broadcast_object_list

            new = broadcast_object_list([new], from_process=0)[0]
        for name, u in new.items():  # the earliest first
            record = {"step": update, "phase": "policy", f"warning/{name}": u}
            self.ctx.run.log(record)
            self.history.append(record)
            self.warned[name] = u
            info(f"[yellow]early warning at update {u}: {early_warning.describe(name, self.thresholds)}[/yellow]")
        if self.mode == "stop" and new:
            self.stopped_at = min(new.values())
            return True
        return False

    def saved_update(self) -> int:
        """The last evaluation point before the warning (0 = before any update)."""
        evaluated = [r["step"] for r in self.history if "eval/proxy_reward" in r and r["step"] < self.stopped_at]
        return max(evaluated, default=0)

    def save(self, policy, last_eval: dict, *, update: int | None) -> dict:
        """Save run/policy and return its evaluation: the trained policy, or after a stop the one of the last
        evaluation point before the warning (with early_warning.json saying which and why)."""
        ctx = self.ctx
        if self.stopped_at is None:
            save_policy(ctx, policy, last_eval, update=update)
            return last_eval
        p = self.saved_update()
        evals = [r for r in self.history if r["step"] == p and "eval/proxy_reward" in r]
        summary = {k: v for k, v in evals[-1].items() if k.startswith("eval/")} if evals else {}
        note = {"stopped_at": self.stopped_at, "saved_update": p, "warnings": dict(self.warned)}
        info(f"early_warning=stop: training ended at update {self.stopped_at}; the policy saved is update {p}'s")
        if ctx.is_main:
            with atomic_dir(ctx.run / "policy") as tmp:
                if p > 0:  # the copy EvalPoints saved at that point
                    shutil.copytree(ctx.run / "checkpoints" / f"step_{p:05d}", tmp, dirs_exist_ok=True)
                else:  # no update yet: the untrained policy (LoRA: fresh adapters, which change nothing)
                    save_lm(ctx.policy_and_reference()[0], ctx.tokenizer, tmp)
                write_json(tmp / "final_eval.json", {**summary, "update": p})
                write_json(tmp / "early_warning.json", note)
        return summary
