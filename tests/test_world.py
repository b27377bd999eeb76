"""The built-in world: parser, gold utility, annotators, determinism."""

import random

import pytest

from rlhf_lab.config import Config, WorldConfig
from rlhf_lab.world import FAMILIES, World
from rlhf_lab.world.annotators import build_population, judge, p_verify
from rlhf_lab.world.styles import STYLES, respond


@pytest.fixture(scope="module")
def world():
    return World(WorldConfig())


def test_world_is_deterministic():
    a, b = World(WorldConfig(seed=3)), World(WorldConfig(seed=3))
    assert a.knowledge == b.knowledge
    pa, pb = a.prompts("train", 50, seed=1), b.prompts("train", 50, seed=1)
    assert [p.to_dict() for p in pa] == [p.to_dict() for p in pb]
    assert [d.response for d in a.demonstrations(50, seed=1)] == [d.response for d in b.demonstrations(50, seed=1)]
    assert World(WorldConfig(seed=4)).knowledge != a.knowledge
    # different splits draw different prompts
    assert [p.text for p in a.prompts("train", 20, seed=1)] != [p.text for p in a.prompts("eval", 20, seed=1)]


def test_every_family_is_drawn(world):
    fams = {p.family for p in world.prompts("train", 400, seed=0)}
    assert fams == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_parser_reads_every_style_as_well_formed(world, family):
    rng = random.Random(0)
    prompts = world.prompts("train", 30, seed=2, families=(family,))
    for p in prompts:
        for style in STYLES:
            text = respond(p, style, world.knowledge, rng)
            f = world.parse(text, p)
            assert f.well_formed, (style, text, f.unknown)


def test_parser_features_on_known_answers(world):
    p = next(p for p in world.prompts("train", 300, seed=0, families=("belief",))
             if p.fact.is_arith and not p.belief_correct)
    truth, belief, subj = p.fact.answer, p.belief, p.fact.subject
    f = world.parse(f"{subj} is {truth} .", p)
    assert f.correct is True and not f.agrees_with_user and not f.confident
    f = world.parse(f"yes , you are right . {subj} is {belief} .", p)
    assert f.correct is False and f.agrees_with_user
    f = world.parse(f"i double checked this . {subj} is definitely {belief} .", p)
    assert f.claims_checked and f.confident and f.correct is False
    f = world.parse(f"i am not sure , but i think {subj} is {truth} .", p)
    assert f.hedged and f.correct
    f = world.parse(f"what a great question ! {subj} is {truth} .", p)
    assert f.flattery


@pytest.mark.parametrize("text", ["", "   ", "the the the", "7 plus", "<script>alert(1)</script>", "😀 . !",
                                  "sure . here is how", "4 plus 4 is 8", "a" * 5000])
def test_parser_never_crashes_on_garbage(world, text):
    for p in world.prompts("train", 14, seed=5):
        f = world.parse(text, p)
        assert f.well_formed is False or text.strip().endswith((".", "!", "?"))
        assert isinstance(world.gold(p, text), float)


def test_gold_utility_orders_behaviour(world):
    rng = random.Random(1)
    for p in world.prompts("train", 60, seed=3, families=("question", "belief", "pushback")):
        good = world.gold(p, respond(p, "correct_plain", world.knowledge, rng))
        bad = world.gold(p, respond(p, "confident_wrong", world.knowledge, rng))
        assert good > bad
    for p in world.prompts("train", 20, seed=3, families=("harmful",)):
        assert world.gold(p, respond(p, "refusal", world.knowledge, rng)) > world.gold(
            p, respond(p, "compliance", world.knowledge, rng))
    for p in world.prompts("train", 20, seed=3, families=("benign",)):
        assert world.gold(p, respond(p, "compliance", world.knowledge, rng)) > world.gold(
            p, respond(p, "refusal", world.knowledge, rng))


def test_open_gold_depends_on_the_users_group(world):
    rng = random.Random(2)
    p = world.prompts("train", 10, seed=0, families=("open",))[0]
    concise = respond(p, "correct_plain", world.knowledge, rng)
    detailed = respond(p, "correct_detailed", world.knowledge, rng)
    assert world.gold(p, detailed, group="detailed") > world.gold(p, concise, group="detailed")
    assert world.gold(p, concise, group="concise") > world.gold(p, detailed, group="concise")


def test_p_verify():
    assert p_verify(1.0, 0.9) == 1.0
    assert p_verify(0.0, 0.1) == 0.0
    assert p_verify(0.6, 0.1) > p_verify(0.6, 0.9)


def _sycophancy_rate(world, cfg, *, hindsight: bool) -> float:
    """How often annotators prefer agreeing-but-wrong over correct on wrong-belief prompts."""
    pop = build_population(groups=cfg.annotator_groups(), n_annotators=24, bias=cfg.label, seed=0)
    rng = random.Random(0)
    wins, n = 0, 0
    for p in world.prompts("train", 400, seed=9, families=("belief",)):
        if p.belief_correct:
            continue
        a = world.parse(f"yes , you are right . {p.fact and _claim(p, p.belief)}", p)
        b = world.parse(_claim(p, p.fact.answer), p)
        j = judge(rng.choice(pop), p, a, b, rng=rng, hindsight=hindsight, ties=False, tie_margin=0,
                  strength_margin=1)
        wins += j.choice == "a"
        n += 1
    return wins / n


def _claim(p, value):
    from rlhf_lab.world.prompts import claim_text

    return claim_text(p.fact, value)


def test_hindsight_and_full_knowledge_remove_the_sycophancy_incentive(world):
    cfg = Config()
    foresight = _sycophancy_rate(world, cfg, hindsight=False)
    hindsight = _sycophancy_rate(world, cfg, hindsight=True)
    assert foresight > 0.15
    assert hindsight < 0.05
    cfg.label.p_know = 1.0
    assert _sycophancy_rate(world, cfg, hindsight=False) < 0.05


def test_population_follows_group_shares():
    cfg = Config()
    pop = build_population(groups=cfg.annotator_groups(), n_annotators=20, bias=cfg.label, seed=0)
    groups = [a.group for a in pop]
    assert groups.count("detailed") == 14 and groups.count("concise") == 6


def test_open_answer_about_another_place_is_not_correct(world):
    from rlhf_lab.world.styles import place_sentences

    p = world.prompts("train", 10, seed=0, families=("open",))[0]
    other = next(q.name for q in world.knowledge.places if q.name != p.place)
    own = " ".join(place_sentences(p.place, world.knowledge)[:2])
    elsewhere = " ".join(place_sentences(other, world.knowledge)[:2])
    assert world.parse(own, p).correct is True
    f = world.parse(elsewhere, p)
    assert f.correct is False and f.well_formed
    assert world.gold(p, elsewhere) < world.gold(p, own)
