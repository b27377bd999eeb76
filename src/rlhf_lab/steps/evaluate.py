"""Evaluation on held-out prompts: proxy reward (the reward model), gold utility (the world) and KL to the
reference, per sample and aggregated. Used at every evaluation point of policy optimisation and for the
final SFT-vs-policy comparison (the full audit lives in `rlhf_lab.audit`)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from rlhf_lab.models.best_of_n import BestOfN
from rlhf_lab.models.generation import generate
from rlhf_lab.models.logprobs import sequence_kl
from rlhf_lab.models.reward_set import score_tokens
from rlhf_lab.models.tokenizer import decode_response
from rlhf_lab.text_metrics import distinct_ngrams, distinct_words, repeated_ngram_share, same_opener_flags


def evaluate_policy(ctx, policy, *, ref, rm, prompts, generator: torch.Generator, temperature: float,
                    max_new_tokens: int, with_kl: bool = True,
                    prompt_ids: list[list[int]] | None = None) -> tuple[dict, list[dict]]:
    """Sample one completion per prompt and measure it. Returns (summary, per-sample records). `prompt_ids`:
    the prompts already tokenised (`ctx.prompt_ids(prompts)`), for a caller that evaluates them repeatedly."""
    tok = ctx.tokenizer
    pad = tok.pad_token_id
    p_ids = ctx.prompt_ids(prompts) if prompt_ids is None else prompt_ids
    resp = generate(policy, p_ids, max_new_tokens=max_new_tokens, temperature=temperature,
                    eos_token_id=tok.eos_token_id, pad_token_id=pad, generator=generator,
                    batch_size=ctx.cfg.eval.batch_size, cuda_graph=ctx.cfg.model.cuda_graphs)
    proxy, members = score_tokens(rm, p_ids, resp, pad_id=pad)  # (N,) the optimised score; (K, N) each member's
    kl = sequence_kl(policy, ref, p_ids, resp, pad_id=pad, temperature=temperature) if with_kl else \
        np.zeros(len(prompts))
    records = []
    world = ctx.world
    for p, r, s, k in zip(prompts, resp, proxy, kl, strict=True):
        text = decode_response(tok, r)
        feats = world.parse(text, p)
        records.append({
            "prompt_id": p.id, "family": p.family, "user_group": p.user_group, "prompt": ctx.prompt_text(p),
            "response": text, "proxy": float(s), "gold": world.gold(p, text), "kl": float(k), "length": len(r),
            "stopped": bool(r) and r[-1] == tok.eos_token_id, "well_formed": feats.well_formed,
        })
    summary = summarize(records)
    if len(rm.names) > 1 and len(prompts):
        # Ensemble disagreement (Coste et al. 2023 use it as the uncertainty penalty) and each member's mean:
        # for per-group reward models, what each group's model thinks of the policy.
        summary["eval/reward_disagreement"] = float(members.std(0).mean())
        for name, row in zip(rm.names, members, strict=True):
            summary[f"eval/proxy_reward/member/{name}"] = float(row.mean())
    return summary, records


def summarize(records: list[dict], prefix: str = "eval") -> dict:
    """Means over records, overall and per family and per user group."""
    if not records:
        return {}
    out = {
        f"{prefix}/proxy_reward": float(np.mean([r["proxy"] for r in records])),
        f"{prefix}/proxy_reward_std": float(np.std([r["proxy"] for r in records])),
        f"{prefix}/gold_utility": float(np.mean([r["gold"] for r in records])),
        f"{prefix}/kl": float(np.mean([r["kl"] for r in records])),
        f"{prefix}/length": float(np.mean([r["length"] for r in records])),
        f"{prefix}/stop_rate": float(np.mean([r["stopped"] for r in records])),
        f"{prefix}/well_formed": float(np.mean([r["well_formed"] for r in records])),
        f"{prefix}/n": len(records),
    }
    # Degeneration read off the text alone (the early-warning detectors' signals; never gold)
    texts = [r["response"] for r in records]
    out[f"{prefix}/repeated_ngram_share"] = float(np.mean([repeated_ngram_share(t) for t in texts]))
    out[f"{prefix}/distinct_words"] = float(np.mean([distinct_words(t) for t in texts]))
    out[f"{prefix}/distinct_2"] = distinct_ngrams(texts, 2)
    out[f"{prefix}/same_opener"] = float(np.mean(same_opener_flags(texts)[0]))
    out[f"{prefix}/sqrt_kl"] = float(np.sqrt(max(out[f"{prefix}/kl"], 0.0)))
    for key in ("family", "user_group"):
        groups: dict[str, list[float]] = defaultdict(list)
        for r in records:
            groups[r[key]].append(r["gold"])
        name = "group" if key == "user_group" else key
        for g, vals in groups.items():
            out[f"{prefix}/gold_utility/{name}/{g}"] = float(np.mean(vals))
    return out


def point_records(ctx, folder) -> dict[str, list[dict]]:
    """The records policy optimisation already wrote for the two models the evaluation step compares: its first
    evaluation point (update 0, the SFT policy) and the one the saved policy is (policy/final_eval.json's
    "update"), when both were taken on this config's held-out prompts. Same prompts, seed and batches as the
    step would use, so they are the step's records without a second generation; {} when there are none."""
    import json

    from rlhf_lab.runfolder import read_jsonl

    meta = folder / "final_eval.json"
    update = json.loads(meta.read_text(encoding="utf-8")).get("update") if meta.exists() else None
    if update is None:
        return {}
    evals = ctx.run / "checkpoints" / "evals"
    paths = {"sft": evals / "step_00000.jsonl", "policy": evals / f"step_{update:05d}.jsonl"}
    if not all(p.exists() for p in paths.values()):
        return {}
    out = {name: read_jsonl(p) for name, p in paths.items()}
    if any(len(rows) != ctx.cfg.eval.n_prompts for rows in out.values()):
        return {}
    return out


def sample_records(ctx, folder) -> dict[str, list[dict]]:
    """Both models' records sampled here, on the held-out prompts with the evaluation points' seed: for a policy
    without evaluation points (best-of-n) or a run folder from before they were kept."""
    from rlhf_lab.models.run_models import policy_kind
    from rlhf_lab.steps.policy.loop import eval_seed

    ref = ctx.sft_lm().to(ctx.device).eval()
    rm = ctx.reward_model().to(ctx.device).eval()
    # before policy optimisation has run, "policy" is the SFT policy itself
    policy = ctx.trained_policy(folder, sampler=ref, reward=rm).to(ctx.device).eval() if policy_kind(folder) else ref
    prompts = ctx.world.prompts("eval", ctx.cfg.eval.n_prompts, seed=ctx.cfg.seed)
    out = {}
    for name, model in (("sft", ref), ("policy", policy)):
        generator = torch.Generator().manual_seed(eval_seed(ctx.cfg.seed))
        if isinstance(model, BestOfN):
            # best-of-n: SFT sampling plus a choice by the reward model, not a model of its own
            from rlhf_lab.steps.policy.best_of_n import evaluate_best_of_n

            n = model.n
            _, out[name] = evaluate_best_of_n(ctx, ref, rm, prompts, [n], generator=generator,
                                              temperature=ctx.cfg.generation.temperature,
                                              max_new_tokens=ctx.cfg.generation.max_new_tokens)[n]
        else:
            _, out[name] = evaluate_policy(ctx, model, ref=ref, rm=rm, prompts=prompts, generator=generator,
                                           temperature=ctx.cfg.generation.temperature,
                                           max_new_tokens=ctx.cfg.generation.max_new_tokens)
    return out


def run_evaluate(ctx) -> dict:
    """SFT policy vs trained policy on the same held-out prompts, with the same sampling seed: the seed of the
    evaluation points, whose records it reuses where policy optimisation wrote them (`point_records`) and
    samples otherwise (`sample_records`)."""
    from rlhf_lab.runfolder import write_json, write_jsonl
    from rlhf_lab.steps.common import seed_everything
    from rlhf_lab.ui import info

    seed_everything(ctx.cfg.seed + 9)
    folder = ctx.run / "policy"
    records = point_records(ctx, folder) or sample_records(ctx, folder)
    out = {}
    for name in ("sft", "policy"):
        out[name] = summarize(records[name], prefix=name)
        if ctx.is_main:
            write_jsonl(ctx.run / "eval" / f"{name}_samples.jsonl", records[name])
    if ctx.is_main:
        write_json(ctx.run / "eval" / "summary.json", out)
    ctx.run.log({"phase": "evaluate", **out["sft"], **out["policy"]})
    d_proxy = out["policy"]["policy/proxy_reward"] - out["sft"]["sft/proxy_reward"]
    s, p = out["sft"], out["policy"]
    info(f"Evaluation: proxy reward {s['sft/proxy_reward']:+.2f} → {p['policy/proxy_reward']:+.2f} "
         f"({d_proxy / max(out['sft']['sft/proxy_reward_std'], 1e-6):+.2f} SFT std); gold utility "
         f"{out['sft']['sft/gold_utility']:+.2f} → {out['policy']['policy/gold_utility']:+.2f}")
    return out
