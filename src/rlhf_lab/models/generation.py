"""The generation backend: sampling, policy optimisation and the audit all generate through here.

One small interface, `generate(model, prompts) -> responses`, so that a serving engine can be plugged in
later without touching the algorithms. Two backends:
- `loop` (default): a plain sampling loop over the model's forward with a KV cache. Same sampling
  distribution as HF `generate` (temperature, optional top-k) with less per-step overhead, and it takes
  a `torch.Generator`, so a seed gives the same samples on every run.
- `hf`: `model.generate`, the reference.

Shapes: B batch, P prompt tokens (left padded), R response tokens (right padded after EOS), V vocab.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlhf_lab.models.lm import position_ids_from_mask


@dataclass
class Batch:
    """Left-padded prompts. input_ids, attention_mask: (B, P)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return Batch(ids.to(device), mask.to(device))


def _unwrap(model):
    """The underlying HF model of a PEFT wrapper or of an adapters-off reference view."""
    model = getattr(model, "_policy", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def cache_kwarg(model) -> str:
    """The name under which this transformers version takes the KV cache ("cache", formerly past_key_values)."""
    params = inspect.signature(_unwrap(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(model):
    model = _unwrap(model)
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:
        return DynamicCache()


def on_device(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """A generator usable on `device`. Callers keep one CPU generator (its state is what checkpoints save);
    on an accelerator a device generator is seeded from it, one draw per call, so runs stay reproducible."""
    if generator is None or generator.device.type == torch.device(device).type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def sample_loop(
    model,
    batch: Batch,
    *,
    max_new_tokens: int,
    temperature: float,
    eos_token_id: int,
    pad_token_id: int,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample responses, (B, R) with R ≤ max_new_tokens; tokens after EOS are `pad_token_id`."""
    ids, mask = batch.input_ids, batch.attention_mask
    generator = on_device(generator, ids.device)
    B = ids.shape[0]
    key = cache_kwarg(model)
    cache = new_cache(model)
    positions = position_ids_from_mask(mask)
    next_pos = positions[:, -1] + 1  # (B,)
    out = torch.full((B, max_new_tokens), pad_token_id, dtype=torch.long, device=ids.device)
    finished = torch.zeros(B, dtype=torch.bool, device=ids.device)
    step_ids, step_pos = ids, positions
    for t in range(max_new_tokens):
        logits = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, use_cache=True,
                       logits_to_keep=1, **{key: cache}).logits[:, -1, :].float()  # (B, V)
        logits = logits / temperature
        logits[:, pad_token_id] = float("-inf")  # padding is never a word; see `masked_logprobs`
        if top_k:
            kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)
        tok = torch.where(finished, torch.full_like(tok, pad_token_id), tok)
        out[:, t] = tok
        finished |= tok == eos_token_id
        if bool(finished.all()):
            return out[:, : t + 1]
        step_ids = tok[:, None]
        step_pos = next_pos[:, None]
        next_pos = next_pos + 1
        mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=mask.device)], dim=1)
    return out


@torch.no_grad()
def sample_hf(
    model,
    batch: Batch,
    *,
    max_new_tokens: int,
    temperature: float,
    eos_token_id: int,
    pad_token_id: int,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The same through HF `generate` (seeded by the global torch RNG, not `generator`)."""
    seqs = model.generate(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        do_sample=True,
        temperature=temperature,
        top_k=top_k or None,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        suppress_tokens=[pad_token_id],
    )
    resp = seqs[:, batch.input_ids.shape[1]:]
    # HF pads finished rows with pad_token_id already; make sure nothing follows an EOS.
    after_eos = (resp == eos_token_id).long().cumsum(-1) - (resp == eos_token_id).long()
    return resp.masked_fill(after_eos > 0, pad_token_id)


BACKENDS = {"loop": sample_loop, "hf": sample_hf}


def generate(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    eos_token_id: int,
    pad_token_id: int,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    backend: str = "loop",
    progress=None,
) -> list[list[int]]:
    """Responses (token ids, cut after EOS) for each prompt (token ids), in order."""
    fn = BACKENDS[backend]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[list[int]] = []
    # Similar lengths together: less padding, and results are put back in order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, list[int]] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        batch = left_pad([prompts[i] for i in idx], pad_token_id, device)
        resp = fn(model, batch, max_new_tokens=max_new_tokens, temperature=temperature,
                  eos_token_id=eos_token_id, pad_token_id=pad_token_id, generator=generator)
        for row, i in zip(resp.tolist(), idx, strict=True):
            results[i] = strip_response(row, eos_token_id, pad_token_id)
        if progress is not None:
            progress(len(idx))
    out = [results[i] for i in range(len(prompts))]
    model.train(was_training)
    return out


def strip_response(row: Sequence[int], eos_token_id: int, pad_token_id: int) -> list[int]:
    """Tokens up to and including the first EOS; trailing padding removed."""
    res = []
    for t in row:
        if t == eos_token_id:
            res.append(t)
            break
        if t == pad_token_id:
            break
        res.append(t)
    return res
