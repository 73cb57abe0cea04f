"""Evaluation of a classifier on the test split: metrics, per-class report, confusion matrix, calibration."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from tlops.io.progress import progress
from tlops.models.device import autocast


@dataclass
class Evaluation:
    """Test-split results.

    Attributes:
        metrics: Scalar metrics (``test_accuracy``, ``test_macro_f1``, ...).
        report: scikit-learn's per-class precision/recall/F1/support.
        confusion: Confusion matrix, rows true class, columns predicted class.
        classes: Class names in class-id order.
        targets: True class ids.
        probabilities: Predicted class probabilities ``(N, C)``.
    """

    metrics: dict[str, float]
    report: dict
    confusion: list[list[int]]
    classes: list[str]
    targets: np.ndarray
    probabilities: np.ndarray


def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (softmax of the logits) and true targets for every image of a loader."""
    logits, targets = predict_logits(model, loader, device)
    return torch.from_numpy(logits).softmax(1).numpy(), targets


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Logits (float32) and true targets for every image of a loader.

    A model loaded back from the registry is an exported (pt2) program: it has no train/eval switch and runs
    on the CPU it was exported on.
    """
    from torch.fx import GraphModule

    memory_format = torch.contiguous_format
    if isinstance(model, GraphModule):
        device = torch.device("cpu")
    else:  # channels_last: faster convolutions on CUDA and on the CPU
        memory_format = torch.channels_last
        model.eval().to(device=device, memory_format=memory_format)
    outputs, targets = [], []
    for images, labels in progress(loader, "evaluating", unit="batch"):
        with autocast(device):
            logits = model(images.to(device, non_blocking=True).contiguous(memory_format=memory_format))
        outputs.append(logits.float().cpu().numpy())
        targets.append(labels.numpy())
    return np.concatenate(outputs), np.concatenate(targets)


def accuracy_of(logits: np.ndarray, targets: np.ndarray, balanced: bool = False) -> float:
    """Accuracy (balanced accuracy when ``balanced``) of the argmax of ``logits`` against ``targets``."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    score = balanced_accuracy_score if balanced else accuracy_score
    return float(score(targets, np.asarray(logits).argmax(axis=1)))


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of weight * |accuracy - confidence|."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(error)


def compute_metrics(probabilities: np.ndarray, targets: np.ndarray, classes: list[str]) -> Evaluation:
    """Accuracy, balanced accuracy, macro-F1, top-k, log loss, ECE, per-class report and confusion matrix."""
    from sklearn import metrics as sk

    labels = list(range(len(classes)))
    predictions = probabilities.argmax(1)
    scores = {
        "test_accuracy": sk.accuracy_score(targets, predictions),
        "test_balanced_accuracy": sk.balanced_accuracy_score(targets, predictions),
        "test_macro_f1": sk.f1_score(targets, predictions, labels=labels, average="macro", zero_division=0),
        "test_log_loss": sk.log_loss(targets, np.clip(probabilities, 1e-12, 1.0), labels=labels),
        "test_ece": expected_calibration_error(probabilities, targets),
        "test_images": len(targets),
    }
    if len(classes) > 5:
        scores["test_top5_accuracy"] = sk.top_k_accuracy_score(targets, probabilities, k=5, labels=labels)
    report = sk.classification_report(
        targets, predictions, labels=labels, target_names=classes, output_dict=True, zero_division=0
    )
    confusion = sk.confusion_matrix(targets, predictions, labels=labels)
    return Evaluation(
        metrics={k: float(v) for k, v in scores.items()},
        report=report,
        confusion=confusion.tolist(),
        classes=classes,
        targets=targets,
        probabilities=probabilities,
    )
