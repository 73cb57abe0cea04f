"""Temperature scaling on synthetic logits, and the before/after reliability diagram."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from tlops.evaluation.calibration import (
    Calibration,
    calibrate,
    calibration_metrics,
    fit_temperature,
    softmax,
)
from tlops.evaluation.plots import reliability_figure

matplotlib.use("Agg")

CLASSES = 5


def _sample(n: int, temperature: float, scale: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits z and targets drawn from softmax(z / temperature): the true temperature is known."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=scale, size=(n, CLASSES))
    cumulative = softmax(logits, temperature).cumsum(1)
    targets = (rng.random((n, 1)) > cumulative).sum(1)
    return logits, np.minimum(targets, CLASSES - 1)


def test_softmax_is_stable_and_tempered():
    logits = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    probabilities = softmax(logits)
    assert np.isfinite(probabilities).all() and np.allclose(probabilities.sum(1), 1)
    assert softmax(logits[1:], 1e6) == pytest.approx(np.full((1, 3), 1 / 3), abs=1e-5)


def test_the_fitted_temperature_recovers_the_true_one():
    logits, targets = _sample(5000, 2.5)
    assert fit_temperature(logits, targets) == pytest.approx(2.5, rel=0.1)


def test_overconfident_logits_are_softened_on_held_out_samples():
    val_logits, val_targets = _sample(3000, 3.0, seed=1)
    test_logits, test_targets = _sample(3000, 3.0, seed=2)
    result = calibrate(val_logits, val_targets, test_logits, test_targets, CLASSES)
    assert isinstance(result, Calibration) and result.temperature > 1
    assert result.after["ece"] < result.before["ece"]
    assert result.after["log_loss"] < result.before["log_loss"]
    assert result.after["brier"] < result.before["brier"]
    assert result.to_dict() == {
        "temperature": result.temperature,
        "before": result.before,
        "after": result.after,
        "reason": result.reason,
    }
    assert result.reason.startswith(f"T = {result.temperature:.3f}: held-out NLL")


def test_sharpening_needs_enough_validation_errors():
    # Underconfident logits fit T < 1: applied when the validation split has enough mistakes to weigh ...
    logits, targets = _sample(400, 0.5, seed=4)
    assert fit_temperature(logits, targets) < 1 and (logits.argmax(1) != targets).sum() >= 10
    test = _sample(400, 0.5, seed=5)
    sharpened = calibrate(logits, targets, *test, CLASSES)
    assert sharpened.temperature < 1 and sharpened.after["log_loss"] < sharpened.before["log_loss"]
    # ... not on a handful of images with a single mistake (the demo's 20 validation images: T = 0.18 there
    # raised the test log loss from 1.09 to 3.44).
    right = np.flatnonzero(logits.argmax(1) == targets)[:19]
    wrong = np.flatnonzero(logits.argmax(1) != targets)[:1]
    few = np.concatenate([right, wrong])
    assert fit_temperature(logits[few], targets[few]) < 1
    kept = calibrate(logits[few], targets[few], *test, CLASSES)
    assert kept.temperature == 1.0 and "1 misclassified validation images" in kept.reason
    assert kept.after == kept.before


def test_a_temperature_that_does_not_generalise_is_not_applied():
    # 40 validation images: T is fitted on the few the model gets wrong with high confidence; the cross-validated
    # NLL does not improve on T = 1, so the test split keeps the model's own probabilities.
    rng = np.random.default_rng(6)
    targets = np.arange(40) % CLASSES
    logits = rng.normal(scale=0.5, size=(40, CLASSES))
    logits[np.arange(40), targets] += 4.0  # confident and right ...
    logits[0, :] = 0.0
    logits[0, 1] = 30.0  # ... but one image confidently wrong drags the fit to a huge temperature
    checked = calibrate(logits, targets, logits, targets, CLASSES)
    assert fit_temperature(logits, targets) > 1
    assert checked.temperature == 1.0 and "does not generalise" in checked.reason, checked.reason


def test_too_few_validation_images_keep_the_model_as_it_is():
    logits, targets = _sample(9, 3.0, seed=7)
    result = calibrate(logits, targets, logits, targets, CLASSES)
    assert result.temperature == 1.0 and "too few" in result.reason


def test_the_temperature_never_changes_the_argmax():
    logits, targets = _sample(2000, 0.5, seed=3)
    temperature = fit_temperature(logits, targets)
    assert temperature < 1  # underconfident logits are sharpened
    assert np.array_equal(softmax(logits).argmax(1), softmax(logits, temperature).argmax(1))
    before, after = softmax(logits).argmax(1) == targets, softmax(logits, temperature).argmax(1) == targets
    assert before.mean() == after.mean()


@pytest.mark.parametrize(
    ("logits", "targets"),
    [
        (np.array([[2.0, 0.0, -1.0]]), np.array([0])),  # one sample
        (np.array([[2.0, 0.0], [3.0, 1.0], [1.0, 0.5]]), np.array([0, 0, 0])),  # one class only
        (np.zeros((4, 3)), np.array([0, 1, 2, 0])),  # constant logits: the NLL is flat
        (np.empty((0, 3)), np.array([], dtype=int)),  # no samples
    ],
)
def test_degenerate_inputs_give_a_finite_temperature(logits: np.ndarray, targets: np.ndarray):
    temperature = fit_temperature(logits, targets)
    assert np.isfinite(temperature) and temperature == 1.0


def test_brier_score_bounds():
    targets = np.arange(12) % 4
    perfect = np.eye(4)[targets]
    assert calibration_metrics(perfect, targets, 4)["brier"] == 0
    assert calibration_metrics(np.full((12, 4), 0.25), targets, 4)["brier"] == pytest.approx(3 / 4)
    assert calibration_metrics(np.eye(4)[(targets + 1) % 4], targets, 4)["brier"] == pytest.approx(2)


def test_log_loss_counts_every_class_and_clips():
    targets = np.array([0, 0, 1])  # class 2 absent from the targets
    probabilities = np.array([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25], [0.0, 1.0, 0.0]])
    metrics = calibration_metrics(probabilities, targets, 3)
    assert metrics["log_loss"] == pytest.approx(np.log(2) / 3, rel=1e-6)
    assert set(metrics) == {"ece", "log_loss", "brier"}


def test_the_reliability_diagram_shows_before_and_after():
    logits, targets = _sample(1000, 3.0, seed=4)
    before, after = softmax(logits), softmax(logits, fit_temperature(logits, targets))
    figure = reliability_figure(before, targets, after)
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert any(label.startswith("before (T=1), ECE ") for label in labels)
    assert any(label.startswith("after temperature scaling, ECE ") for label in labels)
    single = reliability_figure(before, targets)  # the old call still works
    assert len(single.axes[0].get_legend().get_texts()) == 2
