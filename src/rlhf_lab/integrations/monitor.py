"""TensionMonitor: the audit's tensions measured inside someone else's training loop.

Every `every` optimiser steps the model being trained answers the world's English probes (stated beliefs,
pushback, wrong work shown for approval, harmful and jailbreak-wrapped requests, benign look-alikes, held-out
questions, several samples of the same prompt) and the tension modules measure the answers through
`core.measure_tensions` — the same loop, context (`audit.external.ModelsContext`) and statistics as
`rlhf-lab audit --policy`. The reference is a frozen copy of the model taken when training begins; its samples
are drawn once and reused. Metrics go through the trainer's own `log` (`audit/<tension>/<metric>/<who>`), so
`log_history` and every `report_to` tracker receive them; the answers go into `completions` and, as JSONL, into
`<output_dir>/tension_completions.jsonl`.

`hooks`: functions called on every trainer log, `hook(logs, state, control) -> dict | None`; what they return is
logged too. `early_warning` (off | warn | stop, as `policy.early_warning`): `attach` also attaches an
`integrations.warning.EarlyWarning`, whose detectors read the trainer's metrics and this monitor's degeneration
measures. One process measures (the main one).
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState

from rlhf_lab.audit import deception, degeneration, diversity, harm, overoptimisation, sycophancy
from rlhf_lab.audit.core import cpu_threads_for, flatten, measure_tensions
from rlhf_lab.audit.external import ModelsContext, audit_config
from rlhf_lab.audit.sampling import AuditSizes
from rlhf_lab.integrations.warning import EarlyWarning

# The default probe size: enough for a rate to move visibly between calls, small enough to cost ≤ 10 % of the training
# steps at the default `every` = 100 (one measurement ≈ 10 GRPO steps of a tiny model: benchmarks/bench_monitor.py).
MONITOR_SIZES = AuditSizes(question=16, belief=16, pushback=16, feedback=16, harmful=8, benign=8,
                           diversity_prompts=4, diversity_k=4, bon_n=4, relabel_pairs=0, relabel_k=1, set_size=4,
                           embed_sets=0, batch_size=64)
# Flattening is left out: it needs annotators' labels, which a TRL run does not have.
MONITOR_TENSIONS = (overoptimisation, degeneration, sycophancy, diversity, deception, harm)
COMPLETIONS_FILE = "tension_completions.jsonl"

Hook = Callable[[dict, TrainerState, TrainerControl], dict | None]


def probe_tokenizer(tokenizer):
    """A copy of the trainer's tokenizer fit for the probes: left padding and a pad id distinct from EOS. When pad is
    missing or equals EOS, pad becomes a token the model already embeds (padding is masked, never read), so the
    trainer's tokenizer and the model's embeddings stay as they are."""
    tok = copy.deepcopy(getattr(tokenizer, "tokenizer", tokenizer))  # a processor carries its tokenizer
    tok.padding_side = "left"
    if tok.eos_token_id is None:
        raise ValueError("TensionMonitor: the tokenizer has no EOS token")
    if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
        spare = next(i for i in (tok.unk_token_id, tok.bos_token_id, 0) if i is not None and i != tok.eos_token_id)
        tok.pad_token = tok.convert_ids_to_tokens(spare)
    return tok


class TensionMonitor(TrainerCallback):
    """Measure the audit's tensions every `every` steps of a `transformers.Trainer` and log them through it.

    every: optimiser steps between measurements. sizes: probe prompts per set (`MONITOR_SIZES`). tensions: the
    tension modules to measure. n_prompts: held-out questions for gold, KL and degeneration. max_new_tokens,
    temperature: how the probes are sampled. seed: which probes, and the sampling seed (the same each call, so
    changes between calls are the model's). hooks: see the module docstring. early_warning,
    early_warning_detectors, early_warning_thresholds: `EarlyWarning`'s mode, detectors and thresholds; off by
    default (at 16 held-out questions a rate moves 1/16 per answer, noisy for the default thresholds)."""

    def __init__(self, *, every: int = 100, sizes: AuditSizes = MONITOR_SIZES, tensions: Sequence = MONITOR_TENSIONS,
                 n_prompts: int = 16, max_new_tokens: int = 48, temperature: float = 1.0, seed: int = 0,
                 hooks: Sequence[Hook] = (), early_warning: str = "off",
                 early_warning_detectors: Sequence[str] | None = None,
                 early_warning_thresholds: dict[str, float] | None = None):
        if every < 1:
            raise ValueError(f"TensionMonitor: every must be ≥ 1 (got {every})")
        self.every, self.sizes, self.tensions, self.hooks = every, sizes, tuple(tensions), list(hooks)
        self.cfg = audit_config(policy="trainer", seed=seed, n_prompts=n_prompts, max_new_tokens=max_new_tokens,
                                batch_size=sizes.batch_size)
        self.cfg.generation.temperature = temperature
        self.trainer: Trainer | None = None
        self.ctx: ModelsContext | None = None
        self.completions: list[dict] = []
        self.seconds: list[float] = []  # wall time of each measurement
        self._empty = tempfile.TemporaryDirectory(prefix="rlhf-lab-monitor-")
        self._hooking = False
        self.early_warning = EarlyWarning(mode=early_warning, detectors=early_warning_detectors,
                                          thresholds=early_warning_thresholds) if early_warning != "off" else None

    def attach(self, trainer: Trainer) -> Trainer:
        """Register on `trainer` (its `log` is how the metrics reach log_history and report_to); returns it."""
        self.trainer = trainer
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        if self.early_warning is not None:  # after the monitor: its on_log sees this step's measurement
            self.early_warning.attach(trainer)
        return trainer

    # -- the Trainer's events ------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise ValueError("TensionMonitor needs its trainer: use TensionMonitor(...).attach(trainer)")
        model = self.trainer.model
        reference = copy.deepcopy(model).eval()  # the model as training found it: the audit's "SFT" column
        # accelerate's prepare replaces the instance's forward by a wrapper closed over the original module: the
        # copy would run the trained weights. The class's own forward is the copy's.
        reference.__dict__.pop("forward", None)
        for p in reference.parameters():
            p.requires_grad_(False)
        self.ctx = ModelsContext(cfg=self.cfg, models={"sft": reference, "policy": model},
                                 tokenizer=probe_tokenizer(self.trainer.processing_class), root=self._empty.name,
                                 sizes=self.sizes)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 and state.is_world_process_zero:
            self._log(self.measure(state.global_step, output_dir=args.output_dir))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._hooking or not self.hooks:
            return  # what the hooks return is logged, and not shown to them again
        self._hooking = True
        try:
            extra = {}
            for hook in self.hooks:
                extra.update(hook(dict(logs or {}), state, control) or {})
            if extra:
                self._log(extra)
        finally:
            self._hooking = False

    def on_train_end(self, args, state, control, **kwargs):
        self.ctx = None  # the reference copy is released with the context
        self._empty.cleanup()

    # -- measuring -------------------------------------------------------------------------------------------

    def measure(self, step: int, *, output_dir: str | None = None) -> dict[str, float]:
        """The tension metrics of the model as it is now, {"audit/<tension>/<metric>/<who>": value}; its answers are
        appended to `completions` (and to `output_dir`/tension_completions.jsonl)."""
        t0 = time.time()
        ctx = self.ctx
        ctx.forget("policy")  # the policy moved since the last call; the reference did not
        policy = ctx.models["policy"]
        was_training = policy.training
        policy.eval()
        try:
            with cpu_threads_for(ctx):
                tensions, _ = measure_tensions(ctx, self.tensions)
        finally:
            policy.train(was_training)
        rows = [{"step": step, "probe": s.extra.get("probe"), "prompt": s.prompt_text, "completion": s.text,
                 "gold": s.gold} for probe in ctx.probe_samples("policy").values() for s in probe]
        self.completions += rows
        if output_dir:
            path = Path(output_dir) / COMPLETIONS_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r) + "\n" for r in rows))
        self.seconds.append(time.time() - t0)
        metrics = {k: float(v) for k, v in flatten(tensions).items() if isinstance(v, int | float)}
        metrics["audit/seconds"] = self.seconds[-1]
        return metrics

    def _log(self, metrics: dict) -> None:
        # Trainer.log itself, not a subclass's override: TRL's trainers fold their buffered training metrics into
        # whatever is logged, and the audit's record must not take them.
        Trainer.log(self.trainer, dict(metrics))
