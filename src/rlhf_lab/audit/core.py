"""run_audit: measure every tension on a run folder, SFT policy vs trained policy, and write audit.json.

    from rlhf_lab.audit import run_audit
    audit = run_audit("runs/kl01")                  # the final policy
    audit = run_audit("runs/kl01", checkpoint=20)   # the policy saved at update 20

audit.json: {"run", "checkpoint", "has_world", "seconds", "tensions": {name: section}, "flat": {...},
"samples": [...]}. A section holds "metrics" — each {"label", "kind", "better", "sft", "policy",
"change"} (or "rm" / "pool" for what belongs to the reward model or the annotators alone), every estimate
{"value", "lo", "hi", "n"} — plus the curves and notes of that tension. "flat" is the same numbers under
the one metric namespace: `audit/<tension>/<metric>/<sft|policy|change|rm|pool>`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch

from rlhf_lab.audit import deception, degeneration, diversity, flattening, harm, overoptimisation, sycophancy
from rlhf_lab.audit.sampling import AuditContext, AuditSizes
from rlhf_lab.runfolder import RunFolder, write_json

TENSIONS = (overoptimisation, degeneration, sycophancy, diversity, flattening, deception, harm)
WHO = ("sft", "policy", "change", "rm", "pool")


def flatten(tensions: dict[str, dict]) -> dict[str, float | None]:
    """{"audit/<tension>/<metric>/<who>": value} for every estimate."""
    out = {}
    for name, section in tensions.items():
        for metric, m in section.get("metrics", {}).items():
            for who in WHO:
                if who in m:
                    out[f"audit/{name}/{metric}/{who}"] = m[who].get("value")
    return out


def pick_samples(ctx: AuditContext, per_family: int = 2) -> list[dict]:
    """Before/after examples for each prompt family, preferring prompts where the two models differ."""
    pol = {r["prompt_id"]: r for r in ctx.eval_records("policy")}
    by_family: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for s in ctx.eval_records("sft"):
        if s["prompt_id"] in pol:
            by_family[s["family"]].append((s, pol[s["prompt_id"]]))
    out = []
    for fam in sorted(by_family):
        rows = sorted(by_family[fam], key=lambda sp: sp[0]["response"] == sp[1]["response"])[:per_family]
        for s, p in rows:
            out.append({"family": fam, "user_group": s.get("user_group"), "prompt": s["prompt"],
                        "sft": {k: s.get(k) for k in ("response", "gold", "proxy")},
                        "policy": {k: p.get(k) for k in ("response", "gold", "proxy")}})
    return out


@contextmanager
def cpu_threads_for(ctx: AuditContext) -> Iterator[None]:
    """One intra-op thread for a small model on a CPU: its matrices are too small for threads to pay, and
    on a busy 2-core machine two threads made the audit ~5× slower than one. Restored afterwards."""
    small = sum(p.numel() for p in ctx.models["policy"].parameters()) < 20_000_000
    if ctx.device.type != "cpu" or not small:
        yield
        return
    with one_thread():
        yield


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread inside the block; the previous count restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure_tensions(ctx: AuditContext, modules=TENSIONS) -> tuple[dict[str, dict], dict[str, float]]:
    """Each tension's section measured on `ctx` ({name: section}), and the seconds each took: the one loop that a
    run's audit, an audit of two given models and the training callback (`rlhf_lab.integrations`) all go through."""
    tensions, seconds = {}, {}
    for module in modules:
        t = time.time()
        tensions[module.NAME] = module.measure(ctx)
        seconds[module.NAME] = round(time.time() - t, 2)
    return tensions, seconds


def run_audit(run_dir: str | Path, checkpoint: int | None = None, *, sizes: AuditSizes | None = None,
              log: bool = True) -> dict:
    """Audit a run (its final policy, or the one saved at update `checkpoint`) and write `audit.json`."""
    t0 = time.time()
    RunFolder(run_dir).require_policy(checkpoint=checkpoint)
    ctx = AuditContext(run_dir, checkpoint=checkpoint, sizes=sizes)
    with cpu_threads_for(ctx):
        tensions, seconds = measure_tensions(ctx)
    audit = {
        "run": str(ctx.run.root),
        "checkpoint": checkpoint,
        "policy_path": str(ctx.policy_path),
        "has_world": ctx.has_world,
        "sizes": asdict(ctx.sizes),
        "seconds": round(time.time() - t0, 2),
        "seconds_by_tension": seconds,
        "tensions": tensions,
        "samples": pick_samples(ctx),
    }
    audit["flat"] = flatten(tensions)
    write_json(ctx.run / "audit.json", audit)
    ctx.run.record_output("audit.json")  # what it measured, so a later rerun of a step marks it stale
    if log:
        ctx.run.log({"phase": "audit", "checkpoint": checkpoint, "audit/seconds": audit["seconds"], **audit["flat"]})
    return audit
