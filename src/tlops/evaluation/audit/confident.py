"""Likely label errors by confident learning (Northcutt, Jiang and Chuang, JAIR 70, 2021), from the paper.

Given out-of-fold probabilities ``p`` and given labels ``y``: the per-class threshold ``t_j`` is the mean of
``p[:, j]`` over the examples labelled ``j``; the confident joint ``C[i, j]`` counts the examples labelled ``i``
whose most probable class among those at or above their threshold is ``j``; it is calibrated so that row ``i``
sums to the number of examples labelled ``i``. *Prune by noise rate* then flags, for each off-diagonal ``(i, j)``,
the ``round(C[i, j])`` examples labelled ``i`` with the largest margin ``p_j - p_i``; *confident joint* flags the
examples counted off the diagonal. An example whose most probable class is its given label is never flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tlops.evaluation.audit import LABEL_ISSUE_METHODS as METHODS


@dataclass
class LabelIssues:
    """Examples whose given label is likely wrong.

    Attributes:
        indices: The flagged examples, lowest self-confidence first.
        self_confidence: Per example, the probability of its given label.
        suggested: Per example, its most probable class.
        thresholds: Per class, ``t_j``.
        confident_joint: The calibrated confident joint ``(K, K)``, given label by true label.
    """

    indices: np.ndarray
    self_confidence: np.ndarray
    suggested: np.ndarray
    thresholds: np.ndarray
    confident_joint: np.ndarray


def class_thresholds(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``t_j``: mean predicted probability of class ``j`` over the examples labelled ``j`` (inf for no example)."""
    num_classes = probabilities.shape[1]
    thresholds = np.full(num_classes, np.inf)
    for j in range(num_classes):
        rows = labels == j
        if rows.any():
            thresholds[j] = probabilities[rows, j].mean()
    return thresholds


def confident_joint(
    probabilities: np.ndarray, labels: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The raw confident joint ``(K, K)`` and each example's confident class (-1 where none is confident)."""
    num_classes = probabilities.shape[1]
    above = probabilities >= thresholds[None, :]
    masked = np.where(above, probabilities, -np.inf)
    confident = np.where(above.any(1), masked.argmax(1), -1)
    joint = np.zeros((num_classes, num_classes), dtype=np.int64)
    counted = confident >= 0
    np.add.at(joint, (labels[counted], confident[counted]), 1)
    return joint, confident


def calibrate(joint: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The joint with each row scaled to the number of examples with that given label (empty rows stay 0)."""
    counts = np.bincount(labels, minlength=joint.shape[0]).astype(np.float64)
    sums = joint.sum(1, keepdims=True).astype(np.float64)
    return np.divide(joint * counts[:, None], sums, out=np.zeros(joint.shape), where=sums > 0)


def find_label_issues(
    probabilities: np.ndarray, labels: np.ndarray, method: str = "prune_by_noise_rate"
) -> LabelIssues:
    """Flag likely label errors and rank them by self-confidence (lowest first).

    Args:
        probabilities: ``(N, K)`` out-of-fold predicted probabilities.
        labels: ``(N,)`` given class ids.
        method: ``prune_by_noise_rate`` or ``confident_joint`` (see the module docstring).
    """
    assert method in METHODS, method
    labels = np.asarray(labels, dtype=np.int64)
    thresholds = class_thresholds(probabilities, labels)
    joint, confident = confident_joint(probabilities, labels, thresholds)
    calibrated = calibrate(joint, labels)
    flagged = np.zeros(len(labels), dtype=bool)
    if method == "confident_joint":
        flagged = (confident >= 0) & (confident != labels)
    else:
        given = probabilities[np.arange(len(labels)), labels]
        for i, j in zip(*np.nonzero(calibrated), strict=True):
            count = int(np.rint(calibrated[i, j]))
            if i == j or count == 0:
                continue
            rows = np.flatnonzero(labels == i)
            margin = probabilities[rows, j] - given[rows]
            flagged[rows[np.argsort(-margin, kind="stable")[:count]]] = True
    suggested = probabilities.argmax(1)
    flagged &= suggested != labels
    self_confidence = probabilities[np.arange(len(labels)), labels]
    indices = np.flatnonzero(flagged)
    indices = indices[np.argsort(self_confidence[indices], kind="stable")]
    return LabelIssues(indices, self_confidence, suggested, thresholds, calibrated)
