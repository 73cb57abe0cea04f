"""Out-of-fold predicted probabilities: each example scored by a linear probe fitted on the other folds."""

from __future__ import annotations

import numpy as np

from tlops.errors import TlopsError

MAX_FOLDS = 5


def folds_for(labels: np.ndarray, max_folds: int = MAX_FOLDS) -> int:
    """The folds a stratified k-fold can make: ``max_folds``, fewer when the rarest class has fewer examples.

    Raises:
        TlopsError: when a class has fewer than 2 examples (no fold could hold it out and train on it).
    """
    counts = np.bincount(labels)
    present = counts[counts > 0]
    if len(present) < 2:
        raise TlopsError("the audit needs examples of at least 2 classes in train+val: add examples of another class")
    smallest = int(present.min())
    if smallest < 2:
        raise TlopsError(
            f"the audit needs at least 2 train+val examples of every class for its k-fold probe, one class has "
            f"{smallest}: add examples of it or remove the class"
        )
    return min(max_folds, smallest)


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int = 0, max_folds: int = MAX_FOLDS
) -> tuple[np.ndarray, int]:
    """Probabilities ``(N, num_classes)`` of each example from a probe fitted without it, and the folds used.

    A stratified, seeded k-fold (:func:`folds_for`) of a logistic regression on standardised features; a class
    missing from a fold's training part gets probability 0 there.

    Args:
        features: ``(N, D)`` features.
        labels: ``(N,)`` given class ids.
        num_classes: Number of classes (columns of the result).
        seed: Seed of the fold assignment and the solver.
        max_folds: At most this many folds.

    Raises:
        TlopsError: when a class has fewer than 2 examples.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels, dtype=np.int64)
    folds = folds_for(labels, max_folds)
    probabilities = np.zeros((len(labels), num_classes), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_rows, held_out in splitter.split(features, labels):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000, random_state=seed))
        probe.fit(features[fit_rows], labels[fit_rows])
        probabilities[np.ix_(held_out, probe.classes_)] = probe.predict_proba(features[held_out])
    return probabilities, folds
