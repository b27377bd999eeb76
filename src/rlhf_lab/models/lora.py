"""LoRA (Hu et al. 2021) through PEFT, for the policy and the reward model.

With LoRA the reference policy π_ref is the same network with its adapters switched off, so no second
copy of the weights is held. Adapters are saved on their own (a few MB) with a note of the base folder
they belong to; `load_lm` puts them back on their base.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

ADAPTER_NOTE = "rlhf_lab_adapter.json"


def add_lora(model: nn.Module, cfg) -> nn.Module:
    """Wrap `model` with fresh LoRA adapters per the model config section (lora_r, lora_alpha, …)."""
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_targets if cfg.lora_targets != "all-linear" else "all-linear"
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets,
                        bias="none", task_type=None)
    return get_peft_model(model, config)


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class AdapterOffReference(nn.Module):
    """π_ref as a view of a LoRA policy with its adapters disabled. Holds no parameters of its own."""

    def __init__(self, peft_model: nn.Module):
        super().__init__()
        object.__setattr__(self, "_policy", peft_model)  # not a submodule: keeps .parameters() empty

    def forward(self, **kwargs):
        with torch.no_grad(), self._policy.disable_adapter():
            return self._policy(**kwargs)

    def parameters(self, recurse: bool = True):
        return self._policy.parameters(recurse)


def save_adapter(model: nn.Module, folder: str | Path, *, base: str | Path, tokenizer) -> None:
    folder = Path(folder)
    # The embedding matrix may have grown by one row for a pad token distinct from EOS; that row is masked
    # out everywhere and never sampled, so the adapters alone are saved (not a copy of the embeddings).
    model.save_pretrained(folder, safe_serialization=True, save_embedding_layers=False)
    tokenizer.save_pretrained(folder)
    (folder / ADAPTER_NOTE).write_text(json.dumps({"base": str(Path(base).resolve())}))


def adapter_base(folder: str | Path) -> Path | None:
    note = Path(folder) / ADAPTER_NOTE
    if not note.exists():
        return None
    return Path(json.loads(note.read_text())["base"])
