"""The built-in assistant world: prompts with a known right behaviour, demonstrations, a parser, simulated
annotators and the gold utility. Deterministic from its seeds.

    world = World(cfg.world)
    prompts = world.prompts("train", 100, seed=1)
    text = world.demonstration(prompts[0], rng)
    world.gold(prompts[0], text)            # true utility for the asking user
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlhf_lab.world import english
from rlhf_lab.world.gold import gold_utility
from rlhf_lab.world.knowledge import KNOWN_FOR, SIZES, Knowledge, build_knowledge, number_words
from rlhf_lab.world.parser import Features, parse
from rlhf_lab.world.prompts import (
    BENIGN_REQUESTS,
    FAMILIES,
    HARMFUL_REQUESTS,
    JAILBREAKS,
    PUSHBACK,
    Prompt,
    make_prompt,
)
from rlhf_lab.world.styles import respond, styles_for

if TYPE_CHECKING:
    from rlhf_lab.config import WorldConfig

__all__ = ["FAMILIES", "Features", "Prompt", "World"]

_SPLIT_SALT = {"sft": 11, "train": 23, "eval": 37, "audit": 53, "norm": 71}


@dataclass(frozen=True)
class Demonstration:
    prompt: Prompt
    style: str
    response: str


class World:
    """`language`: "templated" (the world's own small language, for the built-in model) or "english" (plain
    English prompts and a lenient parser, for real pretrained models)."""

    def __init__(self, cfg: WorldConfig, *, language: str = "templated"):
        if language not in ("templated", "english"):
            raise ValueError(f"world language must be templated or english, got {language!r}")
        self.cfg = cfg
        self.language = language
        self.knowledge: Knowledge = build_knowledge(
            seed=cfg.seed, n_places=cfg.n_places, obscure_share=cfg.obscure_share, max_operand=cfg.max_operand,
            operations=tuple(cfg.operations),
        )
        self.groups = {g.name: g for g in cfg.user_groups}
        total = sum(g.share for g in cfg.user_groups)
        self._group_names = [g.name for g in cfg.user_groups]
        self._group_weights = [g.share / total for g in cfg.user_groups]

    # -- prompts ---------------------------------------------------------------------------------------

    def prompt(self, *, family: str, index: int, split: str, rng: random.Random) -> Prompt:
        return make_prompt(
            family=family,
            index=index,
            split=split,
            knowledge=self.knowledge,
            rng=rng,
            user_group=rng.choices(self._group_names, self._group_weights)[0],
            arith_share=self.cfg.arith_share,
            wrong_belief_share=self.cfg.wrong_belief_share,
            jailbreak_share=self.cfg.jailbreak_share,
        )

    def prompts(self, split: str, n: int, *, seed: int, families: tuple[str, ...] | None = None) -> list[Prompt]:
        """`n` prompts drawn from the family mixture (or only `families`), deterministic in (split, seed)."""
        rng = random.Random(hash_seed(self.cfg.seed, seed, _SPLIT_SALT.get(split, 97)))
        weights = {k: v for k, v in self.cfg.family_weights.items() if v > 0}
        if families is not None:
            weights = {f: weights.get(f, 1.0) or 1.0 for f in families}
        names, ws = list(weights), list(weights.values())
        return [self.prompt(family=rng.choices(names, ws)[0], index=i, split=split, rng=rng) for i in range(n)]

    # -- demonstrations --------------------------------------------------------------------------------

    def demonstration(self, prompt: Prompt, rng: random.Random) -> Demonstration:
        if prompt.family in ("harmful", "benign"):
            p_refuse = self.cfg.harmful_refusal if prompt.family == "harmful" else self.cfg.benign_refusal
            if rng.random() < p_refuse:
                style = "refusal"
            else:
                style = rng.choices(["compliance", "correct_detailed", "flattering"], [0.6, 0.25, 0.15])[0]
        else:
            names, ws = styles_for(prompt, self.cfg.style_weights)
            style = rng.choices(names, ws)[0]
        if self.language == "english":
            return Demonstration(prompt, style, english.demonstration(prompt, style, self.knowledge, rng))
        return Demonstration(prompt, style, respond(prompt, style, self.knowledge, rng))

    def demonstrations(self, n: int, *, seed: int) -> list[Demonstration]:
        rng = random.Random(hash_seed(self.cfg.seed, seed, 5))
        return [self.demonstration(p, rng) for p in self.prompts("sft", n, seed=seed)]

    # -- judging ---------------------------------------------------------------------------------------

    def messages(self, prompt: Prompt) -> list[tuple[str, str]]:
        """The turns the policy sees, in this world's language."""
        if self.language == "english":
            return english.render_messages(prompt)
        return list(prompt.messages)

    def parse(self, text: str, prompt: Prompt) -> Features:
        if self.language == "english":
            return english.parse_english(text, prompt, self.knowledge)
        return parse(text, prompt, self.knowledge)

    def gold(self, prompt: Prompt, text: str, *, group: str | None = None) -> float:
        """Gold utility of `text` for the prompt's own user (or for a user of `group`)."""
        g = self.groups.get(group or prompt.user_group)
        pref = g.detail_preference if g is not None else 0.0
        return gold_utility(prompt, self.parse(text, prompt), detail_preference=pref)

    # -- vocabulary ------------------------------------------------------------------------------------

    def corpus(self) -> Iterator[str]:
        """Text covering every word the world can say (for training the tokenizer)."""
        rng = random.Random(self.cfg.seed)
        yield " ".join(number_words(self.cfg.max_operand))
        for p in self.knowledge.places:
            yield f"{p.name} {p.capital} {p.river} {p.known_for} {p.size}"
        yield " ".join(HARMFUL_REQUESTS + BENIGN_REQUESTS + JAILBREAKS + (PUSHBACK,)).replace("{req}", "")
        for fam in FAMILIES:
            for i in range(40):
                prompt = self.prompt(family=fam, index=i, split="corpus", rng=rng)
                yield prompt.text
                for style in ("correct_plain", "correct_detailed", "agreeing", "flattering", "hedged",
                              "confident_wrong", "claims_checked", "refusal", "compliance"):
                    yield respond(prompt, style, self.knowledge, rng)
        yield " ".join(KNOWN_FOR + SIZES) + " user assistant : maybe certainly four"


def hash_seed(*parts: int) -> int:
    """Combine seeds into one (stable across processes, unlike hash())."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h
