"""How wide is one run's interval? Each saved evaluation point of a run, evaluated again on N held-out prompts,
and the gain of its best point and of its end over the SFT policy (update 0), paired over those prompts.

    python benchmarks/eval_prompts.py RUN_DIR [RUN_DIR ...] --prompts 1024 [--out DIR] [--json PATH]

A point is the policy the run saved at that update (checkpoints/step_NNNNN; update 0 is the SFT policy); its
answers are drawn as the run's own evaluation draws them (evaluate_policy, the run's evaluation seed, every
prompt in one batch), so with the run's eval.n_prompts it gives the run's own records again, answer for answer.
Training does not read the evaluation, so these are the records a run with `eval.n_prompts=N` would have
written. OUT/<run>/step_NNNNN.jsonl (optional) holds them in the format of checkpoints/evals/."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from figures import stamp

from rlhf_lab.audit.overoptimisation import gold_gain
from rlhf_lab.config import load_config
from rlhf_lab.runfolder import RunFolder, write_jsonl
from rlhf_lab.steps.common import Context
from rlhf_lab.steps.evaluate import evaluate_policy
from rlhf_lab.steps.policy.loop import eval_seed


def evaluate_points(run: Path, n: int) -> dict[int, list[dict]]:
    """Update → per-prompt records of that saved point on n held-out prompts."""
    cfg = load_config(run / "config.yaml", overrides=[f"eval.n_prompts={n}", f"eval.batch_size={n}"])
    ctx = Context(cfg, RunFolder(run))
    ref, rm = ctx.sft_lm().eval(), ctx.reward_model().eval()
    prompts = ctx.world.prompts("eval", n, seed=cfg.seed)
    ids = ctx.prompt_ids(prompts)
    points = [0, *sorted(int(p.name.split("_")[1]) for p in (run / "checkpoints").glob("step_*") if p.is_dir())]
    out = {}
    for u in points:
        model = ref if u == 0 else ctx.trained_policy(run / "checkpoints" / f"step_{u:05d}", sampler=ref, reward=rm)
        _, out[u] = evaluate_policy(ctx, model.eval(), ref=ref, rm=rm, prompts=prompts, prompt_ids=ids,
                                    generator=torch.Generator().manual_seed(eval_seed(cfg.seed)),
                                    temperature=cfg.generation.temperature,
                                    max_new_tokens=cfg.generation.max_new_tokens, with_kl=u > 0)
    return out


def summarise(records: dict[int, list[dict]]) -> dict:
    mean = {u: sum(r["gold"] for r in rs) / len(rs) for u, rs in records.items()}
    kl = {u: sum(r["kl"] for r in rs) / len(rs) for u, rs in records.items()}
    best, end = max(mean, key=mean.get), max(records)
    return {"prompts": len(records[0]), "best": best, "best_kl": kl[best], "gain": gold_gain(records, best),
            "end_kl": kl[end], "end_gain": gold_gain(records, end),
            "points_below_2_nats": sum(v < 2 for v in kl.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--prompts", type=int, default=1024, help="Held-out prompts per point.")
    ap.add_argument("--out", type=Path, help="Write each point's records to OUT/<run>/step_NNNNN.jsonl.")
    ap.add_argument("--json", type=Path, help="Write the rows (with the date and commit) here.")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for run in args.runs:
        t = time.process_time()
        records = evaluate_points(run, args.prompts)
        if args.out:
            for u, rs in records.items():
                write_jsonl(args.out / run.name / f"step_{u:05d}.jsonl", rs)
        row = {"run": str(run), **summarise(records), "cpu_s": round(time.process_time() - t, 1)}
        rows.append(row)
        g, e = row["gain"], row["end_gain"]
        print(f"{run}: {row['prompts']} prompts; best point {row['best']} (KL {row['best_kl']:.2f}) gain "
              f"{g['value']:+.3f} [{g['lo']:+.3f}, {g['hi']:+.3f}]; end (KL {row['end_kl']:.2f}) {e['value']:+.3f} "
              f"[{e['lo']:+.3f}, {e['hi']:+.3f}]; {row['cpu_s']} CPU-s", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**stamp(), "prompts": args.prompts, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
