"""Log-probabilities of responses under a causal LM, and the sequence KL every user of a policy reports.

Training (the per-token KL penalty), evaluation and the audit all measure KL(π ‖ π_ref) with the functions
here, so the three cannot drift apart.

Shapes: B batch, P prompt tokens (left padded), R response tokens (right padded), T = P + R, V vocab.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rlhf_lab.models.generation import Batch, left_pad
from rlhf_lab.models.lm import position_ids_from_mask


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, *, temperature: float = 1.0,
                   pad_token_id: int | None = None) -> torch.Tensor:
    """log π(token) under logits / T (the distribution sampled from), (B, R, V), (B, R) → (B, R).

    The pad token is excluded from the distribution, as it is when sampling."""
    logits = logits.float() / temperature
    if pad_token_id is not None:
        logits = logits.clone()
        logits[..., pad_token_id] = float("-inf")
    logp = logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if pad_token_id is not None:  # padding after EOS has no probability; give it 0, not −inf, so masks work
        logp = logp.masked_fill(tokens == pad_token_id, 0.0)
    return logp


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> torch.Tensor:
    """Token lists → (B, width) right padded with `pad_id` (width: the longest, at least 1)."""
    width = width or max(1, max((len(s) for s in seqs), default=1))
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(list(s)[:width], dtype=torch.long)
    return out


def join_query_response(query: Batch, responses: torch.Tensor, pad_token_id: int) -> tuple[torch.Tensor, ...]:
    """Concatenate left-padded queries and right-padded responses.

    query (B, P), responses (B, R) → input_ids (B, T), attention_mask (B, T), position_ids (B, T),
    response_mask (B, R). Pad never occurs inside a response (it is never sampled)."""
    response_mask = (responses != pad_token_id).long()  # (B, R)
    input_ids = torch.cat([query.input_ids, responses], dim=1)  # (B, T)
    attention_mask = torch.cat([query.attention_mask, response_mask], dim=1)  # (B, T)
    return input_ids, attention_mask, position_ids_from_mask(attention_mask), response_mask


def response_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                    P: int) -> torch.Tensor:
    """Logits that predict each response token: positions P−1 … T−2 of the sequence. → (B, R, V)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   logits_to_keep=input_ids.shape[1] - P + 1).logits  # positions P−1 … T−1
    return logits[:, :-1]


def sequence_kl_from_logprobs(logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                              mask: torch.Tensor) -> torch.Tensor:
    """Σ_t (log π(y_t) − log π_ref(y_t)) over a sequence's response tokens: the k1 estimate of KL(π ‖ π_ref)
    per sample. logprobs, ref_logprobs, mask (B, R) → (B,)."""
    return ((logprobs - ref_logprobs) * mask).sum(1)


@torch.no_grad()
def sequence_kl(policy, ref, prompt_ids: list[list[int]], response_ids: list[list[int]], *, pad_id: int,
                temperature: float, batch_size: int = 128) -> np.ndarray:
    """The k1 estimate of KL(π ‖ π_ref) for each sampled (prompt, response), from both models' logprobs under
    logits / T. → (N,) nats per sequence."""
    device = next(policy.parameters()).device
    kl = np.zeros(len(prompt_ids))
    # Batches of similar lengths (less padding; on held-out answers of 1 to 40 words, half the work); results
    # are put back in order.
    order = sorted(range(len(prompt_ids)), key=lambda i: (len(response_ids[i]), len(prompt_ids[i])))
    for i in range(0, len(order), batch_size):
        idx = order[i: i + batch_size]
        q = left_pad([prompt_ids[j] for j in idx], pad_id, device)  # (B, P)
        resp = right_pad([response_ids[j] or [pad_id] for j in idx], pad_id).to(device)  # (B, R)
        ids, mask, pos, rmask = join_query_response(q, resp, pad_id)
        P = q.input_ids.shape[1]
        lp = token_logprobs(response_logits(policy, ids, mask, pos, P), resp, temperature=temperature,
                            pad_token_id=pad_id)
        ref_lp = token_logprobs(response_logits(ref, ids, mask, pos, P), resp, temperature=temperature,
                                pad_token_id=pad_id)
        kl[idx] = sequence_kl_from_logprobs(lp, ref_lp, rmask).float().cpu().numpy()
    return kl
