"""Plots for MLflow and the KFP UI: confusion matrix, reliability diagram, learning curves."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tlops.train.finetune import EpochRecord


def _figure(width: float = 6.0, height: float = 5.0) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def confusion_matrix_figure(confusion: list[list[int]], classes: list[str]) -> Figure:
    """A labelled confusion-matrix heat map."""
    from sklearn.metrics import ConfusionMatrixDisplay

    size = min(14.0, 3.0 + 0.45 * len(classes))
    figure = _figure(size, size)
    axes = figure.add_subplot()
    ConfusionMatrixDisplay(np.array(confusion), display_labels=classes).plot(
        ax=axes, colorbar=False, xticks_rotation="vertical"
    )
    axes.set_title("Confusion matrix (test)")
    return figure


def _reliability_bins(probabilities: np.ndarray, targets: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the non-empty equal-width confidence bins and the accuracy in each."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == targets
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    filled = [b for b in range(bins) if (which == b).any()]
    centers = np.array([(edges[b] + edges[b + 1]) / 2 for b in filled])
    return centers, np.array([correct[which == b].mean() for b in filled])


def reliability_figure(
    probabilities: np.ndarray, targets: np.ndarray, calibrated: np.ndarray | None = None, bins: int = 15
) -> Figure:
    """Accuracy against confidence per bin, with the diagonal of perfect calibration.

    Args:
        probabilities: Predicted class probabilities ``(N, C)`` (before calibration, ``T = 1``).
        targets: True class ids.
        calibrated: The same images' probabilities after temperature scaling; drawn as a second series.
        bins: Equal-width confidence bins.
    """
    from tlops.evaluation.metrics import expected_calibration_error

    figure = _figure(5, 5)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    centers, accuracy = _reliability_bins(probabilities, targets, bins)
    ece = expected_calibration_error(probabilities, targets, bins)
    label = f"accuracy (ECE {ece:.3f})" if calibrated is None else f"before (T=1), ECE {ece:.3f}"
    axes.bar(centers, accuracy, width=1 / bins, alpha=0.7, edgecolor="black", label=label)
    if calibrated is not None:
        centers, accuracy = _reliability_bins(calibrated, targets, bins)
        ece = expected_calibration_error(calibrated, targets, bins)
        axes.plot(centers, accuracy, "o-", color="tab:red", label=f"after temperature scaling, ECE {ece:.3f}")
    axes.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title="Reliability diagram (test)")
    axes.legend(loc="upper left")
    return figure


def learning_curves_figure(history: list[EpochRecord]) -> Figure:
    """Training and validation loss and accuracy per epoch (epoch 0: the linear probe)."""
    figure = _figure(10, 4)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    epochs = [r.epoch for r in history]
    trained = [r for r in history if r.train_loss is not None]
    loss_axes.plot([r.epoch for r in trained], [r.train_loss for r in trained], "o-", label="train")
    loss_axes.plot(epochs, [r.val_loss for r in history], "o-", label="val")
    accuracy_axes.plot([r.epoch for r in trained], [r.train_accuracy for r in trained], "o-", label="train")
    accuracy_axes.plot(epochs, [r.val_accuracy for r in history], "o-", label="val")
    loss_axes.set(xlabel="epoch", ylabel="loss", title="Loss")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.legend()
        axes.set_xticks(epochs)
    return figure


def save_png(figure: Figure, path: Path) -> Path:
    """Write a figure as PNG."""
    figure.savefig(path, dpi=110)
    return path


def html_page(title: str, images: list[Path], body: str = "") -> str:
    """A self-contained HTML page with embedded PNGs, for the KFP UI's HTML artifact viewer."""
    tags = "\n".join(
        f'<h3>{p.stem.replace("_", " ")}</h3><img src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}" style="max-width:100%">'
        for p in images
    )
    title = html.escape(title)
    head = f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
    return f"{head}<body><h2>{title}</h2>{body}{tags}</body></html>"
