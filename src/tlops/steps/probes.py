"""The probe the fine-tune step ships or compares against: chosen by cross-validation on small data.

:func:`choose_probe` returns a :class:`ProbeFit`: the probe's head (refitted on train+val when it was chosen by
cross-validation), its estimated accuracy with a standard error and what that was measured on, the out-of-fold
logits that calibrate it, and the same probe fitted on the training split alone, whose validation predictions a
fine-tuned model is compared with image by image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tlops.estimates import image_difference
from tlops.steps.outputs import ProbeSummary, read_features, read_head
from tlops.train.auto import standard_error
from tlops.train.config import TrainConfig
from tlops.train.mlp import fit_mlp_head
from tlops.train.probe_selection import (
    affordable,
    cross_validate_probes,
    cv_folds_for,
    fit_chosen,
    probe_candidates,
)

logger = logging.getLogger(__name__)

PROBES = ("linear-probe", "mlp-probe")


@dataclass
class ProbeFit:
    """The probe of a fine-tune step.

    Attributes:
        strategy: ``linear-probe`` or ``mlp-probe``.
        head: The head shipped when the probe is kept (applies to raw features).
        accuracy: Its estimated accuracy.
        std_error: The standard error of that estimate.
        basis: What the estimate was measured on.
        reasons: How it was chosen, with the estimates.
        train_accuracy: The head's accuracy on the images it was fitted on.
        calibration: Out-of-fold logits and class ids to calibrate the head with (``None``: the validation
            split is held out from the head and calibrates it).
        cross_validation: The cross-validated candidates (``None``: chosen on the validation split).
        mlp_hidden: Hidden width of the head (0: linear).
        train_only: Builds the same probe fitted on the training split alone (for comparing on validation).
        val: The cached validation features and class ids (``None``: no cached features were given).
    """

    strategy: str
    head: nn.Module
    accuracy: float
    std_error: float
    basis: str
    reasons: list[str]
    train_accuracy: float
    calibration: tuple[np.ndarray, np.ndarray] | None = None
    cross_validation: dict | None = None
    mlp_hidden: int = 0
    train_only: Callable[[], nn.Module] | None = field(default=None, repr=False)
    val: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def validation_correct(self) -> np.ndarray:
        """Per-image correctness on the validation split of this probe fitted on the training split alone."""
        assert self.val is not None, "needs the cached features"
        features, targets = self.val
        head = self.train_only() if self.train_only is not None else self.head
        with torch.no_grad():
            return (head.eval()(features.float()).argmax(1) == targets).numpy()


def choose_probe(
    probe_dir: Path,
    features_dir: Path | None,
    config: TrainConfig,
    num_classes: int,
    class_weights: torch.Tensor | None,
    val_images: int,
    unit: str = "images",
) -> ProbeFit:
    """The probe for ``config.strategy`` (``auto`` chooses between linear and MLP); ``unit`` names the examples.

    * Without cached features, the linear probe of extract-features (C chosen on validation).
    * With them and a validation split smaller than ``config.cross_validate_below`` (and two images of every
      class), every candidate of the allowed probes is cross-validated on train+val
      (:func:`~tlops.train.probe_selection.cross_validate_probes`) and the chosen one refitted on train+val.
    * Otherwise on the validation split: the linear probe of extract-features, and for ``mlp-probe`` or ``auto``
      the MLP probe, which ``auto`` takes only when it beats the linear one by more than one paired standard error.
    """
    summary = ProbeSummary.read(probe_dir)
    allowed = [config.strategy] if config.strategy in PROBES else list(PROBES)
    linear = _linear_from_extract(probe_dir, summary, val_images, unit)
    if features_dir is None:
        return linear
    splits = read_features(features_dir)
    train, val = splits["train"], splits["val"]
    linear.val = val
    if config.strategy_entry.trains_backbone:
        return linear  # fine-tuning starts from the linear head; there is no probe to choose
    pooled = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
    if len(val[1]) < config.cross_validate_below and cv_folds_for(pooled[1].numpy()):
        fit = _cross_validated(pooled, train, allowed, config, num_classes, class_weights, unit)
    else:
        fit = _on_validation(linear, train, val, allowed, config, num_classes, class_weights)
    fit.val = val
    return fit


def _linear_from_extract(probe_dir: Path, summary: ProbeSummary, val_images: int, unit: str) -> ProbeFit:
    return ProbeFit(
        strategy="linear-probe",
        head=read_head(probe_dir),
        accuracy=summary.val_accuracy,
        std_error=standard_error(summary.val_accuracy, val_images),
        basis=f"{val_images} validation {unit}",
        reasons=[f"linear probe C={summary.C:g} chosen on the validation split: val {summary.val_accuracy:.3f}"],
        train_accuracy=summary.train_accuracy,
    )


def _cross_validated(
    pooled: tuple[torch.Tensor, torch.Tensor],
    train: tuple[torch.Tensor, torch.Tensor],
    allowed: list[str],
    config: TrainConfig,
    num_classes: int,
    class_weights: torch.Tensor | None,
    unit: str,
) -> ProbeFit:
    """Cross-validate the allowed probes on train+val, refit the chosen one on train+val."""
    options = {"seed": config.seed, "class_weights": class_weights}
    options |= {"mlp_hidden": config.mlp_hidden, "mlp_dropout": config.mlp_dropout}
    candidates = probe_candidates(allowed)
    affordable_candidates = affordable(candidates, *pooled[0].shape)
    choice = cross_validate_probes(pooled[0], pooled[1], num_classes, affordable_candidates, **options, unit=unit)
    candidate = choice.chosen.candidate
    head = fit_chosen(candidate, pooled, num_classes, **options)
    with torch.no_grad():
        fitted = float((head.eval()(pooled[0].float()).argmax(1) == pooled[1]).float().mean())
    logger.info("%s", choice.reason())
    return ProbeFit(
        strategy=candidate.strategy,
        head=head,
        accuracy=choice.chosen.mean,
        std_error=choice.standard_error(),
        basis=choice.basis,
        reasons=[
            choice.reason(),
            *(
                ["the MLP probe was not cross-validated: too large to train 5 times (--strategy mlp-probe trains it)"]
                if len(affordable_candidates) < len(candidates)
                else []
            ),
            f"refitted on all {choice.images} train+val {unit}",
        ],
        train_accuracy=fitted,
        calibration=(choice.chosen.oof_logits, pooled[1].numpy()),
        cross_validation=choice.to_dict(),
        mlp_hidden=config.mlp_hidden if candidate.strategy == "mlp-probe" else 0,
        train_only=lambda: fit_chosen(candidate, train, num_classes, **options),
    )


def _on_validation(
    linear: ProbeFit,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    allowed: list[str],
    config: TrainConfig,
    num_classes: int,
    class_weights: torch.Tensor | None,
) -> ProbeFit:
    """Linear (extract-features') or MLP probe, both fitted on train and compared on the validation split."""
    basis = linear.basis
    if "mlp-probe" not in allowed:
        return linear
    mlp = fit_mlp_head(
        train, val, num_classes, config.mlp_hidden, config.mlp_dropout, seed=config.seed, class_weights=class_weights
    )
    logger.info("MLP probe on cached features: val accuracy %.4f (epoch %d)", mlp.val_accuracy, mlp.best_epoch)
    fit = ProbeFit(
        strategy="mlp-probe",
        head=mlp.head,
        accuracy=mlp.val_accuracy,
        std_error=standard_error(mlp.val_accuracy, len(val[1])),
        basis=basis,
        reasons=[f"MLP probe val {mlp.val_accuracy:.3f} (epoch {mlp.best_epoch})"],
        train_accuracy=mlp.train_accuracy,
        mlp_hidden=config.mlp_hidden,
    )
    if "linear-probe" not in allowed:
        return fit
    with torch.no_grad():
        correct = {name: (p.head.eval()(val[0].float()).argmax(1) == val[1]).numpy() for name, p in
                   (("mlp", fit), ("linear", linear))}  # fmt: skip
    difference = image_difference(correct["mlp"], correct["linear"], f"paired on {basis}")
    if difference.mean > difference.std_error:
        fit.reasons.append(f"MLP probe chosen: MLP - linear {difference.describe()}, above one standard error")
        return fit
    linear.reasons.append(f"linear probe kept: MLP - linear {difference.describe()}, not above one standard error")
    return linear
