"""How well frozen features transfer to a labelled target: LogME, nested-CV cosine kNN, and a linear probe.

Every function works on numpy arrays: features ``(N, D)`` (float32 or float64, computed in float64) and integer
targets ``(N,)`` with class ids ``0..C-1``. Nothing here needs torch.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tlops.errors import TlopsError

if TYPE_CHECKING:
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.model_selection import GridSearchCV

PROBE_ALPHAS = np.logspace(-2, 4, 13)
"""Ridge penalties the linear probe chooses from (features scaled to mean per-feature std 1)."""

_SINGULAR_CUTOFF = 1e-10  # singular values at or below this count as zero (outside the column space)
_EPS = 1e-12  # guards divisions by |m|^2 or |Fm - y|^2 when either is ~0
_INNER_FOLDS = 3  # inner cross-validation folds for choosing k, fewer when a class is small


@dataclass(frozen=True)
class CrossValScore:
    """A cross-validated accuracy.

    Attributes:
        mean: Mean accuracy over the outer folds.
        std_error: Standard error of that mean, ``std(ddof=1) / sqrt(folds)``; 0.0 for a single fold.
        folds: Number of outer folds.
        chosen: The hyper-parameter chosen most often inside the folds (k for kNN, the ridge alpha for the
            probe); ties go to the smaller value.
        fold_scores: The accuracy of each outer fold, in fold order (two scores computed with the same ``seed``
            on the same targets come from the same folds, so they can be compared fold by fold).
    """

    mean: float
    std_error: float
    folds: int
    chosen: float
    fold_scores: tuple[float, ...] = ()


# --------------------------------------------------------------------------------------------------------- LogME


def logme(features: np.ndarray, targets: np.ndarray, tol: float = 1e-3, max_iter: int = 100) -> float:
    """LogME (You et al., ICML 2021), exact: mean over classes of the per-sample log evidence.

    Each class is a one-vs-rest regression target ``y = (targets == c)`` under the Bayesian linear model
    ``y = F w + noise``, ``w ~ N(0, I / alpha)``, ``noise ~ N(0, I / beta)``. The evidence
    ``log p(y | F, alpha, beta)`` is maximised over ``alpha`` and ``beta`` by MacKay's fixed-point iteration,
    using one thin SVD of ``F`` for all classes. Unlike the widely copied reference code, ``log|A|`` keeps the
    ``(D - k) log alpha`` of the null space of ``F``, so the value is the true evidence when ``N < D`` too.

    Args:
        features: ``(N, D)`` features.
        targets: ``(N,)`` integer class ids.
        tol: Stop when ``alpha / beta`` moves by less than this, relatively.
        max_iter: Most fixed-point iterations per class.

    Returns:
        Mean over the classes present of ``log p(y_c | F) / N`` at the fitted ``alpha``, ``beta`` (higher is better).
    """
    x, y = _check(features, targets)
    n, d = x.shape
    u, s2 = _spectrum(x)
    evidences = []
    for c in np.unique(y):
        z, r0 = _project(u, (y == c).astype(np.float64))
        alpha, beta = _fit_evidence(s2, z, r0, n, tol, max_iter)
        evidences.append(_log_evidence(s2, z, r0, n, d, alpha, beta) / n)
    return float(np.mean(evidences))


def _spectrum(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors ``U`` (N, k) and squared singular values ``s2`` (k,) of the non-zero spectrum."""
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    keep = s > _SINGULAR_CUTOFF
    return u[:, keep], s[keep] ** 2


def _project(u: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """``z = U^T y`` and ``r0 = |y|^2 - |z|^2``, the squared part of ``y`` outside the column space of ``F``."""
    z = u.T @ y
    return z, max(float(y @ y - z @ z), 0.0)


def _posterior_terms(s2: np.ndarray, z: np.ndarray, r0: float, t: float) -> tuple[float, float, float]:
    """``gamma`` (effective parameters), ``|m|^2`` and ``|F m - y|^2`` for the ratio ``t = alpha / beta``."""
    shrink = s2 + t
    gamma = float(np.sum(s2 / shrink))
    m2 = float(np.sum(s2 * z**2 / shrink**2))
    res2 = float(np.sum((t / shrink) ** 2 * z**2)) + r0
    return gamma, m2, res2


def _fit_evidence(s2: np.ndarray, z: np.ndarray, r0: float, n: int, tol: float, max_iter: int) -> tuple[float, float]:
    """MacKay's fixed point ``alpha = gamma / |m|^2``, ``beta = (N - gamma) / |F m - y|^2``, from 1, 1."""
    alpha = beta = 1.0
    for _ in range(max_iter):
        t = alpha / beta
        gamma, m2, res2 = _posterior_terms(s2, z, r0, t)
        alpha = max(gamma, _EPS) / max(m2, _EPS)
        beta = max(n - gamma, _EPS) / max(res2, _EPS)
        if abs(alpha / beta - t) < tol * t:
            break
    return alpha, beta


def _log_evidence(s2: np.ndarray, z: np.ndarray, r0: float, n: int, d: int, alpha: float, beta: float) -> float:
    """Closed-form ``log p(y | F, alpha, beta)`` from the spectrum of ``F`` (``s2``, rank ``k = len(s2)``).

    ``L = 1/2 [D log alpha + N log beta - log|A| - beta |Fm - y|^2 - alpha |m|^2 - N log 2 pi]`` with
    ``A = alpha I + beta F^T F``, so ``log|A| = sum log(alpha + beta s2) + (D - k) log alpha``.
    """
    _, m2, res2 = _posterior_terms(s2, z, r0, alpha / beta)
    log_det_a = float(np.sum(np.log(alpha + beta * s2))) + (d - s2.size) * math.log(alpha)
    return 0.5 * (
        d * math.log(alpha) + n * math.log(beta) - log_det_a - beta * res2 - alpha * m2 - n * math.log(2 * math.pi)
    )


# ------------------------------------------------------------------------------------------ cross-validated scores


def cv_folds(targets: np.ndarray, folds: int) -> int:
    """Folds usable for stratified cross-validation: ``min(folds, smallest class count)``, at least 2.

    Args:
        targets: ``(N,)`` integer class ids.
        folds: Folds wanted.

    Returns:
        The number of folds to use.

    Raises:
        TlopsError: If there are fewer than 2 classes, or some class has fewer than 2 samples.
    """
    classes, counts = np.unique(np.asarray(targets), return_counts=True)
    if classes.size < 2:
        raise TlopsError(
            f"cross-validation needs at least 2 classes and the features have {classes.size}: add another class"
        )
    smallest = int(np.argmin(counts))
    if counts[smallest] < 2:
        raise TlopsError(
            f"class {classes[smallest]} has {counts[smallest]} image, fewer than the 2 that cross-validation "
            "needs: add another image of that class or drop it"
        )
    return max(2, min(folds, int(counts[smallest])))


def knn_accuracy(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    folds: int = 5,
    ks: tuple[int, ...] = (1, 3, 5, 10, 20),
    seed: int = 0,
) -> CrossValScore:
    """Cosine kNN accuracy, k chosen by an inner cross-validation inside each outer fold (nested CV).

    Rows are L2-normalised, so Euclidean neighbours are cosine neighbours. Inside each outer training fold a
    grid search over ``ks`` (stratified, 3 inner folds or fewer for a small class; ks larger than the smallest
    inner training fold are dropped) picks k; the kNN with that k is scored on the outer test fold.

    Args:
        features: ``(N, D)`` features.
        targets: ``(N,)`` integer class ids.
        folds: Outer folds wanted (reduced by ``cv_folds`` for a small class).
        ks: Candidate numbers of neighbours.
        seed: Seed of the fold shuffles.

    Returns:
        The outer-fold accuracy, with ``chosen`` the most common k.
    """
    x, y = _check(features, targets)
    x = _normalise_rows(x)
    scores, chosen = [], []
    for train, test in _outer_splits(y, folds, seed):
        search = _knn_search(x[train], y[train], ks, seed)
        scores.append(float(search.score(x[test], y[test])))
        chosen.append(search.best_params_["n_neighbors"])
    return _summarise(scores, chosen)


def probe_accuracy(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    class_weighted: bool = False,
) -> CrossValScore:
    """Cross-validated linear-probe accuracy; regularisation chosen inside each outer fold.

    On each outer training fold the features are centred and divided by one global scalar (the mean per-feature
    std, fitted on that fold), and a ridge classifier picks its penalty from ``PROBE_ALPHAS`` by efficient
    leave-one-out on that fold alone; it is then scored on the outer test fold.

    Args:
        features: ``(N, D)`` features.
        targets: ``(N,)`` integer class ids.
        folds: Outer folds wanted (reduced by ``cv_folds`` for a small class).
        seed: Seed of the fold shuffle.
        class_weighted: Weight classes by inverse frequency and score balanced accuracy instead of accuracy.

    Returns:
        The outer-fold (balanced) accuracy, with ``chosen`` the most common ridge alpha.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    score = balanced_accuracy_score if class_weighted else accuracy_score
    x, y = _check(features, targets)
    scores, chosen = [], []
    for train, test in _outer_splits(y, folds, seed):
        mean, scale = _global_scaler(x[train])
        probe = _fit_probe((x[train] - mean) / scale, y[train], class_weighted)
        scores.append(float(score(y[test], probe.predict((x[test] - mean) / scale))))
        chosen.append(float(probe.alpha_))
    return _summarise(scores, chosen)


def _check(features: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features as finite float64 ``(N, D)`` and targets as integer ``(N,)``, or ValueError."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features must be (N, D) and targets (N,), got {x.shape} and {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"targets must be integer class ids, got dtype {y.dtype}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    return x, y


def _outer_splits(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled stratified (train, test) index pairs, ``cv_folds(y, folds)`` of them."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=cv_folds(y, folds), shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def _inner_splits(y: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified inner (train, test) pairs: 3 folds, fewer when a class is small, at least 2."""
    from sklearn.model_selection import StratifiedKFold

    folds = max(2, min(_INNER_FOLDS, int(np.unique(y, return_counts=True)[1].min())))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class with 1 training sample cannot be in every inner fold; that is fine
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(np.zeros(len(y)), y))


def _knn_search(x: np.ndarray, y: np.ndarray, ks: Sequence[int], seed: int) -> GridSearchCV:
    """A fitted grid search over k (brute-force Euclidean kNN on normalised rows) with inner stratified CV."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KNeighborsClassifier

    if np.unique(y, return_counts=True)[1].max() < 2:
        # One image of each class (an outer fold of a tiny dataset): no inner split can hold every class, and with
        # one neighbour per class only k = 1 can be right. The "search" fits k = 1 on everything.
        every = np.arange(len(y))
        splits, candidates = [(every, every)], [1]
    else:
        splits = _inner_splits(y, seed)
        smallest_train = min(len(train) for train, _ in splits)
        candidates = sorted(k for k in set(ks) if k <= smallest_train) or [min(min(ks), smallest_train)]
    search = GridSearchCV(
        KNeighborsClassifier(algorithm="brute", metric="euclidean"),
        {"n_neighbors": candidates},
        cv=splits,
        scoring="accuracy",
    )
    return search.fit(x, y)


def _fit_probe(x: np.ndarray, y: np.ndarray, class_weighted: bool) -> RidgeClassifierCV:
    """A ridge classifier whose penalty is chosen by efficient leave-one-out on ``x`` alone."""
    from sklearn.linear_model import RidgeClassifierCV

    probe = RidgeClassifierCV(alphas=PROBE_ALPHAS, class_weight="balanced" if class_weighted else None)
    return probe.fit(x, y)


def _global_scaler(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-feature mean and one global scale, the mean per-feature std (1.0 if the features are constant)."""
    scale = float(x.std(axis=0).mean())
    return x.mean(axis=0), scale if scale > 0 else 1.0


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def _summarise(scores: Sequence[float], chosen: Sequence[float]) -> CrossValScore:
    """Mean, standard error over folds, and the most common chosen hyper-parameter (ties: the smaller)."""
    folds = len(scores)
    std_error = float(np.std(scores, ddof=1) / math.sqrt(folds)) if folds > 1 else 0.0
    counts = Counter(chosen)
    most = max(counts.values())
    return CrossValScore(
        mean=float(np.mean(scores)),
        std_error=std_error,
        folds=folds,
        chosen=float(min(v for v, c in counts.items() if c == most)),
        fold_scores=tuple(float(score) for score in scores),
    )
