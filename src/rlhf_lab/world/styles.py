"""Response styles of the SFT demonstrations.

The SFT policy should be *diverse*: it imitates a mix of good and bad assistant habits, so that
preference learning has something to choose between. The mix is set by `world.style_weights`; a style
that does not apply to a family (agreeing with a belief nobody stated) falls back to its nearest kin.

Styles (DESIGN.md): correct_plain, correct_detailed, agreeing, flattering, hedged, confident_wrong,
claims_checked, refusal, compliance.
"""

from __future__ import annotations

import random

from rlhf_lab.world.knowledge import Fact, Knowledge, wrong_answer
from rlhf_lab.world.prompts import Prompt, claim_text

STYLES = (
    "correct_plain",
    "correct_detailed",
    "agreeing",
    "flattering",
    "hedged",
    "confident_wrong",
    "claims_checked",
    "refusal",
    "compliance",
)

REFUSAL = "sorry , i can not help with that . it could hurt someone ."
COMPLY = "sure . here is how : step one , get what you need . step two , take your time ."
COMPLY_MORE = "step three , check the result ."
FLATTERY = ("what a great question !", "good point !", "great work !")
AGREE = "yes , you are right ."
FLIP = "sorry , you are right ."
HEDGE = "i am not sure , but i think"
CHECKED = "i double checked this ."
SURE = "yes , i am sure ."
VERDICT_RIGHT = "yes , that is right ."
VERDICT_WRONG = "no , that is not right ."


def explanation(fact: Fact, knowledge: Knowledge) -> list[str]:
    """Detail sentences that support an answer (true statements)."""
    if fact.is_arith:
        direction = {"plus": "count up", "minus": "count down", "times": "add up"}[fact.op]
        if fact.op == "times":
            first = f"to see this , take {fact.b} groups of {fact.a} and add up ."
        else:
            first = f"to see this , start at {fact.a} and {direction} {fact.b} ."
        return [first, f"so the answer is {fact.answer} ."]
    place = knowledge.place(fact.subject)
    return [f"{place.name} is known for its {place.known_for} .", f"{place.capital} is a {place.size} city ."]


def place_sentences(place_name: str, knowledge: Knowledge) -> list[str]:
    p = knowledge.place(place_name)
    return [
        f"{p.name} is a country .",
        f"the capital of {p.name} is {p.capital} .",
        f"the river of {p.name} is {p.river} .",
        f"{p.name} is known for its {p.known_for} .",
        f"{p.capital} is a {p.size} city .",
    ]


def _answer_response(prompt: Prompt, style: str, knowledge: Knowledge, rng: random.Random) -> str:
    fact = prompt.fact
    assert fact is not None
    truth = fact.answer
    wrong = wrong_answer(fact, knowledge, rng)
    detail = " ".join(explanation(fact, knowledge)[: rng.randint(1, 2)])
    lead = SURE + " " if prompt.family == "pushback" else ""
    if style == "correct_plain":
        return lead + claim_text(fact, truth)
    if style == "correct_detailed":
        return f"{lead}{claim_text(fact, truth)} {detail}"
    if style == "agreeing":
        if prompt.family == "pushback":
            return f"{FLIP} {claim_text(fact, wrong)}"
        # Asserts whatever the user believes (right or wrong).
        return f"{AGREE} {claim_text(fact, prompt.belief or truth)}"
    if style == "flattering":
        return f"{rng.choice(FLATTERY[:2])} {claim_text(fact, truth)}"
    if style == "hedged":
        value = truth if rng.random() < 0.6 else wrong
        return f"{HEDGE} {claim_text(fact, value)}"
    if style == "confident_wrong":
        prefix = FLIP + " " if prompt.family == "pushback" else ""
        return prefix + claim_text(fact, wrong, adverb="definitely")
    if style == "claims_checked":
        value = truth if rng.random() < 0.6 else wrong
        return f"{CHECKED} {claim_text(fact, value)}"
    if style == "refusal":
        return REFUSAL
    raise ValueError(style)


def _feedback_response(prompt: Prompt, style: str, knowledge: Knowledge, rng: random.Random) -> str:
    fact = prompt.fact
    assert fact is not None
    truth = fact.answer
    user_right = prompt.belief_correct

    def verdict(right: bool) -> str:
        return VERDICT_RIGHT if right else f"{VERDICT_WRONG} {claim_text(fact, truth)}"

    if style == "correct_plain":
        return verdict(bool(user_right))
    if style == "correct_detailed":
        return f"{verdict(bool(user_right))} {' '.join(explanation(fact, knowledge)[:1])}"
    if style == "agreeing":
        return f"{VERDICT_RIGHT} great work !"
    if style == "flattering":
        return f"great work ! {verdict(bool(user_right))}"
    if style == "hedged":
        return f"{HEDGE} it is right ." if rng.random() < 0.5 else f"{HEDGE} it is not right ."
    if style == "confident_wrong":
        # The opposite verdict, said with confidence.
        if user_right:
            return f"that is definitely wrong . {claim_text(fact, wrong_answer(fact, knowledge, rng))}"
        return "that is definitely right ."
    if style == "claims_checked":
        honest = rng.random() < 0.6
        return f"{CHECKED} {verdict(bool(user_right) if honest else not user_right)}"
    if style == "refusal":
        return REFUSAL
    raise ValueError(style)


def _request_response(prompt: Prompt, style: str, rng: random.Random) -> str:
    if style == "refusal":
        return REFUSAL
    if style == "correct_detailed":
        return f"{COMPLY} {COMPLY_MORE}"
    if style == "flattering":
        return f"{FLATTERY[0]} {COMPLY}"
    return COMPLY


def _open_response(prompt: Prompt, style: str, knowledge: Knowledge, rng: random.Random) -> str:
    assert prompt.place is not None
    facts = place_sentences(prompt.place, knowledge)
    p = knowledge.place(prompt.place)
    concise = " ".join(facts[:2])
    detailed = " ".join(facts[:2] + rng.sample(facts[2:], k=rng.randint(2, 3)))
    if style in ("correct_plain", "agreeing"):
        return concise
    if style == "correct_detailed":
        return detailed
    if style == "flattering":
        return f"{FLATTERY[0]} {concise if rng.random() < 0.5 else detailed}"
    if style == "hedged":
        return f"{HEDGE} {facts[1]}"
    if style == "confident_wrong":
        wrong_city = rng.choice([c for c in knowledge.cities if c != p.capital])
        return f"{facts[0]} the capital of {p.name} is definitely {wrong_city} ."
    if style == "claims_checked":
        return f"{CHECKED} {concise}"
    if style == "refusal":
        return REFUSAL
    raise ValueError(style)


def respond(prompt: Prompt, style: str, knowledge: Knowledge, rng: random.Random) -> str:
    """The demonstration text for `prompt` in `style`."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")
    if prompt.family in ("harmful", "benign"):
        return _request_response(prompt, style, rng)
    if style == "compliance":
        style = "correct_plain"
    if prompt.family == "open":
        return _open_response(prompt, style, knowledge, rng)
    if prompt.family == "feedback":
        return _feedback_response(prompt, style, knowledge, rng)
    return _answer_response(prompt, style, knowledge, rng)


def styles_for(prompt: Prompt, weights: dict[str, float]) -> tuple[list[str], list[float]]:
    """The styles that make sense for a family, with their mixture weights."""
    if prompt.family in ("harmful", "benign"):
        names = ["refusal", "compliance", "correct_detailed", "flattering"]
    else:
        names = [s for s in STYLES if s != "compliance"]
        if prompt.family == "question" or prompt.family == "open":
            names = [s for s in names if s != "agreeing"]
    ws = [max(weights.get(s, 0.0), 0.0) for s in names]
    if sum(ws) <= 0:
        ws = [1.0] * len(names)
    return names, ws
