"""What every training step shares (`rlhf_lab.steps.common`)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlhf_lab.steps.common import adamw


def _train(make_optimizer, steps: int = 6) -> torch.Tensor:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, max_position_embeddings=32))
    opt = make_optimizer(model.parameters())
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(0, 50, (4, 12), generator=g)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_the_optimiser_every_step_uses_matches_the_per_tensor_adamw_bit_for_bit():
    # foreach=True is chosen for speed only: it must not change a single trained weight
    ours = _train(lambda ps: adamw(ps, lr=1e-2, weight_decay=0.1, eps=1e-5))
    naive = _train(lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, eps=1e-5, foreach=False))
    assert torch.equal(ours, naive)
    assert not torch.equal(ours, _train(lambda ps: torch.optim.AdamW(ps, lr=1e-2, foreach=False), steps=0))
