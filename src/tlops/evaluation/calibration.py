"""Temperature scaling: one scalar that turns over- or under-confident logits into calibrated probabilities.

Guo et al. 2017, "On Calibration of Modern Neural Networks": divide the logits by a temperature ``T > 0`` fitted
on the validation split to minimise the negative log-likelihood. ``T > 1`` softens overconfident predictions,
``T < 1`` sharpens underconfident ones; the arg-max, hence the accuracy, never changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, special

from tlops.evaluation.metrics import expected_calibration_error

#: Search interval of the temperature (optimised over log T).
TEMPERATURE_BOUNDS = (0.05, 20.0)
#: Folds of the cross-validation that checks a fitted temperature generalises.
CHECK_FOLDS = 5
#: Misclassified validation images needed before a temperature below 1 (sharpening) is trusted.
MIN_SHARPEN_ERRORS = 10


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities of ``logits / temperature``, numerically stable.

    Args:
        logits: Unnormalised scores ``(N, C)``.
        temperature: Positive divisor of the logits.

    Returns:
        Probabilities ``(N, C)``, each row summing to one.
    """
    return special.softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def _nll(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)`` against the targets."""
    log_probabilities = special.log_softmax(logits / temperature, axis=1)
    return float(-log_probabilities[np.arange(len(targets)), targets].mean())


def _no_signal(logits: np.ndarray, targets: np.ndarray) -> bool:
    """Whether the NLL cannot tell temperatures apart (too few samples, one class, constant logits)."""
    if len(targets) < 2 or np.unique(targets).size < 2:
        return True
    return bool(np.allclose(logits, logits[:, :1]))


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature that minimises the validation NLL of ``softmax(logits / T)``.

    Optimised over ``log T`` with a bounded scalar search in ``TEMPERATURE_BOUNDS``.

    Args:
        logits: Validation logits ``(N, C)``.
        targets: Validation class ids ``(N,)``.

    Returns:
        ``T > 0``; ``1.0`` (no change) when there are fewer than two samples, all targets are one class, the
        logits are constant per row, or the search does not give a finite optimum.
    """
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(targets) or _no_signal(logits, targets):
        return 1.0
    low, high = np.log(TEMPERATURE_BOUNDS)
    result = optimize.minimize_scalar(
        lambda log_t: _nll(logits, targets, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-5},
    )
    temperature = float(np.exp(result.x))
    return temperature if np.isfinite(temperature) and np.isfinite(result.fun) else 1.0


def brier_score(probabilities: np.ndarray, targets: np.ndarray, num_classes: int) -> float:
    """Multi-class Brier score: mean over samples of the summed squared error against the one-hot target.

    Ranges from 0 (certain and right) to 2 (certain and wrong); the uniform prediction over ``C`` classes
    scores ``(C - 1) / C``.
    """
    onehot = np.eye(num_classes)[np.asarray(targets, dtype=np.int64)]
    return float(((np.asarray(probabilities, dtype=np.float64) - onehot) ** 2).sum(axis=1).mean())


def calibration_metrics(probabilities: np.ndarray, targets: np.ndarray, num_classes: int) -> dict[str, float]:
    """ECE, log loss and Brier score of predicted probabilities.

    Args:
        probabilities: Predicted class probabilities ``(N, C)``.
        targets: True class ids ``(N,)``.
        num_classes: Number of classes ``C`` (labels ``0 .. C-1``, present in the targets or not).

    Returns:
        ``{"ece": ..., "log_loss": ..., "brier": ...}``; the Brier score ranges 0..2 (see `brier_score`).
    """
    from sklearn.metrics import log_loss

    probabilities = np.asarray(probabilities, dtype=np.float64)
    clipped = np.clip(probabilities, 1e-12, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    return {
        "ece": expected_calibration_error(probabilities, targets),
        "log_loss": float(log_loss(targets, clipped, labels=list(range(num_classes)))),
        "brier": brier_score(probabilities, targets, num_classes),
    }


def held_out_nll(logits: np.ndarray, targets: np.ndarray, folds: int = CHECK_FOLDS, seed: int = 0) -> float:
    """Mean NLL of each validation image under the temperature fitted on the other folds (cross-validation)."""
    from sklearn.model_selection import KFold

    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    losses = np.empty(len(targets))
    for fit, held in KFold(n_splits=min(folds, len(targets)), shuffle=True, random_state=seed).split(logits):
        temperature = fit_temperature(logits[fit], targets[fit])
        log_probabilities = special.log_softmax(logits[held] / temperature, axis=1)
        losses[held] = -log_probabilities[np.arange(len(held)), targets[held]]
    return float(losses.mean())


def checked_temperature(logits: np.ndarray, targets: np.ndarray, source: str = "validation") -> tuple[float, str]:
    """The fitted temperature when it generalises, else 1, with the reason.

    ``source`` names the held-out logits in the reason: ``validation``, or ``out-of-fold train+val`` when they
    come from the cross-validation of a head refitted on train+val.

    The validation split also chose the epoch, the strategy and the probe's regularisation, so its accuracy is
    optimistic, and it can be small. A fitted temperature is kept only when, in cross-validation over the
    validation images, temperatures fitted on the other folds lower the held-out NLL below that of ``T = 1``; and
    one below 1 (sharpening) only when at least ``MIN_SHARPEN_ERRORS`` validation images are misclassified: with
    fewer, the fit weighs the many confident right answers against almost no mistakes. Measured on the digits
    demo: with 269 validation images and 13 errors, ``T = 0.57`` cut the test ECE from 0.080 to 0.029 and the log
    loss from 0.257 to 0.228; with 20 images and 1 error, ``T = 0.18`` passed the cross-validation but raised the
    test log loss from 1.09 to 3.44.
    """
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) < 2 * CHECK_FOLDS:
        return 1.0, f"kept T = 1: {len(targets)} {source} images are too few to fit it (at least {2 * CHECK_FOLDS})"
    temperature = fit_temperature(logits, targets)
    errors = int((logits.argmax(1) != targets).sum())
    if temperature < 1.0 and errors < MIN_SHARPEN_ERRORS:
        return 1.0, (
            f"kept T = 1: the fitted temperature {temperature:.3f} would sharpen the probabilities on the strength "
            f"of {errors} misclassified {source} images (at least {MIN_SHARPEN_ERRORS} needed)"
        )
    unscaled = float(-special.log_softmax(logits, axis=1)[np.arange(len(targets)), targets].mean())
    cross_validated = held_out_nll(logits, targets)
    numbers = f"held-out NLL {cross_validated:.4f} vs {unscaled:.4f} at T = 1 ({CHECK_FOLDS}-fold CV on {source})"
    if cross_validated < unscaled:
        return temperature, f"T = {temperature:.3f}: {numbers}"
    return 1.0, f"kept T = 1: a fitted temperature ({temperature:.3f}) does not generalise: {numbers}"


@dataclass
class Calibration:
    """A fitted temperature and the test metrics it changes.

    Attributes:
        temperature: The temperature ``T`` the served model applies (1 when fitting did not generalise).
        before: Test metrics of ``softmax(logits)`` (``T = 1``), see `calibration_metrics`.
        after: Test metrics of ``softmax(logits / T)``.
        reason: Why this temperature (see `checked_temperature`).
    """

    temperature: float
    before: dict[str, float]
    after: dict[str, float]
    reason: str = ""

    def to_dict(self) -> dict:
        """A JSON-ready dictionary."""
        return asdict(self)


def calibrate(
    val_logits: np.ndarray,
    val_targets: np.ndarray,
    test_logits: np.ndarray,
    test_targets: np.ndarray,
    num_classes: int,
    source: str = "validation",
) -> Calibration:
    """Fit the temperature on the validation split (kept when it generalises) and report test metrics.

    Args:
        val_logits: Validation logits ``(N_val, C)``.
        val_targets: Validation class ids.
        test_logits: Test logits ``(N_test, C)``.
        test_targets: Test class ids.
        num_classes: Number of classes ``C``.
        source: What the held-out logits are, for the reason (see :func:`checked_temperature`).
    """
    temperature, reason = checked_temperature(val_logits, val_targets, source)
    return Calibration(
        temperature=temperature,
        before=calibration_metrics(softmax(test_logits), test_targets, num_classes),
        after=calibration_metrics(softmax(test_logits, temperature), test_targets, num_classes),
        reason=reason,
    )
