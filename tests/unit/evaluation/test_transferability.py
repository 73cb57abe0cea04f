"""Transferability scores on numpy features: LogME against the brute-force evidence, nested-CV kNN, linear probe."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from tlops.errors import TlopsError
from tlops.evaluation.transferability import (
    PROBE_ALPHAS,
    CrossValScore,
    _fit_evidence,
    _log_evidence,
    _project,
    _spectrum,
    _summarise,
    cv_folds,
    knn_accuracy,
    logme,
    probe_accuracy,
)

SHAPES = [(20, 50), (60, 10)]  # N < D and N > D


def log_evidence_brute_force(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The log evidence ``log p(y | F, alpha, beta)`` computed directly, for checking the closed form.

    The model: ``y ~ N(0, F F^T / alpha + I / beta)``, the marginal of ``y = F w + noise`` with
    ``w ~ N(0, I / alpha)`` and ``noise ~ N(0, I / beta)``. Costs an ``N x N`` Cholesky.

    Args:
        features: ``(N, D)`` features ``F``.
        y: ``(N,)`` regression target.
        alpha: Prior precision of the weights.
        beta: Precision of the noise.

    Returns:
        The log density of ``y``.
    """
    f = np.asarray(features, dtype=np.float64)
    n = f.shape[0]
    covariance = f @ f.T / alpha + np.eye(n) / beta
    return float(multivariate_normal.logpdf(np.asarray(y, dtype=np.float64), mean=np.zeros(n), cov=covariance))


def _problem(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features with an uneven spectrum and a 0/1 target partly explained by them."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n, d)) * np.linspace(0.2, 2.0, d)
    y = (f @ rng.standard_normal(d) + rng.standard_normal(n) > 0).astype(np.float64)
    return f, y


def _closed_form(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    u, s2 = _spectrum(f)
    z, r0 = _project(u, y)
    return _log_evidence(s2, z, r0, f.shape[0], f.shape[1], alpha, beta)


def _fitted(f: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    u, s2 = _spectrum(f)
    z, r0 = _project(u, y)
    return _fit_evidence(s2, z, r0, f.shape[0], tol=1e-3, max_iter=100)


def _reference_code_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The widely copied LogME evidence: D log alpha, but log|A| over the non-zero singular values only."""
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    s2 = s**2
    z = u.T @ y
    m2 = np.sum(beta**2 * s2 * z**2 / (alpha + beta * s2) ** 2)
    res2 = np.sum((alpha / (alpha + beta * s2)) ** 2 * z**2) + (y @ y - z @ z)
    return 0.5 * (
        d * math.log(alpha)
        + n * math.log(beta)
        - np.sum(np.log(alpha + beta * s2))
        - beta * res2
        - alpha * m2
        - n * math.log(2 * math.pi)
    )


def _blobs(n: int, d: int, classes: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes around random means; separation 0 is pure noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    rng.shuffle(y)
    means = rng.standard_normal((classes, d)) * separation
    return means[y] + rng.standard_normal((n, d)), y


# ----------------------------------------------------------------------------------------------------------- LogME


@pytest.mark.parametrize(("n", "d"), SHAPES)
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.3, 4.0), (7.0, 0.5)])
def test_closed_form_evidence_equals_brute_force(n, d, alpha, beta):
    for seed in range(3):
        f, y = _problem(n, d, seed)
        expected = log_evidence_brute_force(f, y, alpha, beta)
        assert _closed_form(f, y, alpha, beta) == pytest.approx(expected, rel=1e-6)


# Seeds of _problem whose evidence peaks at finite (alpha, beta); for (20, 50) seeds 0 and 2 it does not (below).
INTERIOR = [(20, 50, 1), (20, 50, 3), (20, 50, 4), (60, 10, 0), (60, 10, 1), (60, 10, 2)]


@pytest.mark.parametrize(("n", "d", "seed"), INTERIOR)
def test_fixed_point_is_a_local_maximum_of_the_evidence(n, d, seed):
    f, y = _problem(n, d, seed)
    alpha, beta = _fitted(f, y)
    best = log_evidence_brute_force(f, y, alpha, beta)
    assert alpha < 1e4
    assert _closed_form(f, y, alpha, beta) == pytest.approx(best, rel=1e-6)
    assert best > log_evidence_brute_force(f, y, 1.0, 1.0)
    for a, b in [(0.9, 1), (1.1, 1), (1, 0.9), (1, 1.1)]:
        assert log_evidence_brute_force(f, y, a * alpha, b * beta) < best


@pytest.mark.parametrize("seed", [0, 2])
def test_evidence_peaking_at_infinite_alpha_is_approached_to_within_tol(seed):
    # Here y is best explained as pure noise: the evidence rises towards its alpha -> inf limit,
    # y ~ N(0, I / beta) with beta = N / |y|^2, and the iteration stops on that flat slope close to it
    # (within 4e-4 nats of N = 20 samples at tol = 1e-3).
    f, y = _problem(20, 50, seed)
    alpha, beta = _fitted(f, y)
    best = log_evidence_brute_force(f, y, alpha, beta)
    n = len(y)
    limit = -n / 2 * (math.log(2 * math.pi * (y @ y) / n) + 1)
    assert alpha > 1e4
    assert best < limit
    assert best == pytest.approx(limit, abs=1e-3)
    for b in (0.9, 1.1):
        assert log_evidence_brute_force(f, y, alpha, b * beta) < best


def test_reference_code_evidence_is_wrong_when_n_below_d():
    f, y = _problem(20, 50, 0)
    alpha, beta = 0.3, 4.0
    brute = log_evidence_brute_force(f, y, alpha, beta)
    assert _reference_code_evidence(f, y, alpha, beta) != pytest.approx(brute, rel=1e-3)
    f, y = _problem(60, 10, 0)  # full column rank: nothing is dropped and the two agree
    assert _reference_code_evidence(f, y, alpha, beta) == pytest.approx(log_evidence_brute_force(f, y, alpha, beta))


@pytest.mark.parametrize(("n", "d"), SHAPES)
def test_logme_is_the_mean_per_sample_evidence_over_classes(n, d):
    f, _ = _problem(n, d, 0)
    targets = np.arange(n) % 3
    expected = []
    for c in range(3):
        y = (targets == c).astype(np.float64)
        expected.append(log_evidence_brute_force(f, y, *_fitted(f, y)) / n)
    assert logme(f, targets) == pytest.approx(np.mean(expected), rel=1e-6)


def test_logme_ranks_informative_features_above_noise():
    informative, y = _blobs(200, 32, 4, separation=1.5, seed=0)
    noise, _ = _blobs(200, 32, 4, separation=0.0, seed=1)
    assert logme(informative, y) > logme(noise, y)


def test_logme_accepts_float32():
    f, y = _blobs(100, 40, 3, separation=1.0, seed=0)
    assert logme(f.astype(np.float32), y) == pytest.approx(logme(f, y), rel=1e-4)


# ---------------------------------------------------------------------------------------------- kNN and linear probe


SCORERS = [knn_accuracy, probe_accuracy]


@pytest.mark.parametrize("score", SCORERS)
def test_separable_classes_score_near_one(score):
    f, y = _blobs(200, 16, 4, separation=3.0, seed=0)
    result = score(f, y)
    assert result.mean > 0.95
    assert result.folds == 5
    assert result.std_error >= 0


@pytest.mark.parametrize("score", SCORERS)
def test_noise_scores_near_chance(score):
    f, y = _blobs(400, 16, 4, separation=0.0, seed=0)
    assert abs(score(f, y).mean - 0.25) < 0.1


@pytest.mark.parametrize("score", SCORERS)
def test_binary_problem(score):
    f, y = _blobs(60, 8, 2, separation=2.0, seed=0)
    assert score(f, y).mean > 0.9


@pytest.mark.parametrize("score", SCORERS)
def test_deterministic_for_a_seed_and_same_for_float32(score):
    f, y = _blobs(120, 16, 3, separation=0.5, seed=0)
    first = score(f, y, seed=3)
    assert score(f, y, seed=3) == first
    assert score(f.astype(np.float32), y, seed=3).mean == pytest.approx(first.mean)


@pytest.mark.parametrize("score", SCORERS)
def test_folds_reduced_for_a_small_class(score):
    f, y = _blobs(90, 8, 3, separation=2.0, seed=0)
    y[np.flatnonzero(y == 2)[3:]] = 0  # class 2 keeps 3 samples
    result = score(f, y, folds=5)
    assert result.folds == 3
    assert 0 <= result.mean <= 1 and result.std_error >= 0


def test_knn_chooses_among_ks_that_fit_the_inner_training_fold():
    f, y = _blobs(12, 4, 2, separation=3.0, seed=0)
    result = knn_accuracy(f, y, folds=2, ks=(1, 3, 50))
    assert result.chosen in (1.0, 3.0)


def test_knn_on_two_images_a_class_uses_the_one_neighbour_an_outer_fold_leaves():
    """Two training images a class (a 4-image class after the split): each outer fold trains on one of each."""
    f, y = _blobs(10, 4, 5, separation=4.0, seed=1)
    result = knn_accuracy(f, y, folds=5)
    assert result.folds == 2 and result.chosen == 1.0
    assert 0.0 <= result.mean <= 1.0 and probe_accuracy(f, y).folds == 2


def test_probe_chooses_a_grid_alpha_and_class_weighting_scores_balanced_accuracy():
    f, y = _blobs(200, 16, 2, separation=0.0, seed=0)
    y[:150] = 0  # 3:1 imbalance on noise: plain accuracy rewards predicting the majority, balanced does not
    y[150:] = 1
    plain = probe_accuracy(f, y)
    weighted = probe_accuracy(f, y, class_weighted=True)
    assert plain.chosen in PROBE_ALPHAS and weighted.chosen in PROBE_ALPHAS
    assert plain.mean > 0.65
    assert abs(weighted.mean - 0.5) < 0.12


def test_cv_folds():
    y = np.array([0] * 10 + [1] * 4 + [2] * 7)
    assert cv_folds(y, 5) == 4
    assert cv_folds(y, 3) == 3
    assert cv_folds(np.array([0, 0, 1, 1]), 5) == 2


def test_cv_folds_rejects_a_class_with_one_sample():
    with pytest.raises(TlopsError, match="class 2 has 1 image") as raised:
        cv_folds(np.array([0, 0, 1, 1, 2]), 5)
    assert "\n" not in str(raised.value)
    with pytest.raises(TlopsError):
        knn_accuracy(np.zeros((5, 3)), np.array([0, 0, 1, 1, 2]))


def test_standard_error_is_zero_for_one_fold():
    assert _summarise([0.5], [3]) == CrossValScore(mean=0.5, std_error=0.0, folds=1, chosen=3.0, fold_scores=(0.5,))
    assert _summarise([0.5, 0.7], [3, 1]).std_error == pytest.approx(0.1)
