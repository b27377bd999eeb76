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
from rlhf_lab.models.generation import Batch, left_pad
from rlhf_lab.models.heads import ScalarHeadModel
from rlhf_lab.models.lm import build_world_lm, is_model_folder, load_lm, position_ids_from_mask
from rlhf_lab.models.tokenizer import encode_prompts, render_prompt, train_world_tokenizer
from rlhf_lab.runfolder import RunFolder, atomic_dir
from rlhf_lab.world import Prompt, World, hash_seed

_ACCELERATOR = None


def get_accelerator(cfg: Config):
    """One Accelerator per process (accelerate keeps global state); every training loop runs under it."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from accelerate import Accelerator

        use_bf16 = cfg.model.dtype == "bfloat16" or (
            cfg.model.dtype == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        _ACCELERATOR = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if use_bf16 else "no")
    return _ACCELERATOR


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

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def _load_tokenizer(self):
        from transformers import AutoTokenizer

        from rlhf_lab.models.tokenizer import prepare_tokenizer

        for folder in (self.run / "sft", self.run / "tokenizer"):
            if (folder / "tokenizer_config.json").exists():
                return prepare_tokenizer(AutoTokenizer.from_pretrained(folder, local_files_only=True))
        if self.cfg.model.path:
            _, tok = load_lm(self.cfg.model.path)
        else:
            tok = train_world_tokenizer(self.world.corpus())
        if self.is_main:
            with atomic_dir(self.run / "tokenizer") as tmp:
                tok.save_pretrained(tmp)
        return tok

    def base_lm(self):
        """The model SFT starts from: `model.path`, or a freshly initialised world model."""
        if self.cfg.model.path:
            model, _ = load_lm(self.cfg.model.path)
            return model
        torch.manual_seed(self.cfg.seed)
        return build_world_lm(self.cfg.model, self.tokenizer)

    def sft_lm(self):
        """The SFT policy (also the reference π_ref for policy optimisation)."""
        folder = self.run / "sft"
        if is_model_folder(folder):
            model, _ = load_lm(folder)
            return model
        if not self.cfg.sft.enabled:
            return self.base_lm()
        raise FileNotFoundError(f"{folder}: no SFT model; run `rlhf-lab sft {self.run.root}` first")

    def policy_and_reference(self):
        """(policy LM to train, frozen π_ref). With LoRA, π_ref is the policy with its adapters off."""
        policy = self.sft_lm()
        if self.cfg.model.lora:
            from rlhf_lab.models.lora import AdapterOffReference, add_lora

            policy = add_lora(policy, self.cfg.model)
            policy.rlhf_lab_base = str(self.policy_base_folder())  # where its saved adapters belong
            return policy, AdapterOffReference(policy)
        ref = self.sft_lm().to(self.device).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return policy, ref

    def policy_base_folder(self) -> Path:
        """The folder LoRA policy adapters belong on (the SFT model, or model.path when SFT was skipped)."""
        sft = self.run / "sft"
        if is_model_folder(sft):
            return sft
        from rlhf_lab.models.lm import resolve_model_path

        return resolve_model_path(self.cfg.model.path)

    def reward_model(self):
        """The reward model, a distributional one, or a set of them (ensemble, per group): all have `score`."""
        from rlhf_lab.models.reward_set import load_reward

        folder = self.run / "reward"
        if not (folder / "head.safetensors").exists():
            raise FileNotFoundError(f"{folder}: no reward model; run `rlhf-lab reward {self.run.root}` first")
        return load_reward(folder)

    # -- prompts -----------------------------------------------------------------------------------------

    def prompt_ids(self, prompts: list[Prompt]) -> list[list[int]]:
        return encode_prompts(self.tokenizer, [self.prompt_text(p) for p in prompts])

    def prompt_text(self, prompt: Prompt) -> str:
        return render_prompt(self.tokenizer, self.world.messages(prompt))


def join_query_response(query: Batch, responses: torch.Tensor, pad_token_id: int) -> tuple[torch.Tensor, ...]:
    """Concatenate left-padded queries and right-padded responses.

    query (B, P), responses (B, R) → input_ids (B, T), attention_mask (B, T), position_ids (B, T),
    response_mask (B, R). Pad never occurs inside a response (it is never sampled)."""
    response_mask = (responses != pad_token_id).long()  # (B, R)
    input_ids = torch.cat([query.input_ids, responses], dim=1)  # (B, T)
    attention_mask = torch.cat([query.attention_mask, response_mask], dim=1)  # (B, T)
    return input_ids, attention_mask, position_ids_from_mask(attention_mask), response_mask


def right_pad(seqs: list[list[int]], pad_id: int, width: int | None = None) -> torch.Tensor:
    width = width or max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s[:width], dtype=torch.long)
    return out


def response_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                    P: int) -> torch.Tensor:
    """Logits that predict each response token: positions P−1 … T−2 of the sequence. → (B, R, V)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   logits_to_keep=input_ids.shape[1] - P + 1).logits  # positions P−1 … T−1
    return logits[:, :-1]


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


def sequences_for_scoring(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int,
                          device) -> Batch:
    """prompt + response token lists → one left-padded batch for a reward model."""
    return left_pad([p + r for p, r in zip(prompt_ids, response_ids, strict=True)], pad_id, device)


@torch.no_grad()
def _scored(fn, rm, prompt_ids: list[list[int]], response_ids: list[list[int]], *, pad_id: int,
            batch_size: int) -> list[torch.Tensor]:
    """fn(batch) over (prompt, response) sequences in batches, on the reward model's device."""
    device = next(rm.parameters()).device
    rm.eval()
    return [fn(sequences_for_scoring(prompt_ids[i: i + batch_size], response_ids[i: i + batch_size], pad_id, device))
            .float().cpu() for i in range(0, len(prompt_ids), batch_size)]


def score(rm: ScalarHeadModel, prompt_ids: list[list[int]], response_ids: list[list[int]], *, pad_id: int,
          batch_size: int = 256, normalized: bool = True) -> np.ndarray:
    """Reward-model scores for (prompt, response) pairs; responses include their EOS if they stopped."""
    out = _scored(lambda b: rm.score(b.input_ids, b.attention_mask, normalized=normalized), rm, prompt_ids,
                  response_ids, pad_id=pad_id, batch_size=batch_size)
    return torch.cat(out).numpy() if out else np.zeros(0)


def member_scores(rm, prompt_ids: list[list[int]], response_ids: list[list[int]], *, pad_id: int,
                  batch_size: int = 256) -> np.ndarray | None:
    """Each member's normalised score when `rm` is a set of reward models (K, N); None for a single model."""
    if not hasattr(rm, "member_scores"):
        return None
    out = _scored(lambda b: rm.member_scores(b.input_ids, b.attention_mask), rm, prompt_ids, response_ids,
                  pad_id=pad_id, batch_size=batch_size)
    return torch.cat(out, 1).numpy() if out else None


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
