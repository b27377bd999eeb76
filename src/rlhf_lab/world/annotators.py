"""The simulated annotator population (step 2 of RLHF without people).

Each annotator belongs to a group with a taste for detail, has a chance `p_know` of being able to verify
an answer (people have limited time and knowledge), and weights on the cues people fall back on when
they cannot verify: agreement with the user's stated belief, confidence, a claim of having checked,
hedging. Flattery is a liking rather than a guess at correctness, so it sways them whether they verify or
not (counting it only when unverified was tried, and lowered the early gold gain on both seeds tried).
The choice follows Bradley–Terry with noise temperature τ:

    P(A ≻ B) = σ((u(A) − u(B)) / τ)

with an optional tie when |u(A) − u(B)| < tie_margin, and a strength ("much" when the gap is large).

Hindsight mode (RLHS, Liang et al. 2025, arXiv:2501.08617): the annotator sees the outcome before
judging, so correctness is always verified and harm always recognised — the judgement follows the
consequence, not the impression.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from rlhf_lab.world.gold import style_score
from rlhf_lab.world.parser import Features
from rlhf_lab.world.prompts import Prompt


def p_verify(p_know: float, difficulty: float) -> float:
    """Chance of checking an item: p_know ** (0.5 + 2·difficulty).

    p_know = 1 always verifies; harder items are verified less often; p_know = 0 never."""
    if p_know >= 1.0:
        return 1.0
    return p_know ** (0.5 + 2.0 * difficulty)


@dataclass(frozen=True)
class Annotator:
    id: str
    group: str
    detail_preference: float
    p_know: float
    tau: float
    w_correct: float
    w_agree: float
    w_confident: float
    w_checked: float
    w_hedge: float
    w_flattery: float
    w_style: float
    p_spot_harm: float
    p_spot_jailbreak: float


@dataclass(frozen=True)
class Judgement:
    choice: str  # "a" | "b" | "tie"
    strength: str | None  # "slightly" | "much" | None for ties
    p_a: float  # P(A ≻ B) under the annotator's model, for diagnostics
    verified: bool
    u_a: float
    u_b: float


def utility(ann: Annotator, prompt: Prompt, f: Features, *, verify: bool, spot: bool) -> float:
    """What annotator `ann` thinks a response with features `f` is worth.

    `verify`: they can check correctness on this item. `spot`: they recognise a harmful request."""
    if not f.well_formed:
        return -2.0
    u = ann.w_flattery * f.flattery - (0.3 if f.repeated else 0.0)
    fam = prompt.family
    if fam == "harmful":
        if spot:
            return u + (1.0 if f.refused else -3.0 if f.complied else -0.5)
        # Not seen as harmful: a refusal just looks unhelpful.
        return u + (1.0 if f.complied else -1.0 if f.refused else -0.5)
    if fam == "benign":
        if verify:
            return u + (1.0 if f.complied else -1.0 if f.refused else -0.5)
        # Read in a hurry, "kill" and "shoot" look risky: a refusal looks responsible.
        return u + (0.5 if f.refused else -0.5)
    u += ann.w_style * ann.detail_preference * style_score(f.detail)
    if fam == "open":
        if verify:
            return u + ann.w_correct * (0.0 if f.correct is None else 0.5 if f.correct else -1.0)
        return u + ann.w_confident * f.confident + ann.w_checked * f.claims_checked - ann.w_hedge * f.hedged
    # question, belief, pushback, feedback
    judged = f.verdict_correct if fam == "feedback" else f.correct
    answered = (f.verdict if fam == "feedback" else f.answer) is not None
    if verify:  # false side remarks count against a response only for those who check
        u -= 0.5 * ann.w_correct * min(f.wrong_facts, 2)
    if not answered:
        return u - 0.5 * ann.w_correct
    if verify:
        return u + ann.w_correct * (1.0 if judged else -1.0)
    # Cannot check: judge by impression.
    return u + (ann.w_agree * f.agrees_with_user + ann.w_confident * f.confident
                + ann.w_checked * f.claims_checked - ann.w_hedge * f.hedged)


def judge(
    ann: Annotator,
    prompt: Prompt,
    fa: Features,
    fb: Features,
    *,
    rng: random.Random,
    hindsight: bool,
    ties: bool,
    tie_margin: float,
    strength_margin: float,
) -> Judgement:
    """One annotator's choice between responses A and B to `prompt`."""
    verify = hindsight or rng.random() < p_verify(ann.p_know, prompt.difficulty)
    spot = hindsight or rng.random() < (ann.p_spot_jailbreak if prompt.wrapped else ann.p_spot_harm)
    ua = utility(ann, prompt, fa, verify=verify, spot=spot)
    ub = utility(ann, prompt, fb, verify=verify, spot=spot)
    gap = ua - ub
    p_a = 1.0 / (1.0 + math.exp(-gap / ann.tau))
    if ties and abs(gap) < tie_margin:
        return Judgement("tie", None, p_a, verify, ua, ub)
    choice = "a" if rng.random() < p_a else "b"
    strength = "much" if abs(gap) >= strength_margin else "slightly"
    return Judgement(choice, strength, p_a, verify, ua, ub)


def build_population(*, groups: list, n_annotators: int, bias, seed: int) -> list[Annotator]:
    """Annotators per group in proportion to the group shares, each with individually jittered weights.

    `groups`: objects with name / share / detail_preference. `bias`: the label config section."""
    rng = random.Random(seed)
    total = sum(g.share for g in groups)
    counts = [max(1, round(n_annotators * g.share / total)) for g in groups]
    out: list[Annotator] = []

    def jit(w: float) -> float:
        return w * math.exp(rng.gauss(0.0, bias.jitter))

    for g, count in zip(groups, counts, strict=True):
        for _ in range(count):
            out.append(
                Annotator(
                    id=f"sim-{g.name}-{len(out):03d}",
                    group=g.name,
                    detail_preference=g.detail_preference,
                    p_know=min(1.0, max(0.0, bias.p_know + (rng.uniform(-0.1, 0.1) if bias.p_know < 1 else 0))),
                    tau=bias.noise,
                    w_correct=jit(bias.w_correct),
                    w_agree=jit(bias.w_agree),
                    w_confident=jit(bias.w_confident),
                    w_checked=jit(bias.w_checked),
                    w_hedge=jit(bias.w_hedge),
                    w_flattery=jit(bias.w_flattery),
                    w_style=jit(bias.w_style),
                    p_spot_harm=bias.p_spot_harm,
                    p_spot_jailbreak=bias.p_spot_jailbreak,
                )
            )
    return out
