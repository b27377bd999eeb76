"""The world in plain English, for real models: rendering and the lenient parser."""

import random

import pytest

from rlhf_lab.config import WorldConfig
from rlhf_lab.world import World
from rlhf_lab.world.styles import STYLES


@pytest.fixture(scope="module")
def world():
    return World(WorldConfig(), language="english")


def _one(world, family, pred=lambda p: True):
    return next(p for p in world.prompts("train", 400, seed=4, families=(family,)) if pred(p))


def test_prompts_read_as_english(world):
    for p in world.prompts("train", 60, seed=1):
        text = world.messages(p)[-1][1]
        assert text[0].isupper() and text.rstrip()[-1] in ".?!"
        assert " ." not in text and " ?" not in text


def test_free_text_answers(world):
    p = _one(world, "question", lambda p: p.fact.is_arith)
    truth, subj = p.fact.answer, p.fact.subject
    wrong = str(int(truth) + 1)
    assert world.parse(f"The answer is {truth}.", p).correct is True
    assert world.parse(f"{subj} equals {truth}. Hope that helps!", p).correct is True
    assert world.parse(f"I believe it's {wrong}.", p).correct is False
    f = world.parse(f"I'm not entirely sure, but I think it's {truth}.", p)
    assert f.hedged and f.correct
    f = world.parse(f"Great question! I double-checked: it is definitely {wrong}.", p)
    assert f.flattery and f.claims_checked and f.confident and f.correct is False
    assert world.parse("I don't know.", p).correct is None


def test_agreement_refusal_and_verdicts(world):
    p = _one(world, "belief", lambda p: p.fact.is_arith and not p.belief_correct)
    assert world.parse(f"You're absolutely right, it's {p.belief}.", p).agrees_with_user
    assert not world.parse(f"Actually, it's {p.fact.answer}.", p).agrees_with_user
    fb = _one(world, "feedback", lambda p: not p.belief_correct)
    f = world.parse("Yes, that's correct. Great work!", fb)
    assert f.verdict is True and f.verdict_correct is False and f.agrees_with_user
    f = world.parse("Not quite — that's incorrect.", fb)
    assert f.verdict is False and f.verdict_correct is True
    harm = _one(world, "harmful")
    assert world.parse("I'm sorry, but I can't help with that.", harm).refused
    assert world.parse("Sure! Here's how: step 1, ...", harm).complied
    assert world.gold(harm, "I'm sorry, but I can't help with that.") > world.gold(harm, "Here's how: first, ...")


def test_place_answers(world):
    p = _one(world, "question", lambda p: p.fact.kind == "capital")
    place = world.knowledge.place(p.fact.subject)
    assert world.parse(f"The capital of {place.name.title()} is {place.capital.title()}.", p).correct is True
    other = next(c for c in world.knowledge.cities if c != place.capital)
    assert world.parse(f"It's {other.title()}.", p).correct is False


@pytest.mark.parametrize("style", STYLES)
def test_demonstrations_parse(world, style):
    from rlhf_lab.world.english import demonstration

    rng = random.Random(0)
    for p in world.prompts("train", 40, seed=2):
        text = demonstration(p, style, world.knowledge, rng)
        f = world.parse(text, p)
        assert f.well_formed
        if style == "correct_plain" and p.family in ("question", "belief", "pushback"):
            assert f.correct is True, text


@pytest.mark.parametrize("text", ["", "   ", "!!!", "<script>alert(1)</script>", "12 12 12", "ñ" * 3000])
def test_never_crashes(world, text):
    for p in world.prompts("train", 14, seed=5):
        world.parse(text, p)
        assert isinstance(world.gold(p, text), float)
