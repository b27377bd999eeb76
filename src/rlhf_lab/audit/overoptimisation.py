"""Reward over-optimisation (Goodhart's law), after Gao, Schulman & Hilton 2022, "Scaling Laws for Reward
Model Overoptimization" (arXiv:2210.10760).

The policy is optimised for the proxy (the reward model); the gold utility is what the user actually gets.
Both are plotted against the distance from the initial policy, d = √KL(π ‖ π_SFT):

- RL: the evaluation points logged during policy optimisation (metrics.jsonl, `eval/*`).
- Best-of-n from the SFT policy: for n = 1 … N keep the sample the proxy ranks highest. log n − (n − 1)/n is
  an upper bound on its KL (Beirami et al. 2024), reached only when samples never tie; a small model's
  answers repeat, so the KL on the axis is estimated: best-of-n's KL over the empirical distribution of the N
  SFT samples of each prompt (`models.best_of_n.kl_plugin`), averaged over prompts. Both are in the section
  ("kl_bound", "kl_estimate"). From N samples per prompt the expected best-of-n is computed exactly (no
  resampling): the i-th lowest-scored sample is the best of a random n-subset with probability
  C(i − 1, n − 1) / C(N, n).
- A best-of-n *policy* (policy.algorithm=best_of_n) is measured the same way: its "kl" metric is the
  estimate, and the section's "best_of_n" entry holds n, the bound and the estimate.
- Least-squares fits of the gains over the SFT policy, R(d) − R(0):
  R_bon(d) = d(α − β d) and R_RL(d) = d(α − β ln d), with their coefficients and R².
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from rlhf_lab.audit import prose, stats
from rlhf_lab.audit.plots import finished
from rlhf_lab.audit.prose import NO_WORLD
from rlhf_lab.models.best_of_n import kl_bound as kl_bon
from rlhf_lab.models.best_of_n import kl_plugin

if TYPE_CHECKING:
    from rlhf_lab.audit.sampling import AuditContext

NAME = "overoptimisation"
TITLE = "Over-optimisation (Goodhart)"
GOLD_TRAINED = ("This run's policy was optimised for gold utility itself (policy.optimise: gold), a control: the "
                "reward model's proxy is only read. A fall in gold here is the optimiser's, not Goodhart's law.")


def bon_weights(N: int, ns: list[int]) -> np.ndarray:
    """W[j, i] = P(the i-th lowest of N samples is the best of a random ns[j]-subset). → (len(ns), N)."""
    W = np.zeros((len(ns), N))
    for j, n in enumerate(ns):
        total = math.comb(N, n)
        W[j] = [math.comb(i, n - 1) / total for i in range(N)]  # i = rank − 1
    return W


def best_of_n(proxy: np.ndarray, gold: np.ndarray | None, ns: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Expected proxy and gold of best-of-n per prompt. proxy, gold: (P, N) → (P, len(ns)) each."""
    P, N = proxy.shape
    if P == 0 or N == 0:
        return np.zeros((P, len(ns))), None if gold is None else np.zeros((P, len(ns)))
    order = np.argsort(proxy, axis=1, kind="stable")  # (P, N) ascending by proxy
    W = bon_weights(N, ns)  # (J, N)
    bon_proxy = np.take_along_axis(proxy, order, 1) @ W.T  # (P, J)
    bon_gold = None if gold is None else np.take_along_axis(gold, order, 1) @ W.T
    return bon_proxy, bon_gold


def _fit(d: np.ndarray, y: np.ndarray, second: np.ndarray) -> dict:
    """Least squares y ≈ α·d − β·second (no intercept: both forms are 0 at d = 0), with R²."""
    ok = np.isfinite(d) & np.isfinite(y) & np.isfinite(second)
    d, y, second = d[ok], y[ok], second[ok]
    if len(d) < 2 or np.allclose(d, 0):
        return {"alpha": None, "beta": None, "r2": None, "n": len(d)}
    X = np.stack([d, -second], axis=1)  # (n, 2)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else None
    return {"alpha": float(coef[0]), "beta": float(coef[1]), "r2": r2, "n": len(d)}


def fit_bon(d, r) -> dict:
    """Fit R_bon(d) = d(α − β d)."""
    d = np.asarray(d, dtype=float)
    return _fit(d, np.asarray(r, dtype=float), d * d)


def fit_rl(d, r) -> dict:
    """Fit R_RL(d) = d(α − β ln d) (d ln d → 0 as d → 0)."""
    d = np.asarray(d, dtype=float)
    dlog = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
    return _fit(d, np.asarray(r, dtype=float), dlog)


def fitted(form: str, fit: dict, d: np.ndarray) -> np.ndarray | None:
    if fit.get("alpha") is None:
        return None
    a, b = fit["alpha"], fit["beta"]
    if form == "bon":
        return d * (a - b * d)
    return d * (a - b * np.log(np.where(d > 0, d, 1.0)))


def fitted_peak(form: str, fit: dict) -> float | None:
    """d at which the fitted curve peaks (None when it never turns down)."""
    a, b = fit.get("alpha"), fit.get("beta")
    if a is None or b is None or b <= 0:
        return None
    if form == "bon":
        return a / (2 * b) if a > 0 else None
    return float(math.exp(a / b - 1))


def peak_text(form: str, fit: dict, curve: list[dict]) -> str | None:
    """The fitted peak as the report states it: "d = 0.81 (KL 0.7)"; None when the fit never turns down; and, where
    it turns down only far past the data (beyond twice the largest d measured), that instead of an extrapolated
    number (a nearly straight curve puts the peak of d(α − β ln d) at astronomically large d)."""
    d_star = fitted_peak(form, fit)
    if d_star is None:
        return None
    d_max = max((c.get("d") or 0.0 for c in curve), default=0.0)
    if d_max > 0 and d_star > 2 * d_max:
        return f"beyond the data (no turn within 2 × the largest d, {d_max:.2f})"
    return f"d = {d_star:.2f} (KL {d_star ** 2:.1f})"


def training_curve(metrics: list[dict]) -> list[dict]:
    """The policy's evaluation points: step, proxy, gold, KL, d = √KL."""
    out = []
    for m in metrics:
        if m.get("phase") == "policy" and "eval/proxy_reward" in m:
            kl = float(m.get("eval/kl", 0.0))
            point = {"step": int(m.get("step", 0)), "proxy": float(m["eval/proxy_reward"]),
                     "gold": m.get("eval/gold_utility"), "kl": kl, "d": math.sqrt(max(kl, 0.0))}
            # several reward models (ensemble, per group): their disagreement and each one's mean score
            if "eval/reward_disagreement" in m:
                point["disagreement"] = float(m["eval/reward_disagreement"])
                point["members"] = {k.rsplit("/", 1)[1]: float(v) for k, v in m.items()
                                    if k.startswith("eval/proxy_reward/member/")}
            out.append(point)
    return out


def gold_gain(records: dict[int, list[dict]], step: int) -> dict | None:
    """Gold at evaluation point `step` minus gold at update 0 (the SFT policy), paired over the held-out prompts
    (every point samples the same prompts with the same seed), with a bootstrap 95 % interval; None without
    the per-prompt records of both points (`checkpoints/evals/step_NNNNN.jsonl`, written by the policy loop)."""
    if step not in records or 0 not in records:
        return None
    before = {r["prompt_id"]: r["gold"] for r in records[0]}
    pairs = [(before[r["prompt_id"]], r["gold"]) for r in records[step] if r["prompt_id"] in before]
    return stats.difference([a for a, _ in pairs], [b for _, b in pairs], paired=True, seed=step)


def cross_fit_rise_fall(gold: np.ndarray) -> dict | None:
    """Rise (gold at the best point − at the first) and fall (at the best − at the last) of a curve, each
    prompt read at the best point of the other half of the prompts (stats.cross_fit_argmax). gold: (P, J) per
    prompt × point in curve order, J = 0 the start. The argmax's own rise and fall are ≥ 0 even on a flat curve
    (the maximum of noisy means); read on prompts that did not choose it, each is 0 in expectation when gold
    does not move, so "rise then fall" across seeds is not noise."""
    P, J = gold.shape
    if P < 2 or J < 2:
        return None
    at_best = gold[np.arange(P), stats.cross_fit_argmax(gold)]  # (P,)
    return {"rise": float((at_best - gold[:, 0]).mean()), "fall": float((at_best - gold[:, -1]).mean())}


def _records_matrix(records: dict[int, list[dict]], steps: list[int]) -> np.ndarray | None:
    """(P, J) gold of the prompts every point in `steps` has, rows sorted by prompt id; None if a point lacks
    per-prompt records."""
    if not records or any(s not in records for s in steps):
        return None
    by_step = [{str(r["prompt_id"]): r["gold"] for r in records[s]} for s in steps]
    ids = sorted(set.intersection(*(set(b) for b in by_step)))
    return np.array([[b[i] for b in by_step] for i in ids], dtype=float).reshape(len(ids), len(steps))


def eval_records(run) -> dict[int, list[dict]]:
    """Per-prompt records of every evaluation point the policy loop kept, by update."""
    from rlhf_lab.runfolder import read_jsonl

    folder = run / "checkpoints" / "evals"
    if not folder.is_dir():
        return {}
    return {int(p.stem.split("_")[1]): read_jsonl(p) for p in sorted(folder.glob("step_*.jsonl"))}


def _rl_section(curve: list[dict], has_gold: bool, records: dict[int, list[dict]] | None = None) -> dict:
    """The RL evaluation points, the fits, and the gold peak. With per-prompt records, the peak and the last
    point carry their paired gold gain over the SFT policy ("gain": did RLHF help there, beyond noise?)."""
    if not curve:
        return {"curve": [], "fit": {}, "peak": None}
    base = curve[0]
    d = np.array([c["d"] for c in curve])
    fits = {"proxy": fit_rl(d, np.array([c["proxy"] - base["proxy"] for c in curve]))}
    peak = None
    if has_gold and all(c["gold"] is not None for c in curve):
        fits["gold"] = fit_rl(d, np.array([c["gold"] - base["gold"] for c in curve]))
        best = max(curve, key=lambda c: c["gold"])
        peak = {"step": best["step"], "kl": best["kl"], "d": best["d"], "gold": best["gold"],
                "fitted_d": fitted_peak("rl", fits["gold"]),
                "gain": gold_gain(records or {}, best["step"]),
                "final_gain": gold_gain(records or {}, curve[-1]["step"]), "final_step": curve[-1]["step"]}
        matrix = _records_matrix(records or {}, [c["step"] for c in curve])
        peak["cross_fit"] = None if matrix is None else cross_fit_rise_fall(matrix)
    return {"curve": curve, "fit": fits, "peak": peak}


def bon_kl_estimates(groups: list, ns: list[int]) -> np.ndarray:
    """KL(π_bon ‖ π_SFT) for each prompt's samples (`Sample`s: proxy, response_ids) and each n, over the empirical
    distribution of that prompt's samples (identical token sequences are one answer). → (P, len(ns)) nats."""
    return np.array([[kl_plugin([s.proxy for s in g], [tuple(s.response_ids) for s in g], n) for n in ns]
                     for g in groups]).reshape(len(groups), len(ns))


def _best_of_n_policy(ctx: AuditContext) -> dict | None:
    """For a best-of-n policy: its n, the bound log n − (n − 1)/n and the KL estimated from SFT samples."""
    n = ctx.best_of_n
    if n is None:
        return None
    est = ctx.best_of_n_kl(n)  # (prompts,)
    return {"n": n, "kl_bound": float(kl_bon(n)), "kl_estimate": stats.mean(est, seed=51),
            "samples_per_prompt": min((len(g) for g in ctx.multi_samples("sft")), default=0),
            "note": "KL of best-of-n: log n − (n − 1)/n is an upper bound (Beirami et al. 2024), reached only when "
                    "no two samples tie; the estimate is best-of-n's KL over the empirical distribution of the SFT "
                    "samples of each prompt, the number used for the policy's KL here."}


def _bon_section(ctx: AuditContext) -> dict:
    groups = ctx.multi_samples("sft")
    N = min(len(g) for g in groups) if groups else 0
    if N < 1 or ctx.rm is None:
        return {"curve": [], "fit": {}, "peak": None, "n_prompts": len(groups)}
    ns = sorted({n for n in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256) if n <= N} | {N})
    proxy = np.array([[s.proxy for s in g[:N]] for g in groups])  # (P, N)
    gold = np.array([[s.gold for s in g[:N]] for g in groups], dtype=float) if ctx.has_world else None
    bp, bg = best_of_n(proxy, gold, ns)  # (P, J)
    kl = bon_kl_estimates(groups, ns)  # (P, J) estimated; the bound beside it for reference
    d = np.sqrt(kl.mean(0))  # (J,): best-of-n on the axis of the RL points (√ of an estimated KL)
    curve = []
    for j, n in enumerate(ns):
        row = {"n": n, "kl": float(kl[:, j].mean()), "kl_estimate": stats.mean(kl[:, j], seed=50 + j),
               "kl_bound": float(kl_bon(n)), "d": float(d[j]), "proxy": stats.mean(bp[:, j], seed=j)}
        if bg is not None:
            row["gold"] = stats.mean(bg[:, j], seed=j)
        curve.append(row)
    fits = {"proxy": fit_bon(d, bp.mean(0) - bp[:, 0].mean())}
    peak = None
    if bg is not None:
        g = bg.mean(0)
        fits["gold"] = fit_bon(d, g - g[0])
        j = int(np.argmax(g))
        peak = {"n": ns[j], "kl": float(kl[:, j].mean()), "kl_bound": float(kl_bon(ns[j])), "d": float(d[j]),
                "gold": float(g[j]), "fitted_d": fitted_peak("bon", fits["gold"]),
                # gold at the largest n minus gold at the peak, paired over prompts: has it turned down?
                "drop_to_N": stats.mean(bg[:, -1] - bg[:, j], seed=99), "cross_fit": cross_fit_rise_fall(bg)}
    return {"curve": curve, "fit": fits, "peak": peak, "n_prompts": len(groups), "N": N}


def measure(ctx: AuditContext) -> dict:
    sft, pol = ctx.eval_records("sft"), ctx.eval_records("policy")
    by_id = {r["prompt_id"]: r for r in pol}
    pairs = [(s, by_id[s["prompt_id"]]) for s in sft if s["prompt_id"] in by_id]
    metrics = {
        "proxy": stats.compare([a["proxy"] for a, _ in pairs], [b["proxy"] for _, b in pairs], kind="mean",
                               label="proxy reward (reward model)", better=None, seed=1),
        "kl": stats.compare([0.0 for _ in pairs], [b["kl"] for _, b in pairs], kind="mean",
                            label="KL to the SFT policy (nats / sequence)" if ctx.best_of_n is None else
                            "KL to the SFT policy (nats; best-of-n: estimated from SFT samples, not the bound)",
                            better=None, seed=2, unit="nats"),
        "length": stats.compare([a["length"] for a, _ in pairs], [b["length"] for _, b in pairs], kind="mean",
                                label="response length (tokens)", better=None, seed=3, unit="tokens"),
    }
    if ctx.has_world:
        metrics["gold"] = stats.compare([a["gold"] for a, _ in pairs], [b["gold"] for _, b in pairs], kind="mean",
                                        label="gold utility (true benefit)", better="higher", seed=4)
    curve = training_curve(ctx.run.metrics())
    if ctx.best_of_n is not None and ctx.rm is not None:
        # a best-of-n run logs its evaluation points at step = n with the bound as KL: put them on the axis of
        # the estimate, the bound kept beside it
        groups = ctx.multi_samples("sft")
        for c in curve:
            c["kl_bound"] = float(kl_bon(max(c["step"], 1)))  # the step of a best-of-n point is its n
            c["kl"] = float(bon_kl_estimates(groups, [max(c["step"], 1)]).mean()) if groups else c["kl"]
            c["d"] = math.sqrt(max(c["kl"], 0.0))
    if not ctx.has_world:  # a real model's "gold" in the logs is the world's parser misreading it
        for c in curve:
            c["gold"] = None
    rl = _rl_section(curve, ctx.has_world, eval_records(ctx.run))
    gold_trained = getattr(ctx.cfg.policy, "optimise", "proxy") == "gold"  # the control: no proxy to exploit
    return {"title": TITLE, "metrics": metrics, "rl": rl, "bon": _bon_section(ctx),
            "best_of_n": _best_of_n_policy(ctx), "checkpoint": ctx.checkpoint,
            "optimised": "gold" if gold_trained else "proxy",
            "notes": ([] if ctx.has_world else [f"Gold utility: {NO_WORLD}."])
            + ([GOLD_TRAINED] if gold_trained else [])}


# -- the report ------------------------------------------------------------------------------------------


def plot(section: dict, plt):
    """Proxy (reward-model units) and gold (utility) on separate panels, each against d = √KL, with the RL
    evaluation points and best-of-n from the SFT policy on the same axis; each fit drawn over its data only."""
    rl, bon = section.get("rl", {}), section.get("bon", {})
    curve, bcurve = rl.get("curve", []), bon.get("curve", [])
    if not curve and not bcurve:
        return None
    has_gold = bool(curve and curve[0].get("gold") is not None) or bool(bcurve and "gold" in bcurve[0])
    gold_trained = section.get("optimised") == "gold"
    keys = [("proxy", "proxy reward (reward-model units;\nSFT samples: mean 0, std 1)",
             "Proxy reward: only read (gold was optimised)" if gold_trained else
             "Proxy reward: what the policy was optimised for")]
    if has_gold:
        keys.append(("gold", "gold utility (true benefit\nto the asking user)",
                     "Gold utility: what the user gets (and what was optimised)" if gold_trained else
                     "Gold utility: what the user gets"))
    fig, axes = plt.subplots(1, len(keys), figsize=(11 if len(keys) == 2 else 6.5, 3.8), squeeze=False)
    for ax, (key, ylabel, title) in zip(axes[0], keys, strict=True):
        if curve and curve[0].get(key) is not None:
            d = np.array([c["d"] for c in curve])
            y = np.array([c[key] for c in curve])
            ax.plot(d, y, "o", color="tab:blue", ms=5, label="policy optimisation (evaluation points)")
            grid = np.linspace(d.min(), d.max(), 60)  # a fit is drawn over the range of its data only
            f = fitted("rl", rl.get("fit", {}).get(key, {}), grid)
            if f is not None:
                ax.plot(grid, f + y[0], "-", color="tab:blue", alpha=0.6,
                        label=f"fit d(α − β ln d), R² {_r2(rl['fit'][key])}")
            if section.get("checkpoint") is not None:
                ax.axvline(next((c["d"] for c in curve if c["step"] == section["checkpoint"]), 0), color="grey",
                           ls=":", label="audited checkpoint")
        if bcurve and key in bcurve[0]:
            d = np.array([c["d"] for c in bcurve])
            y = np.array([c[key]["value"] for c in bcurve])
            lo = np.array([c[key]["lo"] for c in bcurve])
            hi = np.array([c[key]["hi"] for c in bcurve])
            ax.errorbar(d, y, yerr=[y - lo, hi - y], fmt="s", color="tab:green", capsize=2, ms=4,
                        label=f"best-of-n from SFT ({bon.get('n_prompts', 0)} prompts, 95 % CI)")
            grid = np.linspace(d.min(), d.max(), 60)
            f = fitted("bon", bon.get("fit", {}).get(key, {}), grid)
            if f is not None:
                ax.plot(grid, f + y[0], "-", color="tab:green", alpha=0.6,
                        label=f"fit d(α − βd), R² {_r2(bon['fit'][key])}")
            step = max(1, len(bcurve) // 5)
            for c in bcurve[::step]:  # which n each best-of-n point is, beside the point (no second axis)
                ax.annotate(f"n={c['n']}", (c["d"], c[key]["value"]), textcoords="offset points", xytext=(3, -10),
                            fontsize=7, color="tab:green")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        _finish(ax)
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            lab = lab.split(",")[0] if lab.startswith("fit") and len(axes[0]) > 1 else lab  # R² differs per panel
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(handles)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def _finish(ax) -> None:
    ax.set_xlabel("d = √KL(π ‖ π_SFT)  (√nats)")
    ax.axhline(0, color="k", lw=0.4) if ax.get_ylim()[0] < 0 < ax.get_ylim()[1] else None
    ax.grid(alpha=0.3)


def _r2(fit: dict) -> str:
    return "—" if fit.get("r2") is None else f"{fit['r2']:.2f}"


def training_plot(section: dict, plt):
    """Proxy, gold and KL over the updates, each on its own axis and in its own unit."""
    curve = section.get("rl", {}).get("curve", [])
    if not curve:
        return None
    has_gold = curve[0].get("gold") is not None
    fig, axes = plt.subplots(1, 3 if has_gold else 2, figsize=(11, 2.9))
    steps = [c["step"] for c in curve]
    ax = axes[0]
    ax.plot(steps, [c["proxy"] for c in curve], "o-", color="tab:blue", ms=4, label="proxy reward")
    if "disagreement" in curve[0]:  # a set of reward models: where they part ways, the proxy is least trusted
        ax.plot(steps, [c.get("disagreement") for c in curve], "d:", color="tab:red",
                label="members' disagreement (std)")
        for name in curve[0].get("members", {}):
            ax.plot(steps, [c.get("members", {}).get(name) for c in curve], "-", lw=0.8, alpha=0.5,
                    label=f"member {name}")
        ax.legend(fontsize=7, frameon=False)
    gold_trained = section.get("optimised") == "gold"
    ax.set_title("Proxy reward (only read)" if gold_trained else "Proxy reward (what was optimised)", fontsize=10)
    ax.set_ylabel("reward-model units")
    if has_gold:
        axes[1].plot(steps, [c["gold"] for c in curve], "s-", color="tab:orange", ms=4)
        axes[1].set_title("Gold utility (true benefit; optimised)" if gold_trained else "Gold utility (true benefit)",
                          fontsize=10)
        axes[1].set_ylabel("utility")
    axes[-1].plot(steps, [c["kl"] for c in curve], "^-", color="tab:purple", ms=4)
    axes[-1].set_title("KL to the SFT policy", fontsize=10)
    axes[-1].set_ylabel("nats per answer")
    for a in axes:
        a.set_xlabel("policy update")
        a.grid(alpha=0.3)
    return finished(fig)


def reading(section: dict) -> str:
    m = section.get("metrics", {})
    gold_trained = section.get("optimised") == "gold"
    parts = [prose.change_sentence(m["proxy"], "The proxy reward (only read: this run optimised gold itself)"
                                   if gold_trained else "The proxy reward (what the policy was optimised for)")]
    if "gold" in m:
        parts.append(prose.change_sentence(m["gold"], "Gold utility (the true benefit, which this control run "
                                           "optimised directly)" if gold_trained else
                                           "Gold utility (the true benefit, which training never sees)"))
    kl = m.get("kl", {}).get("policy", {})
    if kl.get("value") is not None:
        parts.append(f"The policy ended {kl['value']:.1f} nats of KL from the SFT policy "
                     f"(d = √KL = {max(kl['value'], 0) ** 0.5:.2f}).")
    rl = section.get("rl", {})
    peak, curve = rl.get("peak"), rl.get("curve", [])
    if peak and curve:
        last = curve[-1]
        if peak["step"] == last["step"]:
            parts.append(f"Gold utility was highest at the last evaluation point (update {peak['step']}): no turn "
                         "down yet along this run.")
        else:
            g = m.get("gold", {}).get("policy") or {}
            noise = (f" (One evaluation point averages {g['n']} held-out prompts: differences under about "
                     f"{(g['hi'] - g['lo']) / 2:.2f} are within noise.)" if g.get("lo") is not None else "")
            where = ("before any optimisation, in the SFT policy," if peak["step"] == curve[0]["step"] else
                     f"at update {peak['step']} (KL {peak['kl']:.1f} nats)")
            # the peak and the last point are two noisy means: their difference has √2 their half-width
            real_drop = g.get("lo") is not None and peak["gold"] - last["gold"] > 1.41 * (g["hi"] - g["lo"]) / 2
            rising = last["proxy"] >= max(c["proxy"] for c in curve) - 0.05
            parts.append(f"Gold utility was highest {where} at {peak['gold']:+.2f} and ended at "
                         f"{last['gold']:+.2f}, while the proxy went "
                         f"{'up' if last['proxy'] > curve[0]['proxy'] else 'down'} to {last['proxy']:+.2f}"
                         + (" — gold fell though gold was what was optimised: the optimiser's doing, not "
                            "Goodhart's." if real_drop and gold_trained else
                            " — the proxy kept paying after the true benefit stopped: Goodhart's law."
                            if real_drop and rising else " — but that fall is within the noise of two evaluation "
                            "points." if not real_drop else ".")
                         + noise)
        gain = peak.get("gain")
        if gain and gain.get("lo") is not None and peak["step"] != curve[0]["step"]:
            helped = ("RLHF helped beyond noise there" if gain["lo"] > 0 else
                      "a gain within noise" if gain["hi"] >= 0 else "worse than the SFT policy")
            parts.append(f"At that best point gold was {prose.change_interval(gain)} above the SFT policy's, paired "
                         f"over {gain['n']} held-out prompts: {helped}.")
    bon = section.get("bon", {})
    bc = bon.get("curve", [])
    if bc and "gold" in bc[0]:
        bp, first, lastb = bon["peak"], bc[0], bc[-1]
        drop = bp.get("drop_to_N") or {}
        falls = drop.get("hi") is not None and drop["hi"] < 0
        head = (f"Best-of-n from the SFT policy: the proxy rises from {first['proxy']['value']:+.2f} (n = 1) to "
                f"{lastb['proxy']['value']:+.2f} (n = {lastb['n']}, KL {lastb['kl']:.1f} nats) by construction; ")
        if bp["n"] == lastb["n"]:
            tail = f"gold utility is highest at n = {bp['n']} ({bp['gold']:+.2f}): no turn down within this n."
        elif falls:
            tail = (f"gold utility peaks at n = {bp['n']} ({bp['gold']:+.2f}) and falls to "
                    f"{lastb['gold']['value']:+.2f} at n = {lastb['n']} (a drop of "
                    f"{prose.interval(prose.negated(drop))}, paired "
                    "over prompts): picking harder by the proxy picks worse answers — over-optimisation.")
        else:
            tail = (f"gold utility peaks at n = {bp['n']} ({bp['gold']:+.2f}) and is {lastb['gold']['value']:+.2f} at "
                    f"n = {lastb['n']}, but that change ({prose.interval(drop)}, paired over prompts) is within noise.")
        parts.append(head + tail)
    fits = []
    for name, form, part in (("RL", "rl", rl), ("best-of-n", "bon", bon)):
        fit = part.get("fit", {}).get("gold")
        if fit and fit.get("alpha") is not None:
            peak_at = peak_text(form, fit, part.get("curve", []))
            fits.append(f"{name} α = {fit['alpha']:.2f}, β = {fit['beta']:.2f} (R² {_r2(fit)}"
                        + (f", fitted peak {peak_at})" if peak_at else ")"))
    if fits:
        parts.append("Fitted gold gains (Gao et al. forms): " + "; ".join(fits) + ".")
    parts.extend(section.get("notes", []))
    return " ".join(parts)
