"""The generation backend: sampling, policy optimisation and the audit all generate through here.

One small interface, `generate(model, prompts) -> responses`, so that a serving engine can be plugged in
later without touching the algorithms. Two backends:
- `loop` (default): a plain sampling loop over the model's forward with a KV cache. Same sampling
  distribution as HF `generate` (temperature, optional top-k) with less per-step overhead, and it takes
  a `torch.Generator`, so a seed gives the same samples on every run.
  On a GPU it decodes with a static KV cache and a CUDA graph (`sample_static`).
- `hf`: `model.generate`, the reference.
- `static`: `sample_static` everywhere (on a CPU the same static-shape steps, eager).

Shapes: B batch, P prompt tokens (left padded), R response tokens (right padded after EOS), V vocab.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from contextlib import nullcontext
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


def new_cache(model, *, capacity: int = 0):
    """A KV cache for `model`. capacity > 0 (sampling, no gradients): each layer writes into a buffer of that many
    positions, allocated once, instead of concatenating at every token — on a CPU that copy was a third of a
    decoding step. The attention reads the same keys and values either way."""
    model = _unwrap(model)
    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=model.config)
    except TypeError:
        return DynamicCache()
    layers = getattr(cache, "layers", None)
    if capacity > 0 and layers and all(type(layer).__name__ == "DynamicLayer" for layer in layers):
        cache.layers = [_reserved_layer_class()(capacity) for _ in layers]
    return cache


@functools.cache
def _reserved_layer_class():
    """ReservedLayer: a DynamicLayer whose keys and values live in the first positions of a buffer of `capacity`
    positions (grown by doubling if a caller writes more); `keys`/`values` are views (B, H, n, D) of it. Built on
    first use: transformers is imported lazily."""
    from transformers.cache_utils import DynamicLayer

    class ReservedLayer(DynamicLayer):
        def __init__(self, capacity: int):
            super().__init__()
            self.capacity, self.n = capacity, 0
            self._k = self._v = None  # (B, H, capacity, D)

        def _views(self) -> None:
            self.keys, self.values = self._k[:, :, : self.n], self._v[:, :, : self.n]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.device, self.is_initialized = key_states.device, True
            new = key_states.shape[-2]
            if self._k is None or self.n + new > self._k.shape[2]:
                cap = max(self.capacity, 2 * (self.n + new))
                k = key_states.new_empty((*key_states.shape[:2], cap, key_states.shape[-1]))
                v = value_states.new_empty((*value_states.shape[:2], cap, value_states.shape[-1]))
                if self.n:
                    k[:, :, : self.n], v[:, :, : self.n] = self.keys, self.values
                self._k, self._v = k, v
            self._k[:, :, self.n: self.n + new] = key_states
            self._v[:, :, self.n: self.n + new] = value_states
            self.n += new
            self._views()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.n

        def reset(self) -> None:
            self.n, self._k, self._v = 0, None, None
            super().reset()

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError("crop takes the number of tokens to remove as a negative integer")
            if self.n:
                self.n = max(0, self.n + tokens_to_remove)
                self._views()

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.n:
                self._k, self._v = self._k.repeat_interleave(repeats, 0), self._v.repeat_interleave(repeats, 0)
                self._views()

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.n:
                self._k, self._v = self._k[indices], self._v[indices]
                self._views()

    return ReservedLayer


def prompt_then_responses(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_of: torch.Tensor,
                          responses: torch.Tensor, response_mask: torch.Tensor, **prompt_kwargs) -> tuple:
    """Each distinct prompt through `model` once, then every completion's responses attending to its prompt
    through the prompt's KV cache, indexed to the completions (differentiable, so gradients flow back into the
    one prompt forward). prompt_ids, prompt_mask (N, P) left padded; prompt_of (b,); responses, response_mask
    (b, R) right padded. Returns (the prompts' output, the responses' output)."""
    key, cache = cache_kwarg(model), new_cache(model)
    first = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids_from_mask(prompt_mask),
                  use_cache=True, **prompt_kwargs, **{key: cache})
    cache.batch_select_indices(prompt_of)  # every layer's K, V: (N, …) → (b, …)
    mask = torch.cat([prompt_mask[prompt_of], response_mask], 1)  # (b, P + R)
    positions = position_ids_from_mask(mask)[:, prompt_ids.shape[1]:]  # (b, R): continuing after the prompt
    rest = model(input_ids=responses, attention_mask=mask, position_ids=positions, use_cache=True, **{key: cache})
    return first, rest


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
    copies: int = 1,
    cuda_graph: bool = True,
) -> torch.Tensor:
    """Sample responses, (B, R) with R ≤ max_new_tokens; tokens after EOS are `pad_token_id`.

    With `copies` = k > 1, `batch` holds N distinct prompts and each is sampled k times: B = N·k rows, the k
    samples of a prompt adjacent. The prompts go through the model once (their KV cache is then repeated), so
    the samples are those of a batch holding every prompt k times, for 1/k of the prompt forward.

    On a GPU with `cuda_graph` the call goes to `sample_static`, whose decoding step is a CUDA graph."""
    ids, mask = batch.input_ids, batch.attention_mask
    if cuda_graph and ids.device.type == "cuda":
        return sample_static(model, batch, max_new_tokens=max_new_tokens, temperature=temperature,
                             eos_token_id=eos_token_id, pad_token_id=pad_token_id, top_k=top_k, generator=generator,
                             copies=copies, cuda_graph=True)
    generator = on_device(generator, ids.device)
    B = ids.shape[0] * copies
    key = cache_kwarg(model)
    cache = new_cache(model, capacity=ids.shape[1] + max_new_tokens)
    positions = position_ids_from_mask(mask)
    out = torch.full((B, max_new_tokens), pad_token_id, dtype=torch.long, device=ids.device)
    finished = torch.zeros(B, dtype=torch.bool, device=ids.device)
    live = None  # (b,) the rows the cache still holds, once finished rows have been dropped; None: all B
    step_ids, step_pos = ids, positions
    for t in range(max_new_tokens):
        logits = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, use_cache=True,
                       logits_to_keep=1, **{key: cache}).logits[:, -1, :].float()  # (b, V); (N, V) at t = 0
        if t == 0 and copies > 1:  # the prompts' cache, mask and last logits → every copy
            rows = torch.arange(ids.shape[0], device=ids.device).repeat_interleave(copies)  # (B,)
            cache.batch_select_indices(rows)
            logits, mask, positions = logits[rows], mask[rows], positions[rows]
        if t == 0:
            next_pos = positions[:, -1] + 1  # (B,)
        if live is not None:  # dropped rows draw from a placeholder (their draw becomes padding): see below
            logits = logits.new_zeros((B, logits.shape[1])).index_copy_(0, live, logits)  # (B, V)
        tok = _draw(logits, finished, out, t, temperature=temperature, top_k=top_k, eos_token_id=eos_token_id,
                    pad_token_id=pad_token_id, generator=generator)
        going = ~finished if live is None else ~finished[live]  # (b,) the cache's rows still decoding
        n_going = int(going.sum())  # one read of the device per token, which also says when every row is done
        if n_going == 0:
            return out[:, : t + 1]
        # Rows that have emitted EOS leave the batch once they are an eighth of it: a short answer then costs
        # its own tokens, not the longest answer's, and copying the cache happens a few dozen times at most.
        # Every row still draws each token (multinomial's random numbers are spent per row and word, whatever
        # the row's probabilities), so the samples are those of the full batch: the same draws as
        # `sample_static` and as before rows were dropped.
        if n_going * 8 <= 7 * going.numel():
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            mask, next_pos = mask[keep], next_pos[keep]
            live = keep if live is None else live[keep]
        step_ids = (tok if live is None else tok[live])[:, None]
        step_pos = next_pos[:, None]
        next_pos = next_pos + 1
        mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=mask.device)], dim=1)
    return out


def _draw(logits: torch.Tensor, finished: torch.Tensor, out: torch.Tensor, t: int, *, temperature: float, top_k: int,
          eos_token_id: int, pad_token_id: int, generator: torch.Generator | None) -> torch.Tensor:
    """Draw token t of every row from its logits (B, V), write it to out[:, t] (padding in finished rows) and
    mark rows that emitted EOS in `finished` (in place). Returns the tokens (B,)."""
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
    return tok


@torch.no_grad()
def sample_static(
    model,
    batch: Batch,
    *,
    max_new_tokens: int,
    temperature: float,
    eos_token_id: int,
    pad_token_id: int,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    copies: int = 1,
    cuda_graph: bool = True,
    check_every: int = 8,
) -> torch.Tensor:
    """`sample_loop` with a static KV cache of P + R slots, so that every decoding step has the same shapes and
    reads and writes the same memory. On a GPU the step's forward is then captured once as a CUDA graph and
    replayed for each token: one launch per token instead of a few hundred kernel launches, which is what
    bounds a small model's decoding there. Whether every row has finished is read every `check_every` tokens,
    so the host does not wait for the device at each token.

    Same distribution and, from the same generator, the same draws as `sample_loop` (up to floating-point
    rounding: attention runs over the cache's empty slots, masked). With `cuda_graph` off, or off a GPU, the
    same static-shape steps run eagerly (the tests check the mechanism that way)."""
    from transformers import StaticCache

    if copies > 1:  # the graph wants one batch size throughout: the prompts' forward is not shared here
        rows = torch.arange(batch.input_ids.shape[0], device=batch.input_ids.device).repeat_interleave(copies)
        batch = Batch(batch.input_ids[rows], batch.attention_mask[rows])
    ids, prompt_mask = batch.input_ids, batch.attention_mask
    device = ids.device
    generator = on_device(generator, device)
    B, P = ids.shape
    L = P + max_new_tokens
    lm = _unwrap(model)
    cache = StaticCache(config=lm.config, max_cache_len=L)
    key = cache_kwarg(model)
    # Which cache slots each row may attend to: its prompt (not the left padding) and every response slot;
    # a query at slot s sees slots ≤ s. (B, L) bool, and the 4-D masks HF takes as given: (B, 1, q, L).
    allowed = torch.cat([prompt_mask.bool(), torch.ones((B, max_new_tokens), dtype=torch.bool, device=device)], 1)
    slots = torch.arange(L, device=device)
    prefill_mask = allowed[:, None, None, :] & (slots[None, :] <= torch.arange(P, device=device)[:, None])[None, None]
    positions = position_ids_from_mask(prompt_mask)
    logits = model(input_ids=ids, attention_mask=prefill_mask, position_ids=positions, use_cache=True,
                   logits_to_keep=1, **{key: cache}).logits[:, -1, :].float()  # (B, V)

    # The step's inputs and outputs live in fixed tensors; the step advances its own slot and positions.
    tok_in = torch.zeros((B, 1), dtype=torch.long, device=device)
    pos = positions[:, -1:] + 1  # (B, 1)
    slot = torch.full((), P, dtype=torch.long, device=device)  # the slot the next token is written to
    step_logits = torch.empty_like(logits)

    def step() -> None:
        mask = (allowed & (slots <= slot))[:, None, None, :]  # (B, 1, 1, L)
        step_logits.copy_(model(input_ids=tok_in, attention_mask=mask, position_ids=pos, use_cache=True,
                                **{key: cache}).logits[:, -1, :])
        slot.add_(1)
        pos.add_(1)

    out = torch.full((B, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    graph = None
    for t in range(max_new_tokens):
        if t > 0:
            if graph is not None:
                graph.replay()
            elif cuda_graph and device.type == "cuda" and t == 1:
                graph = _warm_up_and_capture(step)
            else:
                step()
            logits = step_logits.float()
        tok = _draw(logits, finished, out, t, temperature=temperature, top_k=top_k, eos_token_id=eos_token_id,
                    pad_token_id=pad_token_id, generator=generator)
        tok_in.copy_(tok[:, None])
        if (t + 1) % check_every == 0 and bool(finished.all()):
            break
    # up to the last column any row used (every row draws a word at t = 0), as `sample_loop` returns
    return out[:, : int((out != pad_token_id).any(0).nonzero().max()) + 1]


_capture_failed: set[str] = set()


def _warm_up_and_capture(step) -> torch.cuda.CUDAGraph | None:
    """Run `step` once on a side stream (lazy initialisation must not happen while recording), then record it
    as a CUDA graph (recording does not run it). None, with a warning, if this model's forward cannot be
    recorded (a host read in it, say): the steps then run eagerly.

    Under autocast the recorded casts must not come from autocast's weight cache, which is emptied when the
    caller's autocast region ends: warm-up and recording run with the cache off."""
    import warnings

    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
    no_cache = torch.autocast("cuda", dtype=dtype, cache_enabled=False) if dtype is not None else nullcontext()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with no_cache:
        with torch.cuda.stream(side):
            step()  # the real step t = 1
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                step()
        except Exception as err:  # any failure to record falls back to the same steps, eager
            if type(err).__name__ not in _capture_failed:
                _capture_failed.add(type(err).__name__)
                warnings.warn(f"decoding without a CUDA graph: recording the step failed ({err})", stacklevel=3)
            torch.cuda.synchronize()
            return None
    return graph


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


BACKENDS = {"loop": sample_loop, "hf": sample_hf, "static": sample_static}


def sample_batch(model, batch: Batch, *, backend: str = "loop", copies: int = 1, cuda_graph: bool = True,
                 **kwargs) -> torch.Tensor:
    """One padded batch through the chosen backend (`model.generation_backend`): responses (N·copies, R), the
    copies of a prompt adjacent, padding after EOS — what the training loops' rollouts call; `kwargs` as for
    `sample_loop`. hf has no shared prefill: it samples the repeated prompts."""
    fn = BACKENDS[backend]
    if fn is sample_hf:
        if copies > 1:
            rows = torch.arange(batch.input_ids.shape[0], device=batch.input_ids.device).repeat_interleave(copies)
            batch = Batch(batch.input_ids[rows], batch.attention_mask[rows])
        return sample_hf(model, batch, **kwargs)
    return fn(model, batch, copies=copies, cuda_graph=cuda_graph, **kwargs)


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
    cuda_graph: bool = True,
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
    extra = {} if fn is sample_hf else {"cuda_graph": cuda_graph}
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        batch = left_pad([prompts[i] for i in idx], pad_token_id, device)
        resp = fn(model, batch, max_new_tokens=max_new_tokens, temperature=temperature,
                  eos_token_id=eos_token_id, pad_token_id=pad_token_id, generator=generator, **extra)
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
