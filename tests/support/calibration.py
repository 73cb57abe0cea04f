"""Calibration written out by hand, to check tlops's metrics against."""

from __future__ import annotations

import numpy as np


def reference_ece(probabilities: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    """ECE written out here: bin k holds the confidences in (k/bins, (k+1)/bins], weighted by its share."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == targets
    which = np.maximum(np.ceil(confidence * bins).astype(int) - 1, 0)
    return float(
        sum(
            (which == k).mean() * abs(correct[which == k].mean() - confidence[which == k].mean())
            for k in range(bins)
            if (which == k).any()
        )
    )
