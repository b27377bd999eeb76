"""Losses and per-token quantities as small pure tensor functions; trainers only orchestrate.

Each is tested against a naive loop in tests/test_losses.py.

Shapes: B batch, T tokens of a full sequence, R response tokens, V vocab. `mask` is 1 on real response
tokens (up to and including EOS) and 0 on padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf_lab.models.logprobs import token_logprobs  # noqa: F401 (one definition, shared with evaluation and the audit)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, *, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        var = var * n / (n - 1).clamp(min=1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True,
                  moments: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """(x − mean) / std over the masked entries; with shift_mean=False the mean is added back.

    `moments` = (mean, unbiased var) computed elsewhere, e.g. over every process's batch."""
    mean, var = moments if moments is not None else (masked_mean(x, mask), masked_var(x, mask))
    white = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        white = white + mean
    return white * mask.to(x.dtype)


def entropy_from_logits(logits: torch.Tensor, *, pad_token_id: int | None = None) -> torch.Tensor:
    """H(π) = −Σ_v π(v)·log π(v) per position, (…, V) → (…).

    With `pad_token_id` the pad token is left out of the distribution, as in `token_logprobs` and in sampling,
    so the entropy is that of the distribution the completions were drawn from."""
    logits = logits.float()
    if pad_token_id is not None:
        logits = logits.clone()
        logits[..., pad_token_id] = float("-inf")
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)  # 0·log 0 = 0 for the excluded token


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy on response tokens only. logits (B, T, V); labels (B, T) with -100 on the
    prompt and padding. Token t's label is predicted from position t − 1. reduction: mean | sum."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])  # (B·(T−1), V)
    shift_labels = labels[:, 1:].reshape(-1)  # (B·(T−1),)
    return F.cross_entropy(shift_logits.float(), shift_labels, ignore_index=-100, reduction=reduction)


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor,
                       margin: torch.Tensor | None = None) -> torch.Tensor:
    """−log σ(r_c − r_r − m), mean over pairs (Bradley & Terry 1952; Ouyang et al. 2022, eq. 1). (B,) → ()."""
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from samples of π (Schulman 2020, "Approximating KL").

    k1 = log π − log π_ref (unbiased, can be negative); k3 = (r − 1) − log r with r = π_ref / π
    (unbiased, always ≥ 0, lower variance). (B, R) → (B, R)."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r} (expected k1 or k3)")


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), backwards over the response.

        δ_t = r_t + γ V_{t+1} − V_t,   A_t = δ_t + γλ A_{t+1},   returns = A + V

    Values beyond the last real token are 0 (the episode ends at EOS). (B, R) each → (B, R), (B, R)."""
    values = values * mask
    rewards = rewards * mask
    R = rewards.shape[1]
    last = torch.zeros_like(rewards[:, 0])
    adv = torch.zeros_like(rewards)
    for t in reversed(range(R)):
        next_value = values[:, t + 1] if t + 1 < R else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        last = last * mask[:, t]
        adv[:, t] = last
    returns = adv + values
    return adv, returns


def ppo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, *, cliprange: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise. (B, R) each → ()."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_losses2 > pg_losses).float(), mask),
            "approxkl": 0.5 * masked_mean(log_ratio**2, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def ppo_value_loss(vpred: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   *, cliprange_value: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss: ½ · max((V − R)², (clip(V, V_old ± ε_v) − R)²). (B, R) each → ()."""
    vpredclipped = old_values + torch.clamp(vpred - old_values, -cliprange_value, cliprange_value)
    vf_losses1 = (vpred - returns) ** 2
    vf_losses2 = (vpredclipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((vf_losses2 > vf_losses1).float(), mask),
                 "error": masked_mean(vf_losses1, mask)}
    return loss, stats


# -- DPO (Rafailov et al. 2023) -------------------------------------------------------------------------------
# h = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)], per pair; the implicit reward of a
# response is β·(log π − log π_ref). Each variant maps (h, β, ε) to a per-pair loss, (B,) → (B,).


def dpo_sigmoid_loss(h: torch.Tensor, *, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """−(1−ε)·log σ(β·h) − ε·log σ(−β·h): DPO's eq. 7 at ε = 0; conservative DPO (Mitchell 2023) at ε > 0."""
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def dpo_robust_loss(h: torch.Tensor, *, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """[−(1−ε)·log σ(β·h) + ε·log σ(−β·h)] / (1 − 2ε): unbiased when a share ε of the labels is flipped
    (Chowdhury et al. 2024, "Provably robust DPO")."""
    eps = label_smoothing
    return (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)


DPO_LOSSES = {"sigmoid": dpo_sigmoid_loss, "robust": dpo_robust_loss}


def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, *, beta: float, label_smoothing: float = 0.0,
             variant: str = "sigmoid") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean DPO loss over pairs from sequence logprobs Σ_t log π(y_t | x, y_<t). (B,) each → ()."""
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    losses = DPO_LOSSES[variant](chosen_logratios - rejected_logratios, beta=beta, label_smoothing=label_smoothing)
    with torch.no_grad():
        chosen_rewards, rejected_rewards = beta * chosen_logratios, beta * rejected_logratios
        stats = {"rewards/chosen": chosen_rewards.mean(), "rewards/rejected": rejected_rewards.mean(),
                 "rewards/margin": (chosen_rewards - rejected_rewards).mean(),
                 "rewards/accuracy": (chosen_rewards > rejected_rewards).float().mean()}
    return losses.mean(), stats


# -- Critic-free: RLOO (Ahmadian et al. 2024) and GRPO (Shao et al. 2024) --------------------------------------
# Rewards come in groups of k completions of the same prompt: (N, k), N prompts.


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE with a leave-one-out baseline: A_i = r_i − 1/(k−1) Σ_{j≠i} r_j. (N, k) → (N, k).

    Naive form: for each i, the mean of the other k − 1 rewards of its group, subtracted from r_i."""
    k = rewards.shape[1]
    if k < 2:
        raise ValueError("RLOO needs at least 2 completions per prompt")
    baseline = (rewards.sum(1, keepdim=True) - rewards) / (k - 1)  # (N, k)
    return rewards - baseline


def grpo_advantages(rewards: torch.Tensor, *, eps: float = 1e-4) -> torch.Tensor:
    """Group-normalised outcome advantages: A_i = (r_i − mean(r)) / (std(r) + eps) within each group, std with
    Bessel's correction (Shao et al. 2024, §4.1.2). (N, G) → (N, G)."""
    mean = rewards.mean(1, keepdim=True)
    std = rewards.std(1, keepdim=True) if rewards.shape[1] > 1 else torch.zeros_like(mean)
    return (rewards - mean) / (std + eps)


def grpo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                     advantages: torch.Tensor, mask: torch.Tensor, *, cliprange: float,
                     beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO's objective as a loss (Shao et al. 2024, eq. 3): per token −min(ρ·A, clip(ρ, 1±ε)·A) + β·k3(π ‖ π_ref),
    averaged over each completion's tokens (1/|o_i|) and then over completions.

    logprobs, old_logprobs, ref_logprobs, mask (B, R); advantages (B,) → ()."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    adv = advantages[:, None]  # (B, 1): one advantage for every token of a completion
    pg_losses = -adv * ratio
    pg_losses2 = -adv * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    per_token = torch.max(pg_losses, pg_losses2)
    kl = kl_per_token(logprobs, ref_logprobs, "k3")
    if beta:
        per_token = per_token + beta * kl
    loss = masked_mean(per_token, mask, dim=1).mean()
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((pg_losses2 > pg_losses).float(), mask),
                 "approxkl": 0.5 * masked_mean(log_ratio**2, mask),
                 "ratio": masked_mean(ratio, mask),
                 "kl": masked_mean(kl, mask)}
    return loss, stats


def bradley_terry_nll(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Per-pair −log σ(r_c − r_r), (B,) → (B,) (for weighted or sharded means)."""
    return -F.logsigmoid(r_chosen - r_rejected)


def probit_preference_nll(mu_c: torch.Tensor, sd_c: torch.Tensor, mu_r: torch.Tensor,
                          sd_r: torch.Tensor) -> torch.Tensor:
    """Mean–variance preference likelihood (Siththaranjan et al. 2023, DPL): utilities u ~ N(μ, σ²), so
    P(c ≻ r) = Φ((μ_c − μ_r) / √(σ_c² + σ_r²)). Per-pair −log of it, (B,) each → (B,)."""
    z = (mu_c - mu_r) / torch.sqrt(sd_c**2 + sd_r**2 + 1e-6)
    return -torch.special.log_ndtr(z)
