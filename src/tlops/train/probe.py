"""Feature-based transfer: run the frozen backbone once, cache embeddings, fit a linear head on them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.base import BaseEstimator, TransformerMixin
from torch import nn

from tlops.models.threads import single_blas_thread

C_GRID = (0.01, 0.1, 1.0, 10.0)
"""Inverse regularisation strengths the linear probe chooses from (features centred, globally scaled)."""


@dataclass
class ProbeResult:
    """A linear head fitted on frozen features.

    Attributes:
        head: The fitted layer (standardization folded in).
        C: Inverse regularization strength chosen on validation.
        val_accuracy: Accuracy on the validation features.
        train_accuracy: Accuracy on the training features.
    """

    head: nn.Linear
    C: float
    val_accuracy: float
    train_accuracy: float


class GlobalScaler(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: center each feature, divide all by one scalar (their mean standard deviation).

    Unlike per-feature standardization it does not blow up near-constant (dead) channels of pooled CNN features.
    """

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> GlobalScaler:
        """Learn the per-feature means and the global scale."""
        self.mean_ = np.asarray(x, dtype=np.float64).mean(axis=0)
        self.scale_ = float(np.asarray(x, dtype=np.float64).std(axis=0).mean()) or 1.0
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Center and scale."""
        return (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_


def fit_linear_head(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    grid: tuple[float, ...] = C_GRID,
    seed: int = 0,
    class_weighted: bool = False,
) -> ProbeResult:
    """Fit multinomial logistic regression on centered, globally scaled features, choosing C on validation.

    Features are centered per dimension and divided by one scalar (their mean standard deviation), not
    standardized per dimension: pooled CNN features have near-constant (dead) channels, and per-dimension
    scaling gives those huge weights, which makes the head fragile and fine-tuning from it (LP-FT) unstable.

    With ``class_weighted`` each class's loss is weighted inversely to its frequency (scikit-learn's
    ``balanced``), and C is chosen by balanced accuracy.

    The scaling is folded into the returned ``nn.Linear``, so it applies to raw features. The fits run with one
    BLAS thread (:func:`~tlops.models.threads.single_blas_thread`).
    """
    with single_blas_thread():
        return _fit_linear_head(train, val, num_classes, grid, seed, class_weighted)


def _fit_linear_head(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    grid: tuple[float, ...],
    seed: int,
    class_weighted: bool,
) -> ProbeResult:
    from sklearn.metrics import balanced_accuracy_score

    x_train, y_train = train[0].numpy().astype(np.float64), train[1].numpy()
    x_val, y_val = val[0].numpy().astype(np.float64), val[1].numpy()
    scaler = GlobalScaler().fit(x_train)
    z_train, z_val = scaler.transform(x_train), scaler.transform(x_val)
    best = None
    for c in grid:
        classifier = logistic_regression(c, seed, class_weighted).fit(z_train, y_train)
        score = (
            float(balanced_accuracy_score(y_val, classifier.predict(z_val)))
            if class_weighted
            else float(classifier.score(z_val, y_val))
        )
        if best is None or score > best[0]:
            best = (score, c, classifier)
    assert best is not None
    score, c, classifier = best
    head = _folded_head(classifier, scaler, num_classes, x_train.shape[1])
    return ProbeResult(head=head, C=c, val_accuracy=score, train_accuracy=float(classifier.score(z_train, y_train)))


def logistic_regression(c: float, seed: int, class_weighted: bool):
    """The probe's classifier: multinomial logistic regression with inverse regularisation ``c``."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(
        C=c, max_iter=2000, random_state=seed, class_weight="balanced" if class_weighted else None
    )


def linear_head_with(
    features: np.ndarray, targets: np.ndarray, num_classes: int, c: float, seed: int = 0, class_weighted: bool = False
) -> nn.Linear:
    """The linear head fitted on all of ``features`` at a fixed ``c`` (chosen beforehand, e.g. by cross-validation).

    The same scaling and classifier as :func:`fit_linear_head`, folded into the returned layer; one BLAS thread.
    """
    x = np.asarray(features, dtype=np.float64)
    with single_blas_thread():
        scaler = GlobalScaler().fit(x)
        classifier = logistic_regression(c, seed, class_weighted).fit(scaler.transform(x), np.asarray(targets))
    return _folded_head(classifier, scaler, num_classes, x.shape[1])


def _folded_head(classifier, scaler: GlobalScaler, num_classes: int, width: int) -> nn.Linear:
    """An ``nn.Linear`` applying ``classifier`` to raw features (the scaler folded into its weights)."""
    weight, bias = full_coefficients(classifier, num_classes, width)
    head = nn.Linear(width, num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight / scaler.scale_).float())
        head.bias.copy_(torch.from_numpy(bias - (weight / scaler.scale_) @ scaler.mean_).float())
    return head


def full_coefficients(classifier, num_classes: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients for all classes (classes absent from training get a very negative bias)."""
    weight = np.zeros((num_classes, width))
    bias = np.full(num_classes, -1e4)
    coef, intercept = classifier.coef_, classifier.intercept_
    if coef.shape[0] == 1:  # binary problems come back as one row
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    weight[classifier.classes_] = coef
    bias[classifier.classes_] = intercept
    return weight, bias


def save_features(path: Path, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Save per-split features and targets as one safetensors file."""
    tensors = {}
    for split, (features, targets) in splits.items():
        tensors[f"{split}.features"] = features.contiguous()
        tensors[f"{split}.targets"] = targets.contiguous()
    save_file(tensors, str(path))


def load_features(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Load what :func:`save_features` wrote."""
    tensors = load_file(str(path))
    splits = {name.rpartition(".")[0] for name in tensors}
    return {s: (tensors[f"{s}.features"], tensors[f"{s}.targets"]) for s in sorted(splits)}


def save_head(path: Path, head: nn.Linear) -> None:
    """Save a linear head's weight and bias as one safetensors file."""
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(path))


def load_head(path: Path) -> nn.Linear:
    """Load what :func:`save_head` wrote."""
    state = load_file(str(path))
    out_features, in_features = state["weight"].shape
    head = nn.Linear(in_features, out_features)
    head.load_state_dict(state)
    return head
