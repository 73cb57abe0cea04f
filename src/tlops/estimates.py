"""Paired differences between two models' accuracies, with the standard error the decisions of ``auto`` use.

Two ways of measuring, one record:

* :func:`fold_difference`: accuracies of the same cross-validation folds (repeated k-fold), with the variance
  corrected for the overlap of the training folds (Nadeau and Bengio, "Inference for the generalization error",
  Machine Learning 2003; Bouckaert and Frank 2004): ``var * (1/J + n_test/n_train)`` over ``J`` fold scores, where
  ``n_test/n_train = 1/(k - 1)`` for k folds. The naive ``var / J`` understates it badly when folds are repeated.
* :func:`image_difference`: per-image correctness of two models on the same held-out images (paired), the
  standard error of the mean of the per-image differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """An accuracy difference ``a - b`` measured on paired folds or images, with its standard error.

    Attributes:
        mean: The mean difference.
        std_error: Its standard error.
        basis: What it was measured on, e.g. ``"3 x 5-fold CV, 100 images"`` or ``"40 validation images"``.
    """

    mean: float
    std_error: float
    basis: str

    def describe(self) -> str:
        """``+0.063 ± 0.041 (5-fold CV, 80 images)``: the difference, one standard error, and its basis."""
        return f"{self.mean:+.3f} ± {self.std_error:.3f} ({self.basis})"


def fold_difference(a: Sequence[float], b: Sequence[float], folds: int, basis: str) -> PairedDifference:
    """The mean difference of paired fold scores, with the corrected resampled standard error.

    Args:
        a: Fold scores of model a (every repeat's folds, in the same order as ``b``).
        b: Fold scores of model b on the same folds.
        folds: k, the folds of one repeat (the training share is ``(k - 1) / k``).
        basis: What the folds were, for :attr:`PairedDifference.basis`.

    Raises:
        ValueError: when the two lists differ in length or are empty.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(a) != len(b) or d.size == 0:
        raise ValueError(f"paired fold scores must be non-empty and of equal length, got {len(a)} and {len(b)}")
    return PairedDifference(float(d.mean()), fold_standard_error(d, folds), basis)


def fold_standard_error(scores: Sequence[float], folds: int) -> float:
    """The corrected resampled standard error of the mean of repeated k-fold scores (0 for fewer than two)."""
    values = np.asarray(scores, dtype=np.float64)
    if values.size < 2:
        return 0.0
    return math.sqrt((1.0 / values.size + 1.0 / max(folds - 1, 1)) * float(values.var(ddof=1)))


def image_difference(correct_a: np.ndarray, correct_b: np.ndarray, basis: str) -> PairedDifference:
    """The mean per-image difference of two models' correctness (or per-image scores) on the same images.

    Raises:
        ValueError: when the two arrays differ in length or are empty.
    """
    d = np.asarray(correct_a, dtype=np.float64) - np.asarray(correct_b, dtype=np.float64)
    if np.shape(correct_a) != np.shape(correct_b) or d.size == 0:
        raise ValueError("paired per-image scores must be non-empty and of equal length")
    std_error = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0
    return PairedDifference(float(d.mean()), std_error, basis)
