"""The probe and its regularisation chosen by repeated k-fold cross-validation on cached features.

On small data a validation split of a few dozen images cannot tell probes apart: one image moves its accuracy by
more than the differences being compared. Here every candidate (the linear probe at each C of its grid, the MLP
probe at each epoch budget) is fitted and scored on the same repeated stratified folds of train+val, the best mean
is found, and the simplest candidate whose paired difference to the best is within one corrected standard error
(:func:`~tlops.estimates.fold_difference`) is chosen: the one-standard-error rule of Breiman et al.,
with linear before MLP and stronger regularisation before weaker. The chosen candidate is then refitted on all
of train+val, and its out-of-fold logits calibrate it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from tlops.estimates import PairedDifference, fold_difference, fold_standard_error
from tlops.models.threads import single_blas_thread
from tlops.train.mlp import fit_mlp_head_for, mlp_logits_at
from tlops.train.probe import C_GRID, GlobalScaler, full_coefficients, linear_head_with, logistic_regression

MLP_EPOCHS = (20, 50, 100)
"""Epoch budgets of the MLP probe the cross-validation chooses from."""
DEFAULT_FOLDS = 5
MAX_REPEATS = 3
REPEAT_BELOW_IMAGES = 600
"""Repeat the k-fold split (3 times) below this many images, where one split's luck matters most; once above."""
MLP_CV_MAX_CELLS = 1_500_000
"""Cross-validate the MLP probe only up to this many images x feature dimensions (about 1,000 images of 1,280
features): above it, 5 trainings of 100 epochs cost minutes on one CPU thread and the linear probe alone is
cross-validated (the MLP probe stays available as ``--strategy mlp-probe``)."""


def repeats_for(images: int) -> int:
    """Repeats of the k-fold split for ``images`` images (:data:`REPEAT_BELOW_IMAGES`)."""
    return MAX_REPEATS if images < REPEAT_BELOW_IMAGES else 1


def affordable(candidates: Sequence[ProbeCandidate], images: int, width: int) -> list[ProbeCandidate]:
    """The candidates whose cross-validation is affordable: no MLP above :data:`MLP_CV_MAX_CELLS`."""
    if images * width <= MLP_CV_MAX_CELLS:
        return list(candidates)
    return [c for c in candidates if c.strategy != "mlp-probe"] or list(candidates)


@dataclass(frozen=True)
class ProbeCandidate:
    """One probe configuration.

    Attributes:
        strategy: ``linear-probe`` or ``mlp-probe``.
        value: The linear probe's C, or the MLP probe's epochs.
    """

    strategy: str
    value: float

    @property
    def label(self) -> str:
        """``linear probe (C=0.1)`` or ``MLP probe (50 epochs)``."""
        if self.strategy == "linear-probe":
            return f"linear probe (C={self.value:g})"
        return f"MLP probe ({int(self.value)} epochs)"


def probe_candidates(strategies: Sequence[str]) -> list[ProbeCandidate]:
    """The candidates of the given probe strategies, simplest first (linear before MLP, strong regularisation first)."""
    candidates = []
    if "linear-probe" in strategies:
        candidates += [ProbeCandidate("linear-probe", c) for c in sorted(C_GRID)]
    if "mlp-probe" in strategies:
        candidates += [ProbeCandidate("mlp-probe", epochs) for epochs in MLP_EPOCHS]
    return candidates


@dataclass
class CandidateEstimate:
    """A candidate's cross-validated accuracy.

    Attributes:
        candidate: The configuration.
        fold_scores: Accuracy on each fold of each repeat (balanced when class-weighted).
        oof_logits: Out-of-fold logits of the first repeat, one row per image (each image held out once).
    """

    candidate: ProbeCandidate
    fold_scores: list[float]
    oof_logits: np.ndarray = field(repr=False)

    @property
    def mean(self) -> float:
        """Mean accuracy over the folds."""
        return float(np.mean(self.fold_scores))


@dataclass
class ProbeChoice:
    """The cross-validated probe choice.

    Attributes:
        estimates: Every candidate's estimate, simplest first.
        chosen: The candidate chosen (the simplest within one standard error of the best).
        best: The candidate with the best mean.
        difference: Best minus chosen, paired by fold.
        folds: Folds of one repeat.
        repeats: Repeats of the k-fold split.
        images: Examples cross-validated (train+val).
        unit: What an example is, in words (``images``, ``texts``).
    """

    estimates: list[CandidateEstimate]
    chosen: CandidateEstimate
    best: CandidateEstimate
    difference: PairedDifference
    folds: int
    repeats: int
    images: int
    unit: str = "images"

    @property
    def basis(self) -> str:
        """``3 x 5-fold CV on 100 train+val images``."""
        return f"{self.repeats} x {self.folds}-fold CV on {self.images} train+val {self.unit}"

    def standard_error(self) -> float:
        """The chosen candidate's standard error over the folds (corrected for the overlap of training folds)."""
        return fold_standard_error(self.chosen.fold_scores, self.folds)

    def reason(self) -> str:
        """One sentence: what was chosen, on which estimate, and why over the best when they differ."""
        chosen = f"{self.chosen.candidate.label}, {self.chosen.mean:.3f} ± {self.standard_error():.3f} ({self.basis})"
        if self.chosen is self.best:
            runner = max((e for e in self.estimates if e is not self.best), key=lambda e: e.mean, default=None)
            tail = f"; next: {runner.candidate.label} {runner.mean:.3f}" if runner else ""
            return f"probe chosen by cross-validation: {chosen}, the best mean{tail}"
        return (
            f"probe chosen by cross-validation: {chosen}, the simplest within one standard error of the best, "
            f"{self.best.candidate.label} {self.best.mean:.3f} (best - chosen {self.difference.describe()})"
        )

    def to_dict(self) -> dict:
        """The estimates for the training record."""
        return {
            "basis": self.basis,
            "chosen": self.chosen.candidate.label,
            "chosen_accuracy": self.chosen.mean,
            "chosen_std_error": self.standard_error(),
            "best": self.best.candidate.label,
            "candidates": {e.candidate.label: round(e.mean, 4) for e in self.estimates},
        }


def cv_folds_for(targets: np.ndarray, folds: int = DEFAULT_FOLDS) -> int:
    """Folds a stratified split of ``targets`` can have: at most ``folds``, at most the smallest class (0: none)."""
    smallest = int(np.unique(targets, return_counts=True)[1].min()) if len(targets) else 0
    count = min(folds, smallest)
    return count if count >= 2 else 0


def cross_validate_probes(
    features: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    candidates: Sequence[ProbeCandidate],
    *,
    folds: int = DEFAULT_FOLDS,
    repeats: int | None = None,
    seed: int = 0,
    class_weights: torch.Tensor | None = None,
    mlp_hidden: int = 512,
    mlp_dropout: float = 0.2,
    unit: str = "images",
) -> ProbeChoice:
    """Score every candidate on the same repeated stratified folds and choose one (module docstring).

    Args:
        features: ``(N, D)`` features of train+val.
        targets: ``(N,)`` class ids.
        num_classes: Classes of the dataset.
        candidates: The configurations, simplest first (:func:`probe_candidates`).
        folds: Folds wanted (at most the smallest class's images: :func:`cv_folds_for`).
        repeats: Repeats of the k-fold split, each shuffled with its own seed (``None``: :func:`repeats_for`).
        seed: Seed of the splits and the fits.
        class_weights: Per-class loss weights (then balanced accuracy is the score).
        mlp_hidden: Hidden width of the MLP probe.
        mlp_dropout: Its dropout.
        unit: What the examples are, in words, for the reasons (``images``, ``texts``).

    Raises:
        ValueError: when a class has fewer than two images (no stratified split).
    """
    from sklearn.model_selection import StratifiedKFold

    y = targets.numpy()
    repeats = repeats or repeats_for(len(y))
    k = cv_folds_for(y, folds)
    if not k:
        raise ValueError("cross-validation needs at least two images of every class")
    scores = {c: [] for c in candidates}
    oof = {c: np.zeros((len(y), num_classes)) for c in candidates}
    options = {"seed": seed, "class_weights": class_weights, "hidden": mlp_hidden, "dropout": mlp_dropout}
    with single_blas_thread():
        for repeat in range(repeats):
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed + repeat)
            for train, held in splitter.split(np.zeros(len(y)), y):
                logits = _fold_logits(features, targets, train, held, num_classes, candidates, options)
                for candidate, values in logits.items():
                    scores[candidate].append(_score(y[held], values.argmax(1), class_weights is not None))
                    if repeat == 0:
                        oof[candidate][held] = values
    estimates = [CandidateEstimate(c, scores[c], oof[c]) for c in candidates]
    chosen, best, difference = one_standard_error_choice(estimates, k, f"{repeats} x {k}-fold CV, paired by fold")
    return ProbeChoice(estimates, chosen, best, difference, k, repeats, len(y), unit)


def one_standard_error_choice(
    estimates: Sequence[CandidateEstimate], folds: int, basis: str
) -> tuple[CandidateEstimate, CandidateEstimate, PairedDifference]:
    """The simplest estimate whose paired difference to the best is within one corrected standard error.

    Args:
        estimates: The candidates' estimates on the same folds, simplest first.
        folds: Folds of one repeat.
        basis: What the folds were, for the difference's record.

    Returns:
        The chosen estimate, the best one (the simplest of the best on ties), and best minus chosen.
    """
    best = max(estimates, key=lambda e: e.mean)  # the first (simplest) on ties
    for estimate in estimates:
        difference = fold_difference(best.fold_scores, estimate.fold_scores, folds, basis)
        if difference.mean <= difference.std_error:
            return estimate, best, difference
    raise AssertionError("the best candidate is within one standard error of itself")


def _fold_logits(
    features: torch.Tensor,
    targets: torch.Tensor,
    train: np.ndarray,
    held: np.ndarray,
    num_classes: int,
    candidates: Sequence[ProbeCandidate],
    options: dict,
) -> dict[ProbeCandidate, np.ndarray]:
    """Every candidate's logits on the held-out fold, fitted on the training folds."""
    x, y = features.numpy().astype(np.float64), targets.numpy()
    logits: dict[ProbeCandidate, np.ndarray] = {}
    linear = [c for c in candidates if c.strategy == "linear-probe"]
    if linear:
        scaler = GlobalScaler().fit(x[train])
        z_train, z_held = scaler.transform(x[train]), scaler.transform(x[held])
        classifier = logistic_regression(1.0, options["seed"], options["class_weights"] is not None)
        classifier.set_params(warm_start=True)  # each C starts from the previous (weaker-to-stronger) solution
        for candidate in sorted(linear, key=lambda c: -c.value):
            classifier.set_params(C=candidate.value).fit(z_train, y[train])
            weight, bias = full_coefficients(classifier, num_classes, x.shape[1])
            logits[candidate] = z_held @ weight.T + bias
    mlp = [c for c in candidates if c.strategy == "mlp-probe"]
    if mlp:
        train_set = (features[train], targets[train])
        at = mlp_logits_at(train_set, features[held], num_classes, [int(c.value) for c in mlp], **options)
        logits |= {c: at[int(c.value)] for c in mlp}
    return logits


def _score(truth: np.ndarray, predicted: np.ndarray, balanced: bool) -> float:
    """Accuracy, or balanced accuracy (mean recall over the classes present), by scikit-learn."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    return float((balanced_accuracy_score if balanced else accuracy_score)(truth, predicted))


def fit_chosen(
    candidate: ProbeCandidate,
    train: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    *,
    seed: int = 0,
    class_weights: torch.Tensor | None = None,
    mlp_hidden: int = 512,
    mlp_dropout: float = 0.2,
) -> torch.nn.Module:
    """The candidate's head fitted on ``train`` at its chosen setting, applying to raw features."""
    if candidate.strategy == "linear-probe":
        return linear_head_with(
            train[0].numpy(), train[1].numpy(), num_classes, candidate.value, seed, class_weights is not None
        )
    result = fit_mlp_head_for(
        train, num_classes, int(candidate.value), mlp_hidden, mlp_dropout, seed=seed, class_weights=class_weights
    )
    return result.head
