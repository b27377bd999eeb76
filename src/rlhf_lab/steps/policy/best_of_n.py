"""Step 4, alternative — best-of-n: no training. The "policy" samples n completions from the SFT model and
answers with the one the reward model scores highest (Stiennon et al. 2020; Gao et al. 2022 use it to chart
over-optimisation). log n − (n − 1)/n is only an upper bound on its KL to the SFT policy (Beirami et al. 2024),
reached when samples never repeat; the KL logged (`eval/kl`) is estimated from each prompt's samples
(`models.best_of_n.kl_plugin`) and the bound is logged beside it (`eval/kl_bound`).

`run/policy/` holds the SFT weights plus `best_of_n.json` ({"n": …}); whoever evaluates the policy reads that
file and selects among n samples (`evaluate_best_of_n`). Evaluation points are n = 1, 2, 4, …, n (logged with
step = n), all from one draw of n samples per prompt, so the curve costs one evaluation.
"""

from __future__ import annotations

import math

import torch

from rlhf_lab.models.best_of_n import MARKER, BestOfN, kl_bound, kl_plugin
from rlhf_lab.models.lm import save_lm
from rlhf_lab.models.tokenizer import decode_response
from rlhf_lab.runfolder import atomic_dir, write_json
from rlhf_lab.steps.common import Context, seed_everything
from rlhf_lab.steps.evaluate import summarize
from rlhf_lab.steps.policy.loop import eval_seed, reference_and_reward, report_final, save_policy
from rlhf_lab.ui import progress


def evaluate_best_of_n(ctx: Context, sampler, rm, prompts, ns: list[int], *, generator: torch.Generator,
                       temperature: float, max_new_tokens: int) -> dict[int, tuple[dict, list[dict]]]:
    """Best-of-n for every n in `ns`: max(ns) samples per prompt, drawn once; best-of-n picks among the first n.
    Returns {n: (summary, per-sample records)} in the format of `evaluate_policy`."""
    tok, world = ctx.tokenizer, ctx.world
    pad, eos = tok.pad_token_id, tok.eos_token_id
    n_max = max(ns)
    with progress(f"Best-of-{n_max} samples", len(prompts) * n_max) as advance:
        resp, proxy = BestOfN(sampler, rm, n_max).draw(
            ctx.prompt_ids(prompts), pad_token_id=pad, batch_size=ctx.cfg.eval.batch_size,
            max_new_tokens=max_new_tokens, temperature=temperature, eos_token_id=eos, generator=generator,
            progress=advance, cuda_graph=ctx.cfg.model.cuda_graphs)  # responses prompt-major; proxy (prompts, n_max)
    keys = [[tuple(resp[i * n_max + j]) for j in range(n_max)] for i in range(len(prompts))]  # same text = same answer
    out = {}
    for n in ns:
        best = proxy[:, :n].argmax(1)  # (prompts,)
        records = []
        for i, (p, j) in enumerate(zip(prompts, best, strict=True)):
            r = resp[i * n_max + int(j)]
            text = decode_response(tok, r)
            records.append({
                "prompt_id": p.id, "family": p.family, "user_group": p.user_group, "prompt": ctx.prompt_text(p),
                "response": text, "proxy": float(proxy[i, j]), "gold": world.gold(p, text),
                "kl": kl_plugin(proxy[i], keys[i], n), "kl_bound": kl_bound(n),
                "length": len(r), "stopped": bool(r) and r[-1] == eos, "well_formed": world.parse(text, p).well_formed,
            })
        out[n] = (summarize(records), records)
    return out


def run_best_of_n(ctx: Context) -> dict:
    """Evaluate best-of-n at n = 1, 2, 4, …, n; write `run/policy/` (SFT weights + best_of_n.json)."""
    cfg = ctx.cfg.policy
    seed_everything(ctx.cfg.seed + 4)
    sft, rm = reference_and_reward(ctx)
    n = cfg.n
    ns = sorted({2**i for i in range(int(math.log2(n)) + 1)} | {n})
    prompts = ctx.world.prompts("eval", ctx.cfg.eval.n_prompts, seed=ctx.cfg.seed)
    results = evaluate_best_of_n(ctx, sft, rm, prompts, ns,
                                 generator=torch.Generator().manual_seed(eval_seed(ctx.cfg.seed)),
                                 temperature=ctx.cfg.generation.temperature,
                                 max_new_tokens=ctx.cfg.generation.max_new_tokens)
    for k in ns:
        summary = results[k][0]
        ctx.run.log({"step": k, "phase": "policy", **summary, "eval/kl_bound": kl_bound(k), "best_of_n/n": k,
                     "best_of_n/proxy_gain": summary["eval/proxy_reward"] - results[1][0]["eval/proxy_reward"]})
        if ctx.is_main:  # the "policy" at this evaluation point, for the audit: SFT weights + its n
            with atomic_dir(ctx.run / "checkpoints" / f"step_{k:05d}") as tmp:
                save_lm(sft, ctx.tokenizer, tmp)
                write_json(tmp / MARKER, {"n": k})
    last_eval = results[n][0]
    save_policy(ctx, sft, last_eval, extra_files={MARKER: {"n": n}})
    report_final(f"Best-of-{n}", last_eval)
    return last_eval
