"""Inter-annotator agreement, as pure functions of labels.

A label here is a triple (item, annotator, choice) with choice in stored A/B terms — "a", "b" or "tie" —
never screen order, so that two annotators who saw the pair flipped still agree when they pick the same
response. Choices are nominal categories (three of them).

- Krippendorff's α (Krippendorff 2011, "Computing Krippendorff's alpha-reliability"): 1 − D_o / D_e, the
  observed over the chance-expected disagreement; handles any number of annotators and missing labels.
  Computed by the `krippendorff` package.
- Cohen's κ (Cohen 1960) for each pair of annotators on the items both labelled: (p_o − p_e) / (1 − p_e).
- Agreement with the majority: for each annotator, the share of their labels that match the strict
  majority of the *other* annotators of that item (leave-one-out, so nobody agrees with themselves).
- Gold accuracy: the share of an annotator's gold-item labels that match the known answer.

Undefined values (too few labels, or no variation for chance correction) are None, never a made-up 0.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence

import krippendorff
import numpy as np

CATEGORIES = ("a", "b", "tie")
LabelTriple = tuple[Hashable, Hashable, str]


def _by_item(labels: Iterable[LabelTriple]) -> dict[Hashable, dict[Hashable, str]]:
    out: dict[Hashable, dict[Hashable, str]] = defaultdict(dict)
    for item, annotator, choice in labels:
        if choice not in CATEGORIES:
            raise ValueError(f"choice must be one of {CATEGORIES}, got {choice!r}")
        out[item][annotator] = choice
    return out


def reliability_matrix(labels: Iterable[LabelTriple]) -> tuple[np.ndarray, list, list]:
    """(matrix, annotators, items): matrix[i, j] is annotator i's choice on item j as a category index
    (a=0, b=1, tie=2), NaN where they gave none. Shape (annotators, items)."""
    by_item = _by_item(labels)
    items = sorted(by_item, key=str)
    annotators = sorted({a for votes in by_item.values() for a in votes}, key=str)
    row = {a: i for i, a in enumerate(annotators)}
    m = np.full((len(annotators), len(items)), np.nan)
    for j, item in enumerate(items):
        for annotator, choice in by_item[item].items():
            m[row[annotator], j] = CATEGORIES.index(choice)
    return m, annotators, items


def krippendorff_alpha(labels: Iterable[LabelTriple]) -> float | None:
    """Nominal Krippendorff's α over all labels; None when fewer than two items have two or more labels
    or all pairable labels fall in one category (α is 0/0 then)."""
    m, _, _ = reliability_matrix(labels)
    if m.size == 0:
        return None
    pairable = (~np.isnan(m)).sum(axis=0) >= 2
    if pairable.sum() < 2:
        return None
    values = m[:, pairable]
    if len(np.unique(values[~np.isnan(values)])) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        alpha = float(krippendorff.alpha(reliability_data=values, level_of_measurement="nominal",
                                         value_domain=[0, 1, 2]))
    return None if math.isnan(alpha) else alpha


def cohen_kappa(x: Sequence[str], y: Sequence[str]) -> float | None:
    """Cohen's κ of two equally long label sequences; None when empty or when chance agreement is 1."""
    if len(x) != len(y):
        raise ValueError(f"cohen_kappa needs sequences of one length, got {len(x)} and {len(y)}")
    n = len(x)
    if n == 0:
        return None
    p_o = sum(a == b for a, b in zip(x, y, strict=True)) / n
    cx, cy = Counter(x), Counter(y)
    p_e = sum(cx[c] * cy[c] for c in set(cx) | set(cy)) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def pairwise_kappa(labels: Iterable[LabelTriple], *, min_common: int = 2) -> list[dict]:
    """Cohen's κ for every pair of annotators with at least `min_common` items in common:
    [{"a": …, "b": …, "n": common items, "kappa": κ or None}]."""
    by_annotator: dict[Hashable, dict[Hashable, str]] = defaultdict(dict)
    for item, votes in _by_item(labels).items():
        for annotator, choice in votes.items():
            by_annotator[annotator][item] = choice
    out = []
    for a, b in itertools.combinations(sorted(by_annotator, key=str), 2):
        common = sorted(by_annotator[a].keys() & by_annotator[b].keys(), key=str)
        if len(common) < min_common:
            continue
        kappa = cohen_kappa([by_annotator[a][i] for i in common], [by_annotator[b][i] for i in common])
        out.append({"a": a, "b": b, "n": len(common), "kappa": kappa})
    return out


def majority_agreement(labels: Iterable[LabelTriple]) -> dict[Hashable, dict]:
    """Per annotator: {"agree": k, "n": comparable labels, "rate": k / n or None}. A label is comparable
    when the other annotators of its item have a strict majority choice."""
    counts: dict[Hashable, list[int]] = defaultdict(lambda: [0, 0])
    for votes in _by_item(labels).values():
        for annotator, choice in votes.items():
            row = counts[annotator]  # an annotator with nothing comparable still gets a row
            others = Counter(c for a, c in votes.items() if a != annotator).most_common(2)
            if not others or (len(others) == 2 and others[0][1] == others[1][1]):
                continue
            row[1] += 1
            row[0] += others[0][0] == choice
    return {a: {"agree": k, "n": n, "rate": k / n if n else None} for a, (k, n) in counts.items()}


def gold_accuracy(labels: Iterable[LabelTriple], gold: dict[Hashable, str]) -> dict[Hashable, dict]:
    """Per annotator with gold labels: {"correct": k, "n": gold labels, "rate": k / n}."""
    counts: dict[Hashable, list[int]] = defaultdict(lambda: [0, 0])
    for item, annotator, choice in labels:
        if item in gold:
            counts[annotator][1] += 1
            counts[annotator][0] += choice == gold[item]
    return {a: {"correct": k, "n": n, "rate": k / n} for a, (k, n) in counts.items()}


def summary(labels: list[LabelTriple], gold: dict[Hashable, str] | None = None) -> dict:
    """Everything the dashboard and the export show. Gold items are left out of α, κ and majority
    agreement (everyone is asked the same known questions there) and scored by gold accuracy instead."""
    gold = gold or {}
    regular = [lab for lab in labels if lab[0] not in gold]
    kappas = pairwise_kappa(regular)
    defined = [k["kappa"] for k in kappas if k["kappa"] is not None]
    per_item = Counter(item for item, _, _ in regular)
    return {
        "labels": len(regular),
        "items_with_overlap": sum(1 for n in per_item.values() if n >= 2),
        "krippendorff_alpha": krippendorff_alpha(regular),
        "mean_pairwise_kappa": sum(defined) / len(defined) if defined else None,
        "pairwise_kappa": kappas,
        "majority_agreement": majority_agreement(regular),
        "gold_accuracy": gold_accuracy(labels, gold),
    }
