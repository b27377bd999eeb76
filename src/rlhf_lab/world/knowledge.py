"""What is true in the built-in world: small arithmetic and a generated atlas of fictional places.

Every fact carries a *difficulty* in [0, 1]: how hard it is for an annotator to check it. Adding 3 and 4 is
easy to check; the river of an obscure fictional country is not. The annotators' chance of verifying a
response depends on it (see `annotators.p_verify`).

The places are fictional so that no real-world claim is ever made.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

OPERATIONS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
# Checking a product in your head is harder than checking a sum.
OPERATION_DIFFICULTY = {"plus": 0.1, "minus": 0.2, "times": 0.45}

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou"]
_CODAS = ["", "n", "r", "s", "l", "th", "k"]

# What a place can be known for, in open answers ("it is known for its ...").
KNOWN_FOR = ["tea", "bridges", "music", "horses", "glass", "wool", "markets", "gardens", "boats", "salt"]
# Adjectives for detail sentences in open answers.
SIZES = ["small", "large", "quiet", "busy", "old", "green"]


@dataclass(frozen=True)
class Place:
    """A fictional country. `obscure` places are hard for annotators to check."""

    name: str
    capital: str
    river: str
    known_for: str
    size: str
    obscure: bool

    @property
    def difficulty(self) -> float:
        return 0.9 if self.obscure else 0.5


@dataclass(frozen=True)
class Fact:
    """One checkable fact a prompt can ask about.

    `kind` is "arith" (subject = "7 plus 5", answer = "12") or "capital" / "river" (subject = the place).
    """

    kind: str
    subject: str
    answer: str
    difficulty: float
    a: int = 0
    b: int = 0
    op: str = ""

    @property
    def is_arith(self) -> bool:
        return self.kind == "arith"


@dataclass(frozen=True)
class Knowledge:
    places: tuple[Place, ...]
    arith: tuple[Fact, ...]

    def place(self, name: str) -> Place:
        for p in self.places:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def place_facts(self) -> tuple[Fact, ...]:
        out = []
        for p in self.places:
            out.append(Fact(kind="capital", subject=p.name, answer=p.capital, difficulty=p.difficulty))
            out.append(Fact(kind="river", subject=p.name, answer=p.river, difficulty=p.difficulty))
        return tuple(out)

    @property
    def cities(self) -> tuple[str, ...]:
        return tuple(p.capital for p in self.places)

    @property
    def rivers(self) -> tuple[str, ...]:
        return tuple(p.river for p in self.places)


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))


def build_knowledge(*, seed: int, n_places: int, obscure_share: float, max_operand: int,
                    operations: tuple[str, ...] = ("plus", "minus")) -> Knowledge:
    """Generate the world's facts; the same seed always gives the same world."""
    rng = random.Random(seed)
    names: set[str] = set()

    def fresh(syllables: int) -> str:
        while True:
            w = _word(rng, syllables)
            if w not in names and len(w) >= 4:
                names.add(w)
                return w

    n_obscure = round(n_places * obscure_share)
    places = []
    for i in range(n_places):
        places.append(
            Place(
                name=fresh(2),
                capital=fresh(2),
                river=fresh(2),
                known_for=rng.choice(KNOWN_FOR),
                size=rng.choice(SIZES),
                obscure=i < n_obscure,
            )
        )
    rng.shuffle(places)

    arith = []
    for op in operations:
        fn = OPERATIONS[op]
        for a in range(1, max_operand + 1):
            for b in range(1, max_operand + 1):
                if op == "minus" and b > a:
                    continue
                difficulty = OPERATION_DIFFICULTY[op] + (0.1 if fn(a, b) > 20 else 0.0)
                arith.append(
                    Fact(kind="arith", subject=f"{a} {op} {b}", answer=str(fn(a, b)),
                         difficulty=difficulty, a=a, b=b, op=op)
                )
    return Knowledge(places=tuple(places), arith=tuple(arith))


def wrong_answer(fact: Fact, knowledge: Knowledge, rng: random.Random) -> str:
    """A plausible wrong answer to `fact` (a near miss for arithmetic, another real name for places)."""
    if fact.is_arith:
        truth = int(fact.answer)
        candidates = [truth + d for d in (-2, -1, 1, 2, 10, -10) if truth + d >= 0]
        return str(rng.choice(candidates))
    pool = knowledge.cities if fact.kind == "capital" else knowledge.rivers
    return rng.choice([x for x in pool if x != fact.answer])


def number_words(max_operand: int) -> list[str]:
    """Every number the world can say (answers and near misses)."""
    top = max_operand * max_operand + 10
    return [str(i) for i in range(0, top + 1)]
