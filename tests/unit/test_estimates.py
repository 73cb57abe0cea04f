"""Paired differences: the corrected resampled standard error of fold scores, and per-image differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tlops.estimates import fold_difference, image_difference


def test_fold_differences_use_the_corrected_resampled_variance() -> None:
    a = [0.80, 0.90, 0.70, 0.85, 0.75, 0.95, 0.80, 0.85, 0.90, 0.70]  # 2 repeats x 5 folds
    b = [0.78, 0.85, 0.71, 0.80, 0.70, 0.90, 0.81, 0.80, 0.85, 0.69]
    d = np.subtract(a, b)
    difference = fold_difference(a, b, folds=5, basis="2 x 5-fold CV")
    assert difference.mean == pytest.approx(d.mean())
    # Nadeau and Bengio: (1/J + n_test/n_train) var, with n_test/n_train = 1/4 for 5 folds; the naive var/J is smaller.
    assert difference.std_error == pytest.approx(math.sqrt((1 / 10 + 1 / 4) * d.var(ddof=1)))
    assert difference.std_error > math.sqrt(d.var(ddof=1) / 10)
    assert difference.describe() == f"{d.mean():+.3f} ± {difference.std_error:.3f} (2 x 5-fold CV)"


def test_a_constant_fold_difference_has_no_noise_and_unequal_lists_are_refused() -> None:
    assert fold_difference([0.7, 0.8], [0.6, 0.7], 2, "x").std_error == pytest.approx(0.0)
    with pytest.raises(ValueError, match="equal length"):
        fold_difference([0.7, 0.8], [0.6], 2, "x")
    with pytest.raises(ValueError, match="non-empty"):
        fold_difference([], [], 2, "x")


def test_per_image_differences_are_paired() -> None:
    a = np.array([1, 1, 1, 0, 1, 0, 1, 1])
    b = np.array([1, 0, 1, 0, 1, 0, 0, 1])
    difference = image_difference(a, b, "8 validation images")
    d = a - b
    assert difference.mean == pytest.approx(0.25)
    assert difference.std_error == pytest.approx(d.std(ddof=1) / math.sqrt(8))
    # Two models that agree image by image differ by exactly 0, however noisy their accuracy is.
    assert image_difference(a, a, "x").std_error == 0.0
    with pytest.raises(ValueError):
        image_difference(a, b[:3], "x")
