"""Forwards that compute each prompt once for all of its completions (RLOO's k, GRPO's G).

The k completions of a prompt share its tokens, so their hidden states over the prompt are identical. The
prompt goes through the model once; its KV cache is then indexed to every completion and the completions
attend to it. Indexing is differentiable, so the gradient of every completion flows back into the one
prompt forward: the result equals k separate forwards (tests/test_algorithms.py) with (k−1)/k fewer prompt
tokens, in training and in the frozen reference.

Shapes: N distinct prompts, P prompt tokens (left padded), b completions, R response tokens (right padded),
V vocab.
"""

from __future__ import annotations

import torch
from torch import nn

from rlhf_lab.models.generation import prompt_then_responses


def grouped_response_logits(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_of: torch.Tensor,
                            responses: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Logits that predict each response token, (b, R, V). prompt_ids, prompt_mask (N, P); prompt_of (b,): the
    prompt row of each completion; responses, response_mask (b, R).

    Naive equivalent: logits of model(cat(prompt_ids[prompt_of], responses)) at positions P−1 … P+R−2."""
    # each prompt once (its last logits predict the first response token), then the responses through its cache
    prompts, rest = prompt_then_responses(model, prompt_ids, prompt_mask, prompt_of, responses, response_mask,
                                          logits_to_keep=1)
    return torch.cat([prompts.logits[prompt_of], rest.logits[:, :-1]], 1)  # (b, 1 + R − 1, V)


class GroupedLM(nn.Module):
    """`grouped_response_logits` as one module call, so that a DDP wrapper sees one forward per backward."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, prompt_ids, prompt_mask, prompt_of, responses, response_mask) -> torch.Tensor:
        return grouped_response_logits(self.lm, prompt_ids, prompt_mask, prompt_of, responses, response_mask)


def distinct_prompts(idx: torch.Tensor, k: int, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, slice]:
    """For completions `idx` (b,) of a batch whose rows come k per prompt (siblings adjacent, each row carrying
    its prompt): one row per distinct prompt (n,), the index of each completion's prompt among them (b,), and
    the prompt columns that are not padding in all of them."""
    groups, prompt_of = torch.unique(idx // k, return_inverse=True)
    rows = groups * k  # the first sibling of each group
    lo = int(prompt_mask[rows].argmax(1).min())  # first real prompt token in any of these prompts
    return rows, prompt_of, slice(lo, prompt_mask.shape[1])
