"""The no-transfer text baseline's cross-validated accuracy, on the same outer folds as the encoders' linear probe."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tlops.evaluation.transferability import CrossValScore, _inner_splits, _outer_splits, _summarise
from tlops.models.tfidf import DEFAULT_C, TfidfClassifier

TFIDF_CS = (DEFAULT_C,)
"""Penalties the baseline chooses from (one: no inner search); see :data:`tlops.models.tfidf.DEFAULT_C`."""


def tfidf_probe_accuracy(
    texts: Sequence[str],
    targets: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    class_weighted: bool = False,
    cs: Sequence[float] = TFIDF_CS,
) -> CrossValScore:
    """Cross-validated accuracy of :class:`~tlops.models.tfidf.TfidfClassifier` on the texts themselves.

    The outer folds are exactly those of :func:`~tlops.evaluation.transferability.probe_accuracy` for the same
    ``targets``, ``folds`` and ``seed``, so the baseline and an encoder's probe pair fold by fold. The vectorizer
    (vocabulary, idf) is fitted inside each outer training fold only. With more than one ``cs`` the penalty is
    chosen inside each outer training fold by inner stratified cross-validation.

    Args:
        texts: ``N`` texts.
        targets: ``(N,)`` integer class ids.
        folds: Outer folds wanted (reduced by ``cv_folds`` for a small class).
        seed: Seed of the fold shuffles.
        class_weighted: Weight classes by inverse frequency and score balanced accuracy instead of accuracy.
        cs: Candidate inverse L2 penalties.

    Returns:
        The outer-fold (balanced) accuracy, with ``chosen`` the most common C.
    """
    texts, y = list(texts), np.asarray(targets)
    if len(texts) != len(y) or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"need N texts and (N,) integer class ids, got {len(texts)} texts and targets {y.shape}")
    scores, chosen = [], []
    for train, test in _outer_splits(y, folds, seed):
        train_texts = [texts[i] for i in train]
        c = _choose_c(train_texts, y[train], cs, seed, class_weighted) if len(cs) > 1 else float(cs[0])
        model = TfidfClassifier().fit(train_texts, y[train], C=c, class_weight="balanced" if class_weighted else None)
        scores.append(_score(y[test], model.predict([texts[i] for i in test]), class_weighted))
        chosen.append(c)
    return _summarise(scores, chosen)


def _score(truth: np.ndarray, predicted: np.ndarray, class_weighted: bool) -> float:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    return float((balanced_accuracy_score if class_weighted else accuracy_score)(truth, predicted))


def _choose_c(texts: list[str], y: np.ndarray, cs: Sequence[float], seed: int, class_weighted: bool) -> float:
    """The C of ``cs`` with the best mean inner-fold score (ties: the smaller C)."""
    if np.unique(y, return_counts=True)[1].min() < 2:
        return float(sorted(cs)[len(cs) // 2])  # no inner split can hold every class: the middle of the grid
    means = {}
    weight = "balanced" if class_weighted else None
    splits = _inner_splits(y, seed)
    for c in sorted(cs):
        inner = []
        for train, test in splits:
            if len(np.unique(y[train])) < 2:
                continue
            model = TfidfClassifier().fit([texts[i] for i in train], y[train], C=c, class_weight=weight)
            inner.append(_score(y[test], model.predict([texts[i] for i in test]), class_weighted))
        means[c] = float(np.mean(inner)) if inner else 0.0
    best = max(means.values())
    return min(c for c, mean in means.items() if mean == best)
