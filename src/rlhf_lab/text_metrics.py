"""Pure text measures of degeneration, read off the answers alone (no gold, no torch): used by the policy
step's evaluation points (logged as eval/…, read by the early-warning detectors) and by the audit's
degeneration section (SFT vs policy). Words are whitespace-separated; punctuation is its own word in the
built-in world, so each measure is a pure function of the text."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

TERMINATORS = frozenset(".!?")


def words(text: str) -> list[str]:
    return text.split()


def repeated_ngram_share(text: str) -> float:
    """Length of the longest word n-gram that occurs at least twice (overlapping allowed), over the number
    of words; 0 for an answer without any repeated word."""
    w = words(text)
    T = len(w)
    longest = 0
    # A repeated n-gram of length L implies one of every length < L: binary search on L is exact.
    lo, hi = 1, T - 1
    while lo <= hi:
        n = (lo + hi) // 2
        grams = [tuple(w[i: i + n]) for i in range(T - n + 1)]
        if len(set(grams)) < len(grams):
            longest, lo = n, n + 1
        else:
            hi = n - 1
    return longest / T if T else 0.0


def distinct_words(text: str) -> float:
    w = words(text)
    return len(set(w)) / len(w) if w else 0.0


def ngrams(tokens: Sequence, n: int) -> list[tuple]:
    return [tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1)] if n > 0 else []


def distinct_n(responses: Sequence[Sequence], n: int) -> float:
    """Distinct-n (Li et al. 2016) over a set of token sequences (words or ids): distinct n-grams / all n-grams,
    pooled over the set — 1 when no n-gram repeats anywhere, near 0 when every answer says the same. 0 without
    n-grams."""
    grams = [g for r in responses for g in ngrams(r, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_ngrams(texts: list[str], n: int = 2) -> float:
    """distinct_n over the answers' words."""
    return distinct_n([words(t) for t in texts], n)


def opener(text: str) -> str:
    """The first sentence with its terminator (the whole answer when it has none)."""
    out = []
    for x in words(text):
        out.append(x)
        if x in TERMINATORS:
            break
    return " ".join(out)


def same_opener_flags(texts: list[str]) -> tuple[list[float], str]:
    """Per answer: does it open with the most common first sentence of the set? → (flags, that opener)."""
    openers = [opener(t) for t in texts]
    counts = Counter(o for o in openers if o)
    if not counts:
        return [0.0] * len(texts), ""
    top = counts.most_common(1)[0][0]
    return [float(o == top) for o in openers], top
