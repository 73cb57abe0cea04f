"""Evaluation metrics: the expected calibration error against one written out here, and ``compute_metrics`` against
scikit-learn.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from calibration import reference_ece as _reference_ece
from tlops.evaluation.metrics import compute_metrics, expected_calibration_error


def test_ece_is_zero_for_confident_correct_predictions() -> None:
    targets = np.array([0, 1, 2, 1, 0])
    probabilities = np.eye(3)[targets]
    assert expected_calibration_error(probabilities, targets) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("confidence", "accuracy"), [(0.7, 0.5), (0.9, 1.0), (0.4, 0.25)])
def test_ece_equals_gap_for_constant_confidence(confidence: float, accuracy: float) -> None:
    n, num_classes = 40, 3
    targets = np.zeros(n, dtype=int)
    rest = (1 - confidence) / (num_classes - 1)
    probabilities = np.full((n, num_classes), rest)
    predicted = np.where(np.arange(n) < round(accuracy * n), 0, 1)
    probabilities[np.arange(n), predicted] = confidence
    assert expected_calibration_error(probabilities, targets) == pytest.approx(abs(accuracy - confidence))


def test_ece_weights_bins_by_their_share() -> None:
    # 3 predictions at confidence 0.95, all correct; 1 at 0.55, wrong: 3/4 * 0.05 + 1/4 * 0.55.
    probabilities = np.array([[0.95, 0.05], [0.05, 0.95], [0.95, 0.05], [0.55, 0.45]])
    targets = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probabilities, targets) == pytest.approx(0.75 * 0.05 + 0.25 * 0.55)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_compute_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    classes = [f"c{k}" for k in range(7)]
    targets = rng.integers(0, 6, size=80)  # class c6 never occurs in the targets
    logits = rng.normal(size=(80, 7)) + 2.5 * np.eye(7)[targets]
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    predictions = probabilities.argmax(1)
    labels = list(range(7))

    result = compute_metrics(probabilities, targets, classes)

    m = result.metrics
    assert m["test_accuracy"] == pytest.approx(sk.accuracy_score(targets, predictions))
    assert m["test_balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(targets, predictions))
    assert m["test_macro_f1"] == pytest.approx(
        sk.f1_score(targets, predictions, labels=labels, average="macro", zero_division=0)
    )
    assert m["test_log_loss"] == pytest.approx(sk.log_loss(targets, probabilities, labels=labels))
    assert m["test_top5_accuracy"] == pytest.approx(sk.top_k_accuracy_score(targets, probabilities, k=5, labels=labels))
    assert m["test_ece"] == pytest.approx(_reference_ece(probabilities, targets))
    assert m["test_images"] == 80
    assert 0.3 < m["test_accuracy"] < 1.0  # a non-trivial case
    assert np.array_equal(np.array(result.confusion), sk.confusion_matrix(targets, predictions, labels=labels))
    assert np.array(result.confusion).shape == (7, 7)
    assert result.report["c0"]["support"] == int((targets == 0).sum())
    assert result.report["c6"]["support"] == 0
    assert result.classes == classes


def test_compute_metrics_binary_has_no_top5() -> None:
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    targets = np.array([0, 1, 1, 1])
    result = compute_metrics(probabilities, targets, ["no", "yes"])
    assert "test_top5_accuracy" not in result.metrics
    assert result.metrics["test_accuracy"] == pytest.approx(0.75)
    assert result.metrics["test_log_loss"] == pytest.approx(sk.log_loss(targets, probabilities))
    assert result.confusion == [[1, 0], [1, 2]]
