"""Step 1 — the SFT model produces k completions per prompt, and pairs are formed from them.

Writes `samples.jsonl` (one row per prompt with its k completions) and `pairs.jsonl` (one row per pair),
in the schema of `rlhf_lab.data`: each text sits beside the token ids it was sampled as, so the reward
model later trains on the very sequences the policy produced (decoding and re-encoding would not give them
back with a BPE tokenizer, and would add an EOS to responses cut at max_new_tokens).
"""

from __future__ import annotations

import itertools

import torch

from rlhf_lab.models.generation import generate
from rlhf_lab.models.tokenizer import decode_response
from rlhf_lab.runfolder import write_jsonl
from rlhf_lab.steps.common import Context, seed_everything
from rlhf_lab.ui import info, progress


def form_pairs(k: int, pairing: str) -> list[tuple[int, int]]:
    if pairing == "all":
        return list(itertools.combinations(range(k), 2))
    return [(i, i + 1) for i in range(0, k - 1, 2)]


def run_sample(ctx: Context) -> dict:
    cfg = ctx.cfg.sample
    gen = seed_everything(ctx.cfg.seed + 1)
    tok = ctx.tokenizer
    model = ctx.sft_lm().to(ctx.device)
    prompts = ctx.world.prompts("train", cfg.n_prompts, seed=ctx.cfg.seed)
    p_ids = ctx.prompt_ids(prompts)
    repeated = [ids for ids in p_ids for _ in range(cfg.k)]
    with progress("Sampling", len(repeated)) as advance:
        resp = generate(model, repeated, max_new_tokens=ctx.cfg.generation.max_new_tokens,
                        temperature=ctx.cfg.generation.temperature,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, batch_size=cfg.batch_size,
                        generator=gen, progress=advance, backend=ctx.cfg.model.generation_backend,
                        cuda_graph=ctx.cfg.model.cuda_graphs)
    samples, pairs = [], []
    n_identical = 0
    for i, prompt in enumerate(prompts):
        comps = resp[i * cfg.k: (i + 1) * cfg.k]  # ids as drawn: ending with EOS if the response stopped
        texts = [decode_response(tok, c) for c in comps]
        stopped = [bool(c) and c[-1] == tok.eos_token_id for c in comps]
        text = ctx.prompt_text(prompt)
        samples.append({"prompt_id": prompt.id, "prompt": text, "prompt_ids": p_ids[i], "meta": prompt.to_dict(),
                        "completions": texts, "completion_ids": comps, "stopped": stopped})
        for a, b in form_pairs(cfg.k, cfg.pairing):
            # same text means same judgement: a pair that differs only in token split teaches nothing
            if cfg.drop_identical and texts[a] == texts[b]:
                n_identical += 1
                continue
            pairs.append({"pair_id": f"{prompt.id}/{a}-{b}", "prompt_id": prompt.id, "family": prompt.family,
                          "prompt": text, "prompt_ids": p_ids[i], "response_a": texts[a], "response_b": texts[b],
                          "response_a_ids": comps[a], "response_b_ids": comps[b], "stopped_a": stopped[a],
                          "stopped_b": stopped[b], "meta": prompt.to_dict()})
    if ctx.is_main:
        write_jsonl(ctx.run / "samples.jsonl", samples)
        write_jsonl(ctx.run / "pairs.jsonl", pairs)
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    # an empty completion (EOS first) is kept: "said nothing" is an answer annotators judge (rlhf_lab.data)
    n_empty = sum(not t for s in samples for t in s["completions"])
    info(f"Sampling: {len(prompts)} prompts × {cfg.k} completions → {len(pairs)} pairs "
         f"({n_identical} identical pairs skipped; {n_empty} empty completions)")
    return {"pairs": len(pairs), "prompts": len(prompts), "identical_skipped": n_identical, "empty": n_empty}
