"""Agreement metrics against values computed by hand from their definitions."""

from __future__ import annotations

import pytest

from rlhf_lab.annotate import agreement

# Two annotators, four items:        item  1  2  3  4
#                                      x   a  a  b  b
#                                      y   a  b  b  b
TWO = [(1, "x", "a"), (1, "y", "a"), (2, "x", "a"), (2, "y", "b"),
       (3, "x", "b"), (3, "y", "b"), (4, "x", "b"), (4, "y", "b")]


def test_krippendorff_alpha_two_annotators_by_hand():
    # Coincidence matrix (each item contributes its ordered pairs, weight 1/(m_u − 1) = 1):
    # o_aa = 2 (item 1), o_ab = o_ba = 1 (item 2), o_bb = 4 (items 3, 4); n = 8, n_a = 3, n_b = 5.
    # D_o = (o_ab + o_ba) / n = 2/8;  D_e = 2·n_a·n_b / (n(n − 1)) = 30/56;  α = 1 − D_o/D_e = 16/30.
    assert agreement.krippendorff_alpha(TWO) == pytest.approx(16 / 30)


def test_krippendorff_alpha_with_missing_labels_and_three_annotators():
    # item 1: a a a (m=3), item 2: a b (m=2), item 3: b b b (m=3); item 4 has one label (not pairable).
    labels = [(1, "x", "a"), (1, "y", "a"), (1, "z", "a"), (2, "x", "a"), (2, "z", "b"),
              (3, "x", "b"), (3, "y", "b"), (3, "z", "b"), (4, "y", "tie")]
    # o_aa = 6/2 + 0 = 3, o_ab = o_ba = 1, o_bb = 6/2 = 3; n = 8, n_a = n_b = 4.
    # D_o = 2/8; D_e = 2·4·4/(8·7) = 32/56; α = 1 − (1/4)/(32/56) = 1 − 56/128 = 9/16.
    assert agreement.krippendorff_alpha(labels) == pytest.approx(9 / 16)


def test_krippendorff_alpha_undefined_cases_are_none():
    assert agreement.krippendorff_alpha([]) is None
    assert agreement.krippendorff_alpha([(1, "x", "a"), (2, "y", "b")]) is None  # nothing pairable
    assert agreement.krippendorff_alpha([(1, "x", "a"), (1, "y", "a"), (2, "x", "a"), (2, "y", "a")]) is None


def test_perfect_agreement_is_one():
    labels = [(i, ann, c) for i, c in enumerate("abab") for ann in ("x", "y")]
    assert agreement.krippendorff_alpha(labels) == pytest.approx(1.0)
    assert agreement.pairwise_kappa(labels)[0]["kappa"] == pytest.approx(1.0)


def test_cohen_kappa_by_hand():
    # agreements on items 1, 3, 4, 5 → p_o = 4/6; both say a 3 of 6 times → p_e = ½·½ + ½·½ = ½.
    # κ = (2/3 − 1/2) / (1 − 1/2) = 1/3.
    assert agreement.cohen_kappa(list("aabbab"), list("abbbaa")) == pytest.approx(1 / 3)
    # With a tie category: x = a a tie b, y = a b tie b → p_o = 3/4,
    # p_e = (2·1 + 1·1 + 1·2)/16 = 5/16, κ = (3/4 − 5/16)/(11/16) = 7/11.
    assert agreement.cohen_kappa(["a", "a", "tie", "b"], ["a", "b", "tie", "b"]) == pytest.approx(7 / 11)


def test_cohen_kappa_edge_cases():
    assert agreement.cohen_kappa([], []) is None
    assert agreement.cohen_kappa(["a", "a"], ["a", "a"]) is None  # p_e = 1: chance explains everything
    with pytest.raises(ValueError, match="one length"):
        agreement.cohen_kappa(["a"], ["a", "b"])


def test_pairwise_kappa_uses_common_items_only():
    labels = [*TWO, (5, "x", "a"), (6, "z", "b")]  # item 5 only x, z shares nothing with x or y
    (row,) = agreement.pairwise_kappa(labels)
    # common items 1–4: p_o = 3/4; x says a on 2/4, y on 1/4 → p_e = (2·1 + 2·3)/16 = 1/2; κ = 1/2.
    assert (row["a"], row["b"], row["n"]) == ("x", "y", 4)
    assert row["kappa"] == pytest.approx(0.5)


def test_majority_agreement_is_leave_one_out():
    # item 1: x a, y a, z b → x's others {a, b} split: not comparable; y likewise; z's others say a: disagree.
    # item 2: x a, y a, z a → everyone agrees with the others' majority.
    labels = [(1, "x", "a"), (1, "y", "a"), (1, "z", "b"), (2, "x", "a"), (2, "y", "a"), (2, "z", "a")]
    out = agreement.majority_agreement(labels)
    assert out["x"] == {"agree": 1, "n": 1, "rate": 1.0}
    assert out["z"] == {"agree": 1, "n": 2, "rate": 0.5}
    lonely = agreement.majority_agreement([(1, "x", "a")])
    assert lonely["x"] == {"agree": 0, "n": 0, "rate": None}


def test_gold_accuracy_and_summary_keep_gold_out_of_agreement():
    gold = {9: "a"}
    labels = [*TWO, (9, "x", "a"), (9, "y", "b")]
    s = agreement.summary(labels, gold)
    assert s["gold_accuracy"] == {"x": {"correct": 1, "n": 1, "rate": 1.0}, "y": {"correct": 0, "n": 1, "rate": 0.0}}
    assert s["krippendorff_alpha"] == pytest.approx(16 / 30)  # item 9 left out
    assert s["labels"] == 8 and s["items_with_overlap"] == 4
    assert s["mean_pairwise_kappa"] == pytest.approx(0.5)


def test_unknown_choice_is_rejected():
    with pytest.raises(ValueError, match="choice"):
        agreement.krippendorff_alpha([(1, "x", "left")])
