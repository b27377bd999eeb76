"""Causal LMs: the tiny built-in world model, or any Hugging Face causal LM from a local folder.

Nothing here reaches a model hub: the built-in model is built from a config, and `model.path` must be
a local folder (or a .gguf file, see `gguf.py`). Weights are saved and loaded as safetensors only.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from rlhf_lab.models.tokenizer import prepare_tokenizer

try:  # HF prints a bar for every load and save of a 1 MB model; ours are enough.
    from transformers.utils import logging as _hf_logging

    _hf_logging.disable_progress_bar()
except ImportError:  # pragma: no cover
    pass

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _smollm2() -> Path:
    from rlhf_lab.models.gguf import prepare_smollm2

    return prepare_smollm2()


# Models that ship inside PyPI packages, usable by name as model.path (prepared offline on first use).
NAMED_MODELS = {"smollm2-135m-instruct": _smollm2}


def resolve_model_path(path: str | Path) -> Path:
    """A named model or a .gguf file → the safetensors folder to load (prepared once, then cached)."""
    if str(path) in NAMED_MODELS:
        return NAMED_MODELS[str(path)]()
    path = Path(path)
    if path.suffix == ".gguf":
        from rlhf_lab.models.gguf import gguf_to_folder

        return gguf_to_folder(path)
    return path


def build_world_lm(cfg, tokenizer) -> LlamaForCausalLM:
    """A small Llama-shaped model (RoPE, RMSNorm, SwiGLU) sized by `cfg` (the model config section)."""
    if cfg.hidden_size % cfg.heads:
        raise ValueError(f"model.hidden_size ({cfg.hidden_size}) must be divisible by model.heads ({cfg.heads})")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        attention_dropout=0.0,
    )
    return LlamaForCausalLM(config)


def is_model_folder(path: str | Path) -> bool:
    """A saved causal LM: full weights (config.json) or LoRA adapters with a note of their base."""
    from rlhf_lab.models.lora import ADAPTER_NOTE

    path = Path(path)
    return (path / "config.json").exists() or (path / ADAPTER_NOTE).exists()


def load_lm(path: str | Path, *, dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, object]:
    """Any HF causal LM and its tokenizer from a local folder (safetensors weights only)."""
    path = resolve_model_path(path)
    from rlhf_lab.models.lora import adapter_base

    base = adapter_base(path)
    if base is not None:  # LoRA adapters: put them back on their base and merge
        from peft import PeftModel

        model, tok = load_lm(base, dtype=dtype)
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
        disable_dropout(model)
        return model, tok
    if not path.is_dir():
        raise FileNotFoundError(f"model.path {path}: no such folder (expected a Hugging Face model folder)")
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(path, local_files_only=True))
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype, use_safetensors=True)
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok), mean_resizing=False)  # the new pad row is never sampled
    model.config.pad_token_id = tok.pad_token_id
    disable_dropout(model)
    return model, tok


def save_lm(model: PreTrainedModel, tokenizer, folder: str | Path) -> None:
    """Save model (safetensors) and tokenizer into `folder`; the caller makes it atomic. A LoRA policy is saved
    as its adapters plus a note of its base folder (set by Context.policy_and_reference)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unwrapped = getattr(model, "module", model)
    base = getattr(unwrapped, "rlhf_lab_base", None)
    if base is not None:
        from rlhf_lab.models.lora import save_adapter

        save_adapter(unwrapped, folder, base=base, tokenizer=tokenizer)
        return
    unwrapped.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def disable_dropout(model: torch.nn.Module) -> None:
    """RLHF wants deterministic forward passes: logprobs at rollout time and at training time must agree."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    cfg = getattr(model, "config", None)
    for key in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if cfg is not None and hasattr(cfg, key) and isinstance(getattr(cfg, key), float):
            setattr(cfg, key, 0.0)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: [0 0 1 2 …] for mask [0 1 1 1 …]. (B, T) → (B, T).

    Generation and training must use the same positions, or the logprobs the policy is trained on are
    not those it sampled with."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
