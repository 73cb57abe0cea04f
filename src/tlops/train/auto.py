"""The ``auto`` strategy: decide from the evidence at hand, then prove the choice on validation.

Every decision is taken on an estimate with its standard error, never on a point estimate from a few images:

1. The probe (linear or MLP, and its regularisation) is chosen by repeated k-fold cross-validation on train+val
   when the validation split is small (:mod:`tlops.train.probe_selection`), on the validation split otherwise.
2. Fine-tuning is tried only where it can pay off (the rules below, from the benchmark in bench/README.md):
   never on the no-transfer baseline (it has no backbone), nor below ``auto_min_images_per_class`` training images
   in the smallest class, nor when the probe already reaches ``auto_probe_accuracy``; otherwise the
   ``auto_fine_tune`` strategy is trained from the linear probe's head.
3. The fine-tuned model is kept only when its validation accuracy beats the chosen probe's (fitted on the training
   split alone, so both are held out) by more than one standard error of their paired per-image difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tlops.estimates import PairedDifference
from tlops.models.names import BASELINES
from tlops.train.config import TrainConfig


@dataclass
class Evidence:
    """What ``auto`` knows before it trains.

    Attributes:
        train_images_per_class: Training images of each class.
        val_images: Validation images.
        linear_probe_val: Validation accuracy of the linear probe of extract-features (C chosen on validation).
        knn_accuracy: Cross-validated kNN accuracy of the backbone from the selection table (``None``: no table).
        baseline_probe: Cross-validated probe accuracy of raw pixels (``None``: no baseline).
        backbone_probe: Cross-validated probe accuracy of the backbone (``None``: no table).
        backbone: The backbone (``pixels``: the no-transfer baseline, nothing to fine-tune).
        probe: The probe chosen (``linear-probe`` or ``mlp-probe``).
        probe_accuracy: Its estimated accuracy (cross-validated, or on the validation split).
        probe_std_error: The standard error of that estimate.
        probe_basis: What the estimate was measured on.
        cross_validation: The cross-validated candidates (``None``: chosen on the validation split).
        unit: What an example is, in words (``images``, ``texts``).
    """

    train_images_per_class: dict[str, int]
    val_images: int
    linear_probe_val: float
    knn_accuracy: float | None = None
    baseline_probe: float | None = None
    backbone_probe: float | None = None
    backbone: str = ""
    probe: str = "linear-probe"
    probe_accuracy: float | None = None
    probe_std_error: float | None = None
    probe_basis: str = ""
    cross_validation: dict[str, Any] | None = None
    unit: str = "images"

    @property
    def best_probe(self) -> tuple[str, float]:
        """The probe chosen and its estimated accuracy."""
        estimate = self.probe_accuracy if self.probe_accuracy is not None else self.linear_probe_val
        return self.probe, estimate

    def describe(self) -> str:
        """One line of the evidence, for the log and the record."""
        probe, estimate = self.best_probe
        parts = [f"smallest class {min(self.train_images_per_class.values())} training {self.unit}"]
        error = f" ± {self.probe_std_error:.3f}" if self.probe_std_error is not None else ""
        parts.append(f"{probe} {estimate:.3f}{error}" + (f" ({self.probe_basis})" if self.probe_basis else ""))
        if self.knn_accuracy is not None:
            parts.append(f"kNN {self.knn_accuracy:.3f}")
        if self.baseline_probe is not None and self.backbone_probe is not None:
            parts.append(
                f"probe on the no-transfer baseline {self.baseline_probe:.3f} vs backbone {self.backbone_probe:.3f}"
            )
        return "evidence: " + ", ".join(parts)


def standard_error(accuracy: float, images: int) -> float:
    """Standard error of an accuracy measured on ``images`` images (binomial), at least half an image's share."""
    return max(math.sqrt(accuracy * (1 - accuracy) / max(images, 1)), 0.5 / max(images, 1))


def decide(config: TrainConfig, evidence: Evidence) -> tuple[str, list[str]]:
    """The strategy ``auto`` trains (explicit strategies pass through), with its reasons.

    Returns:
        The strategy and the reasons, the evidence first.
    """
    if config.strategy != "auto":
        return config.strategy, [f"strategy {config.strategy!r} was requested"]
    reasons = [evidence.describe()]
    probe, estimate = evidence.best_probe
    smallest = min(evidence.train_images_per_class.values())
    if evidence.backbone in BASELINES:
        return probe, [*reasons, f"the no-transfer baseline has no backbone to fine-tune: keep the {probe}"]
    if smallest < config.auto_min_images_per_class:
        return probe, [
            *reasons,
            f"the smallest class has {smallest} training {evidence.unit} (< {config.auto_min_images_per_class}): too "
            f"few to fine-tune and to show that it helped, keep the backbone frozen ({probe}, {estimate:.3f})",
        ]
    if estimate >= config.auto_probe_accuracy:
        return probe, [
            *reasons,
            f"the frozen features already separate the classes ({probe} {estimate:.3f} >= "
            f"{config.auto_probe_accuracy}): keep the backbone frozen",
        ]
    return config.auto_fine_tune, [
        *reasons,
        f"try {config.auto_fine_tune} from the linear probe's head: {smallest}+ training {evidence.unit} per class and "
        f"{probe} {estimate:.3f} < {config.auto_probe_accuracy}; kept only if it beats the {probe} on validation",
    ]


def keep_fine_tuned(difference: PairedDifference, evidence: Evidence) -> tuple[bool, str]:
    """Whether ``auto`` keeps a fine-tuned model: it must beat the probe by more than one standard error.

    Args:
        difference: Fine-tuned minus probe accuracy, paired per validation image (both fitted on the training
            split only).
        evidence: What ``auto`` decided from.

    Returns:
        The verdict and its reason.
    """
    probe = evidence.probe
    if difference.mean > difference.std_error:
        return (
            True,
            f"kept the fine-tuned model: fine-tuned - {probe} {difference.describe()}, above one standard error",
        )
    return False, (f"kept the {probe}: fine-tuned - {probe} {difference.describe()} is not above one standard error")
