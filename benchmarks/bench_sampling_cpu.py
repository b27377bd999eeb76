"""CPU time of one `sample_loop` call on a run's SFT policy, one thread: what a PPO rollout (batch 64) and an
evaluation point or the sample step (batch 256) pay per batch. CPU time, not wall time, so that it can be read
on a shared machine; compare two versions of the code in one invocation by running it under each:

    python benchmarks/bench_sampling_cpu.py RUN                          # this checkout
    PYTHONPATH=OLD/src python benchmarks/bench_sampling_cpu.py RUN       # another one

RUN: a run folder with `sft/` done (any config; the defaults of the code that runs are used otherwise).
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    from rlhf_lab.config import Config
    from rlhf_lab.models.generation import left_pad, sample_loop
    from rlhf_lab.runfolder import RunFolder
    from rlhf_lab.steps.common import Context

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ctx = Context(Config(), RunFolder(args.run))
    tok, lm = ctx.tokenizer, ctx.sft_lm().eval()
    prompt_ids = ctx.prompt_ids(ctx.world.prompts("train", 256, seed=5))
    for batch_size in (64, 256):
        batch = left_pad(prompt_ids[:batch_size], tok.pad_token_id)
        gen = torch.Generator().manual_seed(0)

        def once(batch=batch, gen=gen) -> None:
            sample_loop(lm, batch, max_new_tokens=args.new_tokens, temperature=1.0, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id, generator=gen, cuda_graph=False)

        once()  # warm-up
        c0 = time.process_time()
        for _ in range(args.repeat):
            once()
        print(f"sample_loop batch {batch_size}: {(time.process_time() - c0) / args.repeat * 1000:.0f} ms CPU",
              flush=True)


if __name__ == "__main__":
    main()
