"""Resumable policy-optimisation checkpoints: weights as safetensors, optimiser state through
`torch.save` / `torch.load(weights_only=True)` (tensors and numbers only, never arbitrary pickles), and the
RNG states that make a resumed run sample exactly what an uninterrupted one would have."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rlhf_lab.runfolder import atomic_dir


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters only: what is frozen (a LoRA base, say) comes back from the SFT model on resume.
    safetensors refuses shared storage (tied embeddings): each tensor is stored once, contiguous."""
    out, seen = {}, set()
    for k, v in module.named_parameters():
        if not v.requires_grad or v.data_ptr() in seen:
            continue
        seen.add(v.data_ptr())
        out[k] = v.detach().contiguous().cpu()
    return out


def save_checkpoint(folder: str | Path, *, update: int, model, optimizer, kl_coef: float,
                    generator: torch.Tensor, np_rng: dict, extra: dict | None = None) -> None:
    """`model`: the trained module (policy and value) — its parameters, not a wrapper's."""
    with atomic_dir(folder) as tmp:
        save_file(_state(model), str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        save_file({"generator": generator}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"update": update, "kl_coef": kl_coef, "np_rng": np_rng,
                                                    **(extra or {})}))


def checkpoint_state(folder: str | Path) -> dict | None:
    """The saved state.json of a checkpoint (update, β, what wrote it), or None when there is none."""
    path = Path(folder) / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_checkpoint(folder: str | Path, *, model, optimizer) -> dict | None:
    """Load into the given objects; returns the saved state, or None when there is no checkpoint."""
    folder = Path(folder)
    state = checkpoint_state(folder)
    if state is None:
        return None
    saved = load_file(str(folder / "model.safetensors"))
    trained = {k for k, v in model.named_parameters() if v.requires_grad}
    _missing, unexpected = model.load_state_dict(saved, strict=False)
    # Every trained parameter must come back (tied copies are stored once and restored with their twin).
    absent = [k for k in trained - saved.keys() if "lm_head" not in k]
    if unexpected or absent:
        raise ValueError(f"{folder}: checkpoint does not match the model (absent {absent[:3]}, "
                         f"unexpected {unexpected[:3]})")
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    state["generator"] = load_file(str(folder / "rng.safetensors"))["generator"]
    return state
