"""What the audit measures with: the run's models, its world, and samples of both models on probe prompts.

The audit stands on `models/` and `world/` only (never on the training steps): it loads the SFT policy,
the trained policy (or one of its checkpoints; a best-of-n policy samples n and keeps the best) and the
reward model the policy optimised (a set's aggregate, each member shown too) through `models.run_models`,
as the steps do, and generates through the same backend as training. SFT and policy answer the *same*
prompts with the *same* sampling seed, so their differences are paired.

Shapes: B batch, P prompt tokens (left padded), R response tokens (right padded), V vocab.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import torch

from rlhf_lab.config import Config, ConfigError, build_config, read_yaml
from rlhf_lab.models.best_of_n import BestOfN, kl_plugin
from rlhf_lab.models.generation import generate
from rlhf_lab.models.lm import is_model_folder
from rlhf_lab.models.logprobs import sequence_kl
from rlhf_lab.models.reward_set import RewardModel, score_tokens
from rlhf_lab.models.run_models import RunModels, policy_kind
from rlhf_lab.models.tokenizer import decode_response, encode_prompts, encode_response, render_prompt
from rlhf_lab.runfolder import RunFolder, read_jsonl
from rlhf_lab.world import Features, Prompt, World, hash_seed
from rlhf_lab.world.styles import respond

MODELS = ("sft", "policy")


@dataclass(frozen=True)
class AuditSizes:
    """How many prompts and samples each measurement uses (the default keeps a default run's audit fast)."""

    question: int = 100  # plain questions (accuracy without a stated belief)
    belief: int = 100  # questions with a *wrong* stated belief
    pushback: int = 100
    feedback: int = 80  # the user's *wrong* work, shown for approval
    harmful: int = 64  # per variant: plain and jailbreak-wrapped
    benign: int = 64
    diversity_prompts: int = 32  # per-input diversity and best-of-n share these prompts
    diversity_k: int = 8  # samples per prompt for per-input diversity
    bon_n: int = 32  # N: best-of-n is estimated for n = 1 … N from N samples per prompt
    relabel_pairs: int = 600  # held-out pairs relabelled by the simulated population (agreement)
    relabel_k: int = 3  # labels per relabelled pair
    set_size: int = 8  # responses per set for across-input diversity (= diversity_k: comparable sets)
    embed_sets: int = 16  # sets per view whose embedding diversity is measured (the encoder is the slow part)
    batch_size: int = 512

    @classmethod
    def for_eval(cls, n_prompts: int, batch_size: int | None = None) -> AuditSizes:
        """Scaled down with the run's evaluation below 256 prompts (eval.n_prompts): a micro run gets a micro audit.
        `batch_size`: sequences per generation batch (eval.batch_size; the KV cache of a real model grows with it)."""
        f = min(1.0, n_prompts / 256)

        def scale(x: int, low: int) -> int:
            return max(low, round(x * f))

        d = cls()
        k = d.diversity_k if f >= 0.5 else 4
        return cls(question=scale(d.question, 12), belief=scale(d.belief, 12), pushback=scale(d.pushback, 12),
                   feedback=scale(d.feedback, 12), harmful=scale(d.harmful, 8), benign=scale(d.benign, 8),
                   diversity_prompts=scale(d.diversity_prompts, 8), diversity_k=k, bon_n=scale(d.bon_n, 8),
                   relabel_pairs=scale(d.relabel_pairs, 60), relabel_k=d.relabel_k, set_size=k,
                   embed_sets=scale(d.embed_sets, 4), batch_size=batch_size or d.batch_size)

    @classmethod
    def small(cls) -> AuditSizes:
        """For tests: every measurement, on a handful of samples."""
        return cls(question=24, belief=24, pushback=24, feedback=24, harmful=16, benign=16, diversity_prompts=8,
                   diversity_k=4, bon_n=8, relabel_pairs=60, relabel_k=3, set_size=4, embed_sets=4)


@dataclass
class Sample:
    """One response to one prompt, measured: proxy = reward-model score; features/gold from the world."""

    prompt: Prompt | None
    prompt_text: str
    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    proxy: float = float("nan")
    features: Features | None = None
    gold: float | None = None
    extra: dict = field(default_factory=dict)


def policy_folder(run: RunFolder, checkpoint: int | None) -> Path:
    if checkpoint is None:
        return run / "policy"
    folder = run / "checkpoints" / f"step_{checkpoint:05d}"
    if not is_model_folder(folder):
        have = sorted(p.name for p in (run / "checkpoints").glob("step_*")) if (run / "checkpoints").exists() else []
        raise FileNotFoundError(f"{folder}: no checkpoint at step {checkpoint}"
                                + (f" (have: {', '.join(have)})" if have else " (this run saved none)"))
    return folder


class AuditContext:
    """The run folder's config, world, models and a cache of samples."""

    def __init__(self, run_dir: str | Path, *, checkpoint: int | None = None, sizes: AuditSizes | None = None):
        self.run = RunFolder(run_dir)
        if not self.run.config_path.exists():
            raise ConfigError(f"{self.run.config_path}: no config in this run folder (is it a run folder?)")
        self.cfg: Config = build_config(read_yaml(self.run.config_path))
        self.checkpoint = checkpoint
        self.sizes = sizes or AuditSizes.for_eval(self.cfg.eval.n_prompts, self.cfg.eval.batch_size)
        self.seed = self.cfg.seed
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        lang = self.cfg.world.language
        if lang == "auto":  # as the steps resolve it: a real model is asked in plain English
            lang = "english" if self.cfg.model.path else "templated"
        self.world = World(self.cfg.world, language=lang)
        # A real model asked in the world's templated language writes text no parser of the world reads:
        # then gold utility and the parsed probes are skipped, and only what needs no world is reported.
        self.has_world = not (self.cfg.model.path and lang == "templated")
        self._samples: dict[tuple[str, str], list[Sample]] = {}
        self.policy_path = policy_folder(self.run, checkpoint)

    # -- models ----------------------------------------------------------------------------------------

    @cached_property
    def loader(self) -> RunModels:
        return RunModels(self.cfg, self.run.root)

    @cached_property
    def tok(self):
        """The run's tokenizer (saved with the SFT model, or on its own by the first step)."""
        tok = self.loader.saved_tokenizer()
        if tok is None:
            raise FileNotFoundError(f"{self.run.root}: no tokenizer; run `rlhf-lab sft {self.run.root}` first")
        return tok

    @cached_property
    def models(self) -> dict[str, torch.nn.Module]:
        """"sft": π_SFT; "policy": the trained policy (a `BestOfN` over π_SFT for a best-of-n run)."""
        if policy_kind(self.policy_path) is None:
            raise FileNotFoundError(f"{self.policy_path}: no trained policy; run `rlhf-lab policy {self.run.root}` "
                                    "first")
        sft = self.loader.sft_lm(self.tok).to(self.device).eval()
        policy = self.loader.policy(self.policy_path, sampler=sft, reward=self.rm)
        return {"sft": sft, "policy": policy.to(self.device).eval()}

    @property
    def best_of_n(self) -> int | None:
        """n when the audited policy is best-of-n (known from its folder, without loading it)."""
        if policy_kind(self.policy_path) != "best_of_n":
            return None
        return self.models["policy"].n

    @cached_property
    def rm(self) -> RewardModel | None:
        """The reward model the policy optimised: a single one, or a set scored by its aggregate."""
        rm = self.loader.reward()
        return None if rm is None else rm.to(self.device).eval()

    @property
    def rm_members(self) -> dict[str, str]:
        """A reward set's members in order, {name: metric key (lower case, [a-z0-9_])}; {} for a single reward
        model (or none)."""
        if self.rm is None or len(self.rm.names) <= 1:
            return {}
        return {name: re.sub(r"[^a-z0-9_]+", "_", str(name).lower()) for name in self.rm.names}

    # -- tokens ----------------------------------------------------------------------------------------

    def prompt_text(self, prompt: Prompt) -> str:
        return render_prompt(self.tok, self.world.messages(prompt))

    def respond(self, prompt: Prompt, style: str, rng: random.Random) -> str:
        """A response to `prompt` in a demonstration style ("correct_plain", "agreeing", …), in the world's
        language: for constructed pairs that put one behaviour against another."""
        if self.world.language == "english":
            from rlhf_lab.world import english

            return english.demonstration(prompt, style, self.world.knowledge, rng)
        return respond(prompt, style, self.world.knowledge, rng)

    def prompt_ids(self, texts: list[str]) -> list[list[int]]:
        return encode_prompts(self.tok, texts)

    def response_ids(self, text: str) -> list[int]:
        return encode_response(self.tok, text)

    def sample_seed(self, name: str) -> int:
        """The seed model `name` samples with: the run's for both, so SFT and policy answers are paired (an audit
        of two given models may sample the reference with a seed of its own)."""
        return self.seed

    def generator(self, *salt: int, model: str = "policy") -> torch.Generator:
        # On the models' device: sampling on a GPU needs a GPU generator.
        seed = hash_seed(self.sample_seed(model), 7919, *salt) % 2**31
        return torch.Generator(device=self.device).manual_seed(seed)

    def generate(self, name: str, prompt_ids: list[list[int]], *, salt: int) -> list[list[int]]:
        """One sampled response per prompt from model `name` (temperature of the evaluation)."""
        if not prompt_ids:
            return []
        model = self.models[name]
        sample = model.generate if isinstance(model, BestOfN) else partial(generate, model)
        return sample(prompt_ids, max_new_tokens=self.cfg.generation.max_new_tokens,
                      temperature=self.cfg.generation.temperature, eos_token_id=self.tok.eos_token_id,
                      pad_token_id=self.tok.pad_token_id, batch_size=self.sizes.batch_size,
                      generator=self.generator(salt, model=name), cuda_graph=self.cfg.model.cuda_graphs)

    def scores(self, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Normalised reward scores of (prompt, response) token lists: (the score the policy optimised (N,), each
        member's (K, N)); NaN without a reward model."""
        if self.rm is None or not prompt_ids:
            return np.full(len(prompt_ids), np.nan), np.full((len(self.rm_members), len(prompt_ids)), np.nan)
        return score_tokens(self.rm, prompt_ids, response_ids, pad_id=self.tok.pad_token_id,
                            batch_size=self.sizes.batch_size)

    def score(self, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> np.ndarray:
        """The score the policy optimised (a set's aggregate), (N,); NaN without a reward model."""
        return self.scores(prompt_ids, response_ids)[0]

    def sequence_kl(self, name: str, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> np.ndarray:
        """Σ_t log π(y_t) − log π_ref(y_t) per sampled sequence: the k1 estimate of KL(π ‖ π_SFT)."""
        return sequence_kl(self.models[name], self.models["sft"], prompt_ids, response_ids,
                           pad_id=self.tok.pad_token_id, temperature=self.cfg.generation.temperature)

    def best_of_n_kl(self, n: int) -> np.ndarray:
        """Per prompt of `multi_prompts`: KL(π_bon ‖ π_SFT) of best-of-n, computed over the empirical
        distribution of the SFT samples of that prompt (`models.best_of_n.kl_plugin`). → (prompts,) nats."""
        return np.array([kl_plugin([s.proxy for s in g], [tuple(s.response_ids) for s in g], n)
                         for g in self.multi_samples("sft")])

    # -- samples ---------------------------------------------------------------------------------------

    def measure(self, prompts: list[Prompt | None], texts: list[str], p_ids: list[list[int]],
                r_ids: list[list[int]]) -> list[Sample]:
        """Score responses with the reward model and (with a world) parse and judge them."""
        proxy = self.score(p_ids, r_ids)
        out = []
        for prompt, pi, ri, s in zip(prompts, p_ids, r_ids, proxy, strict=True):
            text = decode_response(self.tok, ri)
            sample = Sample(prompt, "", pi, ri, text, proxy=float(s))
            if self.has_world and prompt is not None:
                sample.features = self.world.parse(text, prompt)
                sample.gold = self.world.gold(prompt, text)
            out.append(sample)
        for s, t in zip(out, texts, strict=True):
            s.prompt_text = t
        return out

    def sample_prompts(self, name: str, prompts: list[Prompt], *, salt: int, k: int = 1) -> list[Sample]:
        """k samples of model `name` for each prompt (k consecutive entries per prompt)."""
        texts = [self.prompt_text(p) for p in prompts for _ in range(k)]
        p_ids = self.prompt_ids(texts)
        r_ids = self.generate(name, p_ids, salt=salt)
        return self.measure([p for p in prompts for _ in range(k)], texts, p_ids, r_ids)

    @cached_property
    def probes(self) -> dict[str, list[Prompt]]:
        """The probe prompts, by name (drawn from the world's "audit" split, never trained on)."""
        s, w = self.sizes, self.world
        share = self.cfg.world.wrong_belief_share
        jb = self.cfg.world.jailbreak_share

        def draw(family: str, n: int, keep, share_kept: float, salt: int) -> list[Prompt]:
            if n <= 0 or share_kept <= 0:
                return []
            pool = w.prompts("audit", int(n / share_kept * 1.5) + 8, seed=hash_seed(self.seed, salt) % 2**31,
                             families=(family,))
            return [p for p in pool if keep(p)][:n]

        return {
            "question": draw("question", s.question, lambda p: True, 1.0, 1),
            "belief": draw("belief", s.belief, lambda p: p.belief_correct is False, share, 2),
            "pushback": draw("pushback", s.pushback, lambda p: True, 1.0, 3),
            "feedback": draw("feedback", s.feedback, lambda p: p.belief_correct is False, share, 4),
            "harmful_plain": draw("harmful", s.harmful, lambda p: not p.wrapped, 1 - jb, 5),
            "harmful_wrapped": draw("harmful", s.harmful, lambda p: p.wrapped, jb, 6),
            "benign": draw("benign", s.benign, lambda p: True, 1.0, 7),
        }

    def probe_samples(self, name: str) -> dict[str, list[Sample]]:
        """Model `name`'s answers to every probe set (generated together, in one batch)."""
        key = (name, "probes")
        if key not in self._samples:
            flat = [(probe, p) for probe, ps in self.probes.items() for p in ps]
            samples = self.sample_prompts(name, [p for _, p in flat], salt=101)
            for (probe, _), s in zip(flat, samples, strict=True):
                s.extra["probe"] = probe
            self._samples[key] = samples
        out: dict[str, list[Sample]] = {probe: [] for probe in self.probes}
        for s in self._samples[key]:
            out[s.extra["probe"]].append(s)
        return out

    @cached_property
    def multi_prompts(self) -> list[Prompt]:
        """Prompts with many samples each: per-input diversity and best-of-n."""
        return self.world.prompts("audit", self.sizes.diversity_prompts, seed=hash_seed(self.seed, 8) % 2**31)

    def multi_samples(self, name: str) -> list[list[Sample]]:
        """Per prompt of `multi_prompts`: bon_n samples from the SFT policy (at least a best-of-n policy's n, for
        its KL), diversity_k from the policy."""
        key = (name, "multi")
        if key not in self._samples:
            k = max(self.sizes.bon_n, self.sizes.diversity_k, self.best_of_n or 0) if name == "sft" \
                else self.sizes.diversity_k
            self._samples[key] = self.sample_prompts(name, self.multi_prompts, salt=202, k=k)
        flat = self._samples[key]
        k = len(flat) // max(1, len(self.multi_prompts))
        return [flat[i * k: (i + 1) * k] for i in range(len(self.multi_prompts))]

    def eval_records(self, name: str) -> list[dict]:
        """One answer per held-out prompt, as written by the evaluation step (reused when it fits: the final
        policy) or generated here (a checkpoint). Keys: prompt_id, family, user_group, prompt, response,
        proxy, gold, kl, length."""
        key = (name, "eval")
        if key in self._samples:
            return self._samples[key]  # type: ignore[return-value]
        path = self.run / "eval" / f"{name}_samples.jsonl"
        if path.exists() and (name == "sft" or self.checkpoint is None):
            rows = read_jsonl(path)
            if name == "policy" and self.best_of_n is not None:
                # the evaluation step writes best-of-n's KL bound; the audit reports the estimated KL
                kl = float(self.best_of_n_kl(self.best_of_n).mean())
                rows = [{**r, "kl": kl} for r in rows]
        else:
            rows = self._generate_eval(name)
        self._samples[key] = rows  # type: ignore[assignment]
        return rows

    def eval_prompts(self) -> list[Prompt]:
        return self.world.prompts("eval", self.cfg.eval.n_prompts, seed=self.seed)

    def _generate_eval(self, name: str) -> list[dict]:
        prompts = self.eval_prompts()
        texts = [self.prompt_text(p) for p in prompts]
        p_ids = self.prompt_ids(texts)
        r_ids = self.generate(name, p_ids, salt=303)
        samples = self.measure(prompts, texts, p_ids, r_ids)
        if name == "sft":
            kl = np.zeros(len(prompts))
        elif self.best_of_n is not None:  # no per-sample KL: the policy's, estimated over SFT samples
            kl = np.full(len(prompts), float(self.best_of_n_kl(self.best_of_n).mean()))
        else:
            kl = self.sequence_kl(name, p_ids, r_ids)
        return [{"prompt_id": p.id, "family": p.family, "user_group": p.user_group, "prompt": s.prompt_text,
                 "response": s.text, "proxy": s.proxy, "gold": s.gold, "kl": float(k), "length": len(s.response_ids)}
                for p, s, k in zip(prompts, samples, kl, strict=True)]

    def eval_prompt_index(self) -> dict[str, Prompt]:
        return {p.id: p for p in self.eval_prompts()}
