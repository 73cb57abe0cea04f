"""The ``auto`` strategy: decide from the evidence at hand, then prove the choice on validation.

Rule (freeze when the target is close to the source and data is small, fine-tune when they differ):

1. fewer than ``auto_min_images_per_class`` training images in the smallest class -> the better probe (too
   little data to fine-tune without overfitting);
2. the linear probe already reaches ``auto_probe_accuracy`` on validation -> the better probe (the source's
   features fit the target: it is close to the source);
3. ``auto_lp_ft_images_per_class`` images per class or more -> ``lp-ft`` (every block, from the probe head);
4. raw pixels score as well as the backbone's features (the target's low-level statistics are far from the
   source's) -> ``surgical`` on the first ``unfreeze_blocks`` blocks (Lee et al. 2023: input-level shift);
5. otherwise -> ``partial`` (the top ``unfreeze_blocks`` blocks: enough data to adapt the task-specific layers,
   not the generic ones).

A fine-tuned model is then kept only when its validation accuracy beats the best probe's by more than one
standard error of the validation estimate; otherwise the probe is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tlops.train.config import TrainConfig


@dataclass
class Evidence:
    """What ``auto`` knows before it trains.

    Attributes:
        train_images_per_class: Training images of each class.
        val_images: Validation images.
        linear_probe_val: Validation accuracy of the linear probe.
        mlp_probe_val: Validation accuracy of the MLP probe (``None`` when it was not fitted).
        knn_accuracy: Cross-validated kNN accuracy of the backbone from the selection table (``None``: no table).
        baseline_probe: Cross-validated probe accuracy of raw pixels (``None``: no baseline).
        backbone_probe: Cross-validated probe accuracy of the backbone (``None``: no table).
    """

    train_images_per_class: dict[str, int]
    val_images: int
    linear_probe_val: float
    mlp_probe_val: float | None = None
    knn_accuracy: float | None = None
    baseline_probe: float | None = None
    backbone_probe: float | None = None

    @property
    def best_probe(self) -> tuple[str, float]:
        """The probe that validates best: ``(strategy, val accuracy)`` (linear on ties: simpler)."""
        if self.mlp_probe_val is not None and self.mlp_probe_val > self.linear_probe_val:
            return "mlp-probe", self.mlp_probe_val
        return "linear-probe", self.linear_probe_val

    def describe(self) -> str:
        """One line of the evidence, for the log and the record."""
        parts = [
            f"smallest class {min(self.train_images_per_class.values())} training images",
            f"linear probe val {self.linear_probe_val:.3f}",
        ]
        if self.mlp_probe_val is not None:
            parts.append(f"MLP probe val {self.mlp_probe_val:.3f}")
        if self.knn_accuracy is not None:
            parts.append(f"kNN {self.knn_accuracy:.3f}")
        if self.baseline_probe is not None and self.backbone_probe is not None:
            parts.append(f"probe on raw pixels {self.baseline_probe:.3f} vs backbone {self.backbone_probe:.3f}")
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
    probe, probe_val = evidence.best_probe
    smallest = min(evidence.train_images_per_class.values())
    if smallest < config.auto_min_images_per_class:
        return probe, [
            *reasons,
            f"the smallest class has {smallest} training images (< {config.auto_min_images_per_class}): too little "
            f"data to fine-tune without overfitting, keep the backbone frozen ({probe}, val {probe_val:.3f})",
        ]
    if evidence.linear_probe_val >= config.auto_probe_accuracy:
        return probe, [
            *reasons,
            f"the frozen features already separate the classes (linear probe val {evidence.linear_probe_val:.3f} >= "
            f"{config.auto_probe_accuracy}): the target is close to the source, keep the backbone frozen ({probe})",
        ]
    far = (
        evidence.baseline_probe is not None
        and evidence.backbone_probe is not None
        and evidence.baseline_probe >= evidence.backbone_probe
    )
    if smallest >= config.auto_lp_ft_images_per_class:
        return "lp-ft", [
            *reasons,
            f"fine-tune every block from the probe head (lp-ft): {smallest}+ training images per class "
            f"(>= {config.auto_lp_ft_images_per_class}) support it",
        ]
    if far:
        return "surgical", [
            *reasons,
            f"raw pixels fit as well as the pretrained features (probe {evidence.baseline_probe:.3f} vs "
            f"{evidence.backbone_probe:.3f}): the low-level statistics differ from the source, and {smallest} images "
            f"per class (< {config.auto_lp_ft_images_per_class}) are too few for every block: fine-tune the first "
            f"{config.unfreeze_blocks} blocks (surgical, input-level shift)",
        ]
    return "partial", [
        *reasons,
        f"probe val {probe_val:.3f} < {config.auto_probe_accuracy} with {smallest} images per class (between "
        f"{config.auto_min_images_per_class} and {config.auto_lp_ft_images_per_class}): fine-tune the top "
        f"{config.unfreeze_blocks} blocks only (partial), the generic lower blocks stay frozen",
    ]


def keep_fine_tuned(fine_tuned_val: float, evidence: Evidence) -> tuple[bool, str]:
    """Whether ``auto`` keeps a fine-tuned model: it must beat the best probe by more than one standard error.

    Returns:
        The verdict and its reason.
    """
    probe, probe_val = evidence.best_probe
    error = standard_error(probe_val, evidence.val_images)
    if fine_tuned_val > probe_val + error:
        return True, (
            f"kept the fine-tuned model: val {fine_tuned_val:.3f} beats the {probe} ({probe_val:.3f}) by more than "
            f"one standard error ({error:.3f}, {evidence.val_images} val images)"
        )
    return False, (
        f"kept the {probe}: the fine-tuned model's val {fine_tuned_val:.3f} does not beat its {probe_val:.3f} by "
        f"more than one standard error ({error:.3f}, {evidence.val_images} val images)"
    )
