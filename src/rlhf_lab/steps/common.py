"""What every step shares: the run context (config, folder, world, tokenizer, accelerator), seeding, model
origins, and turning prompts and responses into tensors.

Shapes: B batch, P prompt tokens (left padded), R response tokens (right padded), T = P + R, V vocab.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from rlhf_lab.config import Config
from rlhf_lab.models.logprobs import join_query_response  # noqa: F401 (re-exported for the policy loops)
from rlhf_lab.models.reward_set import RewardModel, score_tokens
from rlhf_lab.models.run_models import RunModels
from rlhf_lab.models.tokenizer import encode_prompts, render_prompt, train_world_tokenizer
from rlhf_lab.runfolder import RunFolder, atomic_dir
from rlhf_lab.world import Prompt, World, hash_seed

_ACCELERATOR = None


def get_accelerator(cfg: Config):
    """One Accelerator per process (accelerate keeps global state); every training loop runs under it."""
    global _ACCELERATOR
    from accelerate.state import AcceleratorState

    # A transformers Trainer built in this process (a TRL run with our TensionMonitor, say) resets accelerate's
    # global state; an Accelerator made before it then fails on every attribute. Make a new one.
    if _ACCELERATOR is None or not AcceleratorState._shared_state:
        from accelerate import Accelerator

        use_bf16 = cfg.model.dtype == "bfloat16" or (
            cfg.model.dtype == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        _ACCELERATOR = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if use_bf16 else "no")
    return _ACCELERATOR


def adamw(params, *, lr: float, weight_decay: float = 0.0, eps: float = 1e-8) -> torch.optim.AdamW:
    """The optimiser every training loop uses. The multi-tensor ("foreach") update gives bitwise the same
    parameters as the per-tensor loop PyTorch picks on a CPU (tests/test_steps_common.py checks it) in fewer
    kernel calls: a small model's step there is mostly per-tensor overhead."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, eps=eps, foreach=True)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (offset by process rank); return a generator for sampling."""
    rank = int(__import__("os").environ.get("RANK", "0"))
    s = hash_seed(seed, rank) % (2**31)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    g = torch.Generator()
    g.manual_seed(s)
    return g


@dataclass
class Context:
    """Everything a step needs. Built once per command from the config and the run folder."""

    cfg: Config
    run: RunFolder
    _tokenizer: object = field(default=None, repr=False)

    @cached_property
    def world(self) -> World:
        lang = self.cfg.world.language
        if lang == "auto":
            lang = "english" if self.cfg.model.path else "templated"
        return World(self.cfg.world, language=lang)

    @property
    def accelerator(self):
        return get_accelerator(self.cfg)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # -- tokenizer and models ----------------------------------------------------------------------------

    @cached_property
    def models(self) -> RunModels:
        """Where every model of the run folder is loaded (shared with evaluation and the audit)."""
        return RunModels(self.cfg, self.run.root)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def _load_tokenizer(self):
        tok = self.models.saved_tokenizer()
        if tok is not None:
            return tok
        tok = train_world_tokenizer(self.world.corpus())  # the first step of a world run: train and keep it
        if self.is_main:
            with atomic_dir(self.run / "tokenizer") as tmp:
                tok.save_pretrained(tmp)
        return tok

    def base_lm(self):
        """The model SFT starts from: `model.path`, or a freshly initialised world model."""
        return self.models.base_lm(self.tokenizer)

    def sft_lm(self):
        """The SFT policy (also the reference π_ref for policy optimisation)."""
        return self.models.sft_lm(self.tokenizer)

    def policy_and_reference(self):
        """(policy LM to train, frozen π_ref). With LoRA, π_ref is the policy with its adapters off."""
        return self.models.trainable_policy(self.tokenizer, self.device)

    def reward_model(self) -> RewardModel:
        """The reward model the policy optimises (single, distributional, or a set: ensemble, per group)."""
        rm = self.models.reward()
        if rm is None:
            raise FileNotFoundError(f"{self.run / 'reward'}: no reward model; run `rlhf-lab reward {self.run.root}` "
                                    "first")
        return rm

    def trained_policy(self, folder: Path | None = None, *, sampler, reward):
        """The trained policy in `folder` (default policy/): weights, merged adapters, or best-of-n over `sampler`
        (the SFT policy) picking by `reward` (the run's reward model)."""
        return self.models.policy(folder or self.run / "policy", sampler=sampler, reward=reward)

    # -- prompts -----------------------------------------------------------------------------------------

    def prompt_ids(self, prompts: list[Prompt]) -> list[list[int]]:
        return encode_prompts(self.tokenizer, [self.prompt_text(p) for p in prompts])

    def prompt_text(self, prompt: Prompt) -> str:
        return render_prompt(self.tokenizer, self.world.messages(prompt))


def pair_batches(n: int, batch_size: int, rng: np.random.Generator | None,
                 lengths: list[int] | None = None) -> list[np.ndarray]:
    """Shuffled index batches. With `lengths`, batches are formed from neighbours in length within
    shuffled windows of 16 batches (less padding), then the batch order is shuffled again."""
    idx = np.arange(n) if rng is None else rng.permutation(n)
    if lengths is not None:
        window = batch_size * 16
        idx = np.concatenate([sorted(idx[i: i + window], key=lambda j: lengths[j])
                              for i in range(0, n, window)]) if n else idx
    batches = [idx[i: i + batch_size] for i in range(0, n, batch_size)]
    if lengths is not None and rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def shard(idx: np.ndarray, accelerator) -> tuple[np.ndarray, bool]:
    """This process's part of a global batch (balanced split), and whether it is real.

    A process left without examples still takes part (DDP needs every rank in every backward): it gets
    one example to run with weight 0."""
    part = np.array_split(idx, accelerator.num_processes)[accelerator.process_index]
    if len(part) == 0:
        return idx[:1], False
    return part, True


def linear_schedule(optimizer, total_steps: int, warmup: int = 0):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1.0 - (step - warmup) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


def score(rm: RewardModel, prompt_ids: list[list[int]], response_ids: list[list[int]], *, pad_id: int,
          batch_size: int = 256, normalized: bool = True) -> np.ndarray:
    """Reward-model scores for (prompt, response) pairs (a set's aggregate); responses include their EOS if
    they stopped."""
    return score_tokens(rm, prompt_ids, response_ids, pad_id=pad_id, batch_size=batch_size, normalized=normalized)[0]


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
