"""Plots of a detector's evaluation: precision-recall curves per class, and predictions drawn on test images."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tlops.evaluation.detection_metrics import DEFAULT_SCORE_THRESHOLD, DetectionMetrics, Detections

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image

_TRUTH_COLOUR = "tab:green"
_PREDICTION_COLOUR = "tab:red"


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def pr_curves_figure(metrics: DetectionMetrics) -> Figure:
    """Precision against recall at IoU .5 for each class with ground truth (COCO's interpolated curves)."""
    figure = _figure(6, 5)
    axes = figure.add_subplot()
    for name, (recall, precision) in metrics.pr_curves.items():
        axes.plot(recall, precision, label=f"{name} (AP50 {metrics.per_class_ap50.get(name, float('nan')):.3f})")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall at IoU 0.5")
    if metrics.pr_curves:
        axes.legend(loc="lower left", fontsize="small")
    else:
        axes.text(0.5, 0.5, "no ground-truth boxes", ha="center", va="center")
    return figure


def detection_examples_figure(
    images: Sequence[Image.Image | np.ndarray],
    ground_truth: Sequence[Detections],
    predictions: Sequence[Detections],
    classes: list[str],
    *,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    columns: int = 3,
) -> Figure:
    """Test images with their ground-truth boxes (green, dashed) and predicted boxes (red, with label and score).

    Args:
        images: The pictures, at the size the boxes are in (the manifest's original pixels).
        ground_truth: Per image: ``boxes``, 0-based ``labels``.
        predictions: Per image: ``boxes``, ``labels``, ``scores``.
        classes: Class names, by class id.
        score_threshold: Predictions scoring lower are not drawn.
        columns: Images per row.
    """
    from matplotlib.patches import Rectangle

    count = max(1, len(images))
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    figure = _figure(4 * columns, 4 * rows)
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    for axes in grid:
        axes.axis("off")
    for axes, image, truth, predicted in zip(grid, images, ground_truth, predictions, strict=False):
        axes.imshow(np.asarray(image))
        for box, label in zip(np.asarray(truth["boxes"]).reshape(-1, 4), np.asarray(truth["labels"]), strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=_TRUTH_COLOUR, lw=1.5, ls="--"))
            axes.text(x1, y2, classes[int(label)], color="white", fontsize=7, va="top",
                      bbox={"facecolor": _TRUTH_COLOUR, "alpha": 0.7, "pad": 1, "lw": 0})  # fmt: skip
        boxes, labels = np.asarray(predicted["boxes"]).reshape(-1, 4), np.asarray(predicted["labels"])
        for box, label, score in zip(boxes, labels, np.asarray(predicted["scores"]), strict=True):
            if score < score_threshold:
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=_PREDICTION_COLOUR, lw=1.5))
            axes.text(x1, y1, f"{classes[int(label)]} {float(score):.2f}", color="white", fontsize=7, va="bottom",
                      bbox={"facecolor": _PREDICTION_COLOUR, "alpha": 0.7, "pad": 1, "lw": 0})  # fmt: skip
    figure.suptitle(f"Test predictions (red, score >= {score_threshold:g}) and ground truth (green, dashed)")
    return figure


def detection_curves_figure(epochs: Sequence[Any]) -> Figure:
    """Training loss and validation mAP50 and mAP per epoch (``DetectionEpoch`` records of the detection training)."""
    figure = _figure(10, 4)
    loss_axes, map_axes = figure.subplots(1, 2)
    numbers = [epoch.epoch for epoch in epochs]
    loss_axes.plot(numbers, [epoch.train_loss for epoch in epochs], "o-", label="train (sum of the terms)")
    terms = sorted({name for epoch in epochs for name in epoch.loss_terms})
    for name in terms:
        loss_axes.plot(numbers, [epoch.loss_terms.get(name, np.nan) for epoch in epochs], ".--", label=name)
    for name in ("map50", "map"):
        map_axes.plot(numbers, [epoch.val.get(name, np.nan) for epoch in epochs], "o-", label=f"val {name}")
    loss_axes.set(xlabel="epoch", ylabel="loss per image", title="Loss")
    map_axes.set(xlabel="epoch", ylabel="mAP", ylim=(0, 1), title="Validation mAP")
    for axes in (loss_axes, map_axes):
        axes.legend(fontsize="small")
        axes.set_xticks(numbers)
    return figure
