"""Scalar heads on a transformer backbone: the reward model (one score per sequence) and the value model
(one value per token).

Shapes: B batch, T tokens, H hidden size.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel

from rlhf_lab.models.lm import disable_dropout, position_ids_from_mask


class ScalarHeadModel(nn.Module):
    """backbone → Linear(H, 1). `forward` gives a scalar per token; `score` the one at the last real token.

    With `distributional=True` (Siththaranjan et al. 2023, mean–variance DPL) the head gives a mean μ and a
    spread σ = softplus(s) per token; `forward` still returns μ, `forward_all` both, and `score` the
    risk-adjusted μ + z·σ with z = Φ⁻¹(risk_quantile) stored in the model."""

    def __init__(self, backbone: PreTrainedModel, *, head_init_std: float | None = None,
                 distributional: bool = False):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.distributional = distributional
        self.head = nn.Linear(hidden, 2 if distributional else 1)
        std = head_init_std if head_init_std is not None else 1.0 / (hidden + 1) ** 0.5
        nn.init.normal_(self.head.weight, std=std)
        nn.init.zeros_(self.head.bias)
        # Score normalisation (fitted on SFT samples): score = gain · raw + bias. Buffers, so they save.
        self.register_buffer("gain", torch.ones(()))
        self.register_buffer("bias", torch.zeros(()))
        self.register_buffer("risk_z", torch.zeros(()))  # distributional only: z of the optimised quantile

    @classmethod
    def from_lm(cls, lm: PreTrainedModel, *, distributional: bool = False) -> ScalarHeadModel:
        """A fresh head on a copy of a causal LM's backbone (its LM head dropped)."""
        backbone = copy.deepcopy(lm.base_model)
        disable_dropout(backbone)
        return cls(backbone, distributional=distributional)

    def forward_all(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Every head output per token, (B, T, 1) or (B, T, 2) = (μ, σ)."""
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids).last_hidden_state  # (B, T, H)
        return self._head(hidden)  # (B, T, n)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None, all_outputs: bool = False) -> torch.Tensor:
        """Raw scalar (μ) per token, (B, T); with `all_outputs`, every output, (B, T, n)."""
        out = self.forward_all(input_ids, attention_mask, position_ids)
        return out if all_outputs else out[..., 0]

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, normalized: bool = True) -> torch.Tensor:
        """Score at the last attended token of each sequence, (B,). Works with left and right padding."""
        out = self.forward_all(input_ids, attention_mask)  # (B, T, n)
        last = out[torch.arange(out.shape[0]), last_index(attention_mask)]  # (B, n)
        return self._scalar(last, normalized)

    def score_grouped(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_of: torch.Tensor,
                      responses: torch.Tensor, response_mask: torch.Tensor, *, normalized: bool = True) -> torch.Tensor:
        """`score` of the sequences cat(prompt_ids[prompt_of], responses), each distinct prompt computed once
        for all of its completions (see steps/policy/prefix.py). prompt_ids, prompt_mask (N, P) left padded;
        prompt_of (b,); responses, response_mask (b, R) right padded → (b,)."""
        hidden = grouped_last_hidden(self.backbone, prompt_ids, prompt_mask, prompt_of, responses, response_mask)
        return self._scalar(self._head(hidden), normalized)

    # One model is a set of one: the reward-model protocol (reward_set.RewardModel) without special cases.
    @property
    def names(self) -> list[str]:
        return ["rm"]

    @property
    def members(self) -> list[ScalarHeadModel]:
        return [self]

    def member_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The normalised score as the only member's, (1, B)."""
        return self.score(input_ids, attention_mask)[None]

    def combine(self, member_scores: torch.Tensor) -> torch.Tensor:
        """(1, B) → (B,)."""
        return member_scores[0]

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Head outputs of hidden states, (…, H) → (…, n); a distributional head's σ made positive."""
        out = self.head(hidden.to(self.head.weight.dtype))
        if self.distributional:
            out = torch.stack([out[..., 0], torch.nn.functional.softplus(out[..., 1]) + 1e-3], dim=-1)
        return out

    def _scalar(self, last: torch.Tensor, normalized: bool) -> torch.Tensor:
        """The score from the head's outputs at a sequence's last token, (B, n) → (B,)."""
        raw = last[:, 0] + self.risk_z * last[:, 1] if self.distributional else last[:, 0]
        return self.gain * raw + self.bias if normalized else raw

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(folder / "backbone", safe_serialization=True)
        save_file({"head.weight": self.head.weight.detach().contiguous(), "head.bias": self.head.bias.detach(),
                   "gain": self.gain.detach(), "bias": self.bias.detach(), "risk_z": self.risk_z.detach()},
                  str(folder / "head.safetensors"))
        (folder / "head.json").write_text(json.dumps({"kind": "scalar_head", "hidden_size": self.head.in_features,
                                                      "distributional": self.distributional}))

    @classmethod
    def load(cls, folder: str | Path, *, dtype: torch.dtype = torch.float32) -> ScalarHeadModel:
        folder = Path(folder)
        if not (folder / "head.safetensors").exists():
            raise FileNotFoundError(f"{folder}: not a saved scalar-head model (no head.safetensors)")
        meta = json.loads((folder / "head.json").read_text()) if (folder / "head.json").exists() else {}
        config = AutoConfig.from_pretrained(folder / "backbone", local_files_only=True)
        backbone = AutoModel.from_pretrained(folder / "backbone", config=config, local_files_only=True,
                                             dtype=dtype, use_safetensors=True)
        disable_dropout(backbone)
        model = cls(backbone, distributional=bool(meta.get("distributional", False)))
        state = load_file(str(folder / "head.safetensors"))
        model.head.weight.data.copy_(state["head.weight"])
        model.head.bias.data.copy_(state["head.bias"])
        model.gain.copy_(state["gain"])
        model.bias.copy_(state["bias"])
        if "risk_z" in state:
            model.risk_z.copy_(state["risk_z"])
        return model


def grouped_last_hidden(backbone, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_of: torch.Tensor,
                        responses: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state at the last attended token of each cat(prompt_ids[prompt_of], responses), (b, H): each
    prompt goes through the backbone once, its KV cache is indexed to its completions, which attend to it."""
    from rlhf_lab.models.generation import prompt_then_responses

    first, rest = prompt_then_responses(backbone, prompt_ids, prompt_mask, prompt_of, responses, response_mask)
    prompt_last = first.last_hidden_state[:, -1][prompt_of]  # (b, H): left padding, so the last column is real
    hidden = rest.last_hidden_state  # (b, R, H)
    n = response_mask.sum(1)  # (b,)
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), (n - 1).clamp(min=0)]  # (b, H)
    return torch.where((n > 0)[:, None], last, prompt_last)


def last_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended token in each row, (B, T) → (B,)."""
    T = attention_mask.shape[1]
    flipped = attention_mask.flip(-1).long()
    return (T - 1 - flipped.argmax(-1)).clamp(min=0)


class PolicyAndValue(nn.Module):
    """The policy and its value function behind one forward, so one optimiser and one DDP wrapper serve both.

    `shared`: a value head on the policy's own last hidden state (one forward gives logprobs and values;
    lm-human-preferences' layout). `separate`: a value model of its own (InstructGPT's layout), typically
    initialised from the reward model. forward → logits (B, T, V), values (B, T)."""

    def __init__(self, lm: PreTrainedModel, *, value_model: ScalarHeadModel | None = None):
        super().__init__()
        self.lm = lm
        self.value_model = value_model
        if value_model is None:
            hidden = lm.config.get_text_config().hidden_size if hasattr(lm.config, "get_text_config") \
                else lm.config.hidden_size
            self.value_head = nn.Linear(hidden, 1)
            nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1) ** 0.5)
            nn.init.zeros_(self.value_head.bias)
        else:
            self.value_head = None

    @property
    def shared(self) -> bool:
        return self.value_model is None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *,
                keep: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """keep > 0: logits and values of the last `keep` positions only (B, keep, V), (B, keep) — the prompt's
        positions need neither, and with a large vocabulary their logits are a large share of the work."""
        if self.value_model is None:
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          output_hidden_states=True, logits_to_keep=keep)
            hidden = out.hidden_states[-1][:, -keep:]  # (B, keep or T, H), after the final norm
            values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
            return out.logits, values
        logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         logits_to_keep=keep).logits
        return logits, self.value_model(input_ids, attention_mask, position_ids)[:, -keep:]
