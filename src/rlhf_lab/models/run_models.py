"""One place that turns a run folder into models: the tokenizer, the SFT policy (also π_ref), a trained policy
(full weights, LoRA adapters on their base, or best-of-n over the SFT policy), the reward model (single,
distributional, an ensemble or one per group). The training steps (`steps.common.Context`), the evaluation,
the audit and the comparison all load through `RunModels`, so they measure the models that were trained.

Run folder layout read here:
    sft/            the SFT policy and the tokenizer (tokenizer/ alone when SFT has not run yet)
    policy/         the trained policy; checkpoints/step_NNNNN/ the same at an evaluation point
    reward/         a reward model, or a set of them (set.json, members/<k>/)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from rlhf_lab.models.best_of_n import MARKER as BEST_OF_N
from rlhf_lab.models.best_of_n import BestOfN
from rlhf_lab.models.lm import build_world_lm, is_model_folder, load_lm, resolve_model_path
from rlhf_lab.models.lora import ADAPTER_NOTE
from rlhf_lab.models.reward_set import RewardModel, load_reward


def _best_of_n(folder: Path, sampler: nn.Module, reward: RewardModel | None) -> nn.Module:
    import json

    if reward is None:
        raise FileNotFoundError(f"{folder}: a best-of-n policy needs the run's reward model (reward/), and there "
                                "is none")
    return BestOfN(sampler, reward, int(json.loads((folder / BEST_OF_N).read_text())["n"]))


def _weights(folder: Path, sampler: nn.Module, reward: RewardModel | None) -> nn.Module:
    return load_lm(folder)[0]  # full weights, or LoRA adapters put back on their base and merged


# What a policy folder holds, recognised by the file that marks it (first match wins), and how it loads.
POLICY_KINDS: tuple[tuple[str, str], ...] = (("best_of_n", BEST_OF_N), ("lora_adapters", ADAPTER_NOTE),
                                              ("full", "config.json"))
POLICY_LOADERS: dict[str, Callable[[Path, nn.Module, RewardModel | None], nn.Module]] = {
    "best_of_n": _best_of_n, "lora_adapters": _weights, "full": _weights}


def policy_kind(folder: str | Path) -> str | None:
    """"best_of_n", "lora_adapters", "full", or None when `folder` holds no policy."""
    folder = Path(folder)
    return next((kind for kind, marker in POLICY_KINDS if (folder / marker).exists()), None)


class RunModels:
    """The models of one run folder, loaded on the CPU (callers move them)."""

    def __init__(self, cfg, root: str | Path):
        self.cfg = cfg
        self.root = Path(root)

    def saved_tokenizer(self):
        """The run's tokenizer (saved with the SFT model, or on its own by the first step), else `model.path`'s;
        None when neither exists (a world tokenizer is trained by the first step)."""
        from transformers import AutoTokenizer

        from rlhf_lab.models.tokenizer import prepare_tokenizer

        for folder in (self.root / "sft", self.root / "tokenizer"):
            if (folder / "tokenizer_config.json").exists():
                return prepare_tokenizer(AutoTokenizer.from_pretrained(folder, local_files_only=True))
        if self.cfg.model.path:
            return load_lm(self.cfg.model.path)[1]
        return None

    def base_lm(self, tokenizer) -> nn.Module:
        """The model SFT starts from: `model.path`, or a freshly initialised world model (seeded by `seed`)."""
        if self.cfg.model.path:
            return load_lm(self.cfg.model.path)[0]
        torch.manual_seed(self.cfg.seed)
        return build_world_lm(self.cfg.model, tokenizer)

    def sft_lm(self, tokenizer) -> nn.Module:
        """The SFT policy π_SFT, also the reference π_ref (the base model when SFT is switched off)."""
        folder = self.root / "sft"
        if is_model_folder(folder):
            return load_lm(folder)[0]
        if not self.cfg.sft.enabled:
            return self.base_lm(tokenizer)
        raise FileNotFoundError(f"{folder}: no SFT model; run `rlhf-lab sft {self.root}` first")

    def policy_base_folder(self) -> Path:
        """The folder LoRA policy adapters belong on (the SFT model, or model.path when SFT was skipped)."""
        sft = self.root / "sft"
        return sft if is_model_folder(sft) else resolve_model_path(self.cfg.model.path)

    def trainable_policy(self, tokenizer, device: torch.device) -> tuple[nn.Module, nn.Module]:
        """(policy to train, frozen π_ref on `device`). With LoRA the policy is the SFT model with fresh adapters
        and π_ref the same network with its adapters off (no second copy)."""
        policy = self.sft_lm(tokenizer)
        if self.cfg.model.lora:
            from rlhf_lab.models.lora import AdapterOffReference, add_lora

            policy = add_lora(policy, self.cfg.model)
            policy.rlhf_lab_base = str(self.policy_base_folder())  # where its saved adapters belong
            return policy, AdapterOffReference(policy)
        ref = self.sft_lm(tokenizer).to(device).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return policy, ref

    def reward(self) -> RewardModel | None:
        """The reward model the policy optimised (a set's aggregate), or None before the reward step."""
        folder = self.root / "reward"
        return load_reward(folder) if (folder / "head.safetensors").exists() else None

    def policy(self, folder: str | Path, *, sampler: nn.Module, reward: RewardModel | None) -> nn.Module:
        """The trained policy saved in `folder` (policy/ or a checkpoint). `sampler`: the SFT policy, which a
        best-of-n policy samples from; `reward`: the run's reward model, which it picks with."""
        folder = Path(folder)
        kind = policy_kind(folder)
        if kind is None:
            raise FileNotFoundError(f"{folder}: no trained policy; run `rlhf-lab policy {self.root}` first")
        return POLICY_LOADERS[kind](folder, sampler, reward)
