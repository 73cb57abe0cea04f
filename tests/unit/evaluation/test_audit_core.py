"""Confident learning, near-duplicates and outliers on synthetic data whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from tlops.errors import TlopsError
from tlops.evaluation.audit.confident import calibrate, class_thresholds, confident_joint, find_label_issues
from tlops.evaluation.audit.out_of_fold import folds_for, out_of_fold_probabilities
from tlops.evaluation.audit.similarity import knn_outliers, near_duplicates


def _blobs(per_class: int = 60, classes: int = 4, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian clusters, one per class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + rng.normal(0, 1, size=(len(labels), dim)), labels


def _flip(labels: np.ndarray, rate: float, classes: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ``rate`` of them moved to another class, and the flipped rows."""
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), size=int(rate * len(labels)), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, size=len(flipped))) % classes
    return noisy, np.sort(flipped)


def test_confident_joint_on_hand_made_probabilities() -> None:
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9], [0.95, 0.05]])
    labels = np.array([0, 0, 1, 1, 1])  # the last one looks like class 0
    thresholds = class_thresholds(probabilities, labels)
    assert thresholds == pytest.approx([0.85, (0.8 + 0.9 + 0.05) / 3])
    joint, confident = confident_joint(probabilities, labels, thresholds)
    assert confident.tolist() == [0, -1, 1, 1, 0]
    assert joint.tolist() == [[1, 0], [1, 2]]
    assert calibrate(joint, labels).tolist() == [[2, 0], [1, 2]]
    for method in ("prune_by_noise_rate", "confident_joint"):
        issues = find_label_issues(probabilities, labels, method)
        assert issues.indices.tolist() == [4]
        assert issues.suggested[4] == 0


@pytest.mark.parametrize("method", ["prune_by_noise_rate", "confident_joint"])
def test_flags_injected_flips_with_high_precision_and_recall(method: str) -> None:
    features, labels = _blobs()
    noisy, flipped = _flip(labels, 0.1, 4)
    probabilities, folds = out_of_fold_probabilities(features, noisy, 4, seed=0)
    assert folds == 5
    issues = find_label_issues(probabilities, noisy, method)
    found = set(issues.indices.tolist())
    true_positives = len(found & set(flipped.tolist()))
    assert true_positives / len(found) >= 0.9
    assert true_positives / len(flipped) >= 0.9
    # the suggested labels of the flagged flips are the original ones
    hits = [i for i in issues.indices if i in set(flipped.tolist())]
    assert (issues.suggested[hits] == labels[hits]).mean() >= 0.9
    # ranked by self-confidence, lowest first
    assert np.all(np.diff(issues.self_confidence[issues.indices]) >= 0)


def test_clean_labels_give_no_flags() -> None:
    features, labels = _blobs()
    probabilities, _ = out_of_fold_probabilities(features, labels, 4, seed=0)
    assert find_label_issues(probabilities, labels).indices.tolist() == []


def test_folds_shrink_for_small_classes_and_refuse_a_single_example() -> None:
    assert folds_for(np.array([0, 0, 0, 1, 1, 1])) == 3
    assert folds_for(np.array([0] * 10 + [1] * 10)) == 5
    with pytest.raises(TlopsError, match="at least 2 train\\+val examples of every class"):
        folds_for(np.array([0, 0, 0, 1]))
    with pytest.raises(TlopsError, match="at least 2 classes"):
        folds_for(np.array([0, 0, 0]))


def test_near_duplicates_across_blocks_and_without_exact_copies() -> None:
    features, _ = _blobs(per_class=20)
    rng = np.random.default_rng(3)
    copies = features[[5, 50]] + rng.normal(0, 1e-3, size=(2, features.shape[1]))
    exact = features[[7]]
    augmented = np.concatenate([features, copies, exact])  # rows 80, 81 near rows 5, 50; row 82 equal to row 7
    ids = [f"sha{i}" for i in range(80)] + ["a", "b", "sha7"]
    pairs = near_duplicates(augmented, 0.999, row_ids=ids, block_rows=7)
    assert sorted(zip(pairs.first.tolist(), pairs.second.tolist(), strict=True)) == [(5, 80), (50, 81)]
    assert np.all(pairs.similarity >= 0.999)
    with_exact = near_duplicates(augmented, 0.999, block_rows=7)
    assert (7, 82) in set(zip(with_exact.first.tolist(), with_exact.second.tolist(), strict=True))


def test_knn_outliers_find_the_far_points() -> None:
    features, _ = _blobs(per_class=25)
    rng = np.random.default_rng(4)
    far = rng.normal(0, 1, size=(2, features.shape[1]))
    far[0, 0], far[1, 1] = 60.0, -60.0  # along axes no cluster sits on
    augmented = np.concatenate([features, far])
    outliers = knn_outliers(augmented, fraction=0.015, k=5, block_rows=9)
    assert sorted(outliers.indices.tolist()) == [100, 101]
    assert outliers.scores[100] > np.median(outliers.scores)
