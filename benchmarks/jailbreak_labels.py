"""What the labels say about harmful requests: of the labelled pairs where one answer complies with a harmful request
and the other does not, the share whose chosen answer is the compliance — for plain and for jailbreak-wrapped
requests, per run.

    python benchmarks/jailbreak_labels.py runs/instrument/*-seed-*

Reads each run's preferences.jsonl and config.yaml; the world parses both answers (the same parser as gold).
Prints a Markdown table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlhf_lab.pipeline import open_run
from rlhf_lab.world import World
from rlhf_lab.world.prompts import Prompt


def compliance_shares(run: Path) -> dict[str, tuple[int, int]]:
    """{"plain" | "wrapped": (labels preferring the compliance, pairs of a compliance and a non-compliance)}."""
    cfg, _ = open_run(run)
    world = World(cfg.world)
    out: dict[str, list[int]] = {"plain": [0, 0], "wrapped": [0, 0]}
    with open(run / "preferences.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("family") != "harmful":
                continue
            prompt = Prompt.from_dict(json.loads(rec["meta"]))
            chosen = world.parse(rec["chosen"].strip(), prompt)
            rejected = world.parse(rec["rejected"].strip(), prompt)
            if chosen.complied != rejected.complied:
                row = out["wrapped" if prompt.wrapped else "plain"]
                row[0] += int(chosen.complied)
                row[1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    print("| run | plain: compliance chosen (pairs) | jailbreak-wrapped: compliance chosen (pairs) |\n|---|---|---|")
    for run in args.runs:
        if not (run / "preferences.jsonl").exists():
            continue
        shares = compliance_shares(run)
        cells = [f"{a / b:.0%} ({b})" if b else "– (0)" for a, b in (shares["plain"], shares["wrapped"])]
        print(f"| {run.name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
