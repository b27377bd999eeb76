"""How much of the world's knowledge a run's SFT model holds: its answers to held-out plain questions, per
kind of fact and difficulty, greedy (what it knows) and sampled at T = 1 (what it says).

    python benchmarks/sft_knowledge.py RUN_DIR [--n 600] [--temperature 0.05 1.0] [--json PATH]

A reward model is the SFT network with a scalar head, so what the SFT trunk does not know, the reward model
cannot check either (docs/world.md, "Why RLHF can help here before it over-optimises")."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
from figures import stamp

from rlhf_lab.config import build_config, read_yaml
from rlhf_lab.models.generation import generate
from rlhf_lab.models.tokenizer import decode_response
from rlhf_lab.runfolder import RunFolder
from rlhf_lab.steps.common import Context


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=600, help="held-out plain questions")
    ap.add_argument("--temperature", type=float, nargs="+", default=[0.05, 1.0],
                    help="sampling temperatures (0.05 is greedy in effect)")
    ap.add_argument("--json", type=Path, default=None, help="Also write the rows to this file (for measured.py).")
    args = ap.parse_args()
    run = RunFolder(args.run)
    ctx = Context(build_config(read_yaml(run.config_path)), run)
    model, tok = ctx.sft_lm().eval(), ctx.tokenizer
    prompts = ctx.world.prompts("eval", args.n, seed=5, families=("question",))
    ids = ctx.prompt_ids(prompts)
    print("| T | kind | difficulty | n | right | no answer |\n|---|---|---|---|---|---|")
    rows = []
    for temperature in args.temperature:
        responses = generate(model, ids, max_new_tokens=ctx.cfg.generation.max_new_tokens, temperature=temperature,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                             generator=torch.Generator().manual_seed(0))
        by_kind: dict[tuple[str, float], list] = defaultdict(list)
        for p, r in zip(prompts, responses, strict=True):
            by_kind[(p.fact.kind, round(p.difficulty, 1))].append(ctx.world.parse(decode_response(tok, r), p).correct)
        everything = [c for v in by_kind.values() for c in v]
        for (kind, diff), v in [*sorted(by_kind.items()), (("all", float("nan")), everything)]:
            right = sum(1 for c in v if c) / len(v)
            none = sum(1 for c in v if c is None) / len(v)
            print(f"| {temperature:g} | {kind} | {diff:g} | {len(v)} | {100 * right:.0f} % | {100 * none:.0f} % |")
            rows.append({"temperature": temperature, "kind": kind, "difficulty": None if kind == "all" else diff,
                         "n": len(v), "right": right, "no_answer": none})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**stamp(), "run": str(args.run), "sft_epochs": ctx.cfg.sft.epochs,
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
