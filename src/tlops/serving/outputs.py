"""The answer rows every served classifier gives: label, calibrated probabilities, top-k, or the row's error.

Shared by the image pyfunc (:mod:`tlops.serving.model`) and the text pyfunc (:mod:`tlops.serving.text_model`),
so that both answer in the same columns, with the same probabilities for the same logits and temperature.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

OUTPUT_COLUMNS = ("label", "probability", "probabilities", "top_k", "error")


def calibrated(logits: Any, temperature: float) -> np.ndarray:
    """Class probabilities ``softmax(logits / temperature)`` of ``(N, classes)`` logits, computed in float64."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def answer_row(probabilities: np.ndarray, classes: Sequence[str], top_k: int) -> dict[str, Any]:
    """The answer for one row's class probabilities: the most probable label and the ``top_k`` best classes."""
    best = np.argsort(-probabilities, kind="stable")[: min(top_k, len(classes))]
    return {
        "label": classes[best[0]],
        "probability": float(probabilities[best[0]]),
        "probabilities": {name: float(p) for name, p in zip(classes, probabilities, strict=True)},
        "top_k": [{"label": classes[c], "probability": float(probabilities[c])} for c in best],
        "error": None,
    }


def error_row(error: Exception | str) -> dict[str, Any]:
    """The answer for a row that could not be classified: only ``error`` is set."""
    return {"label": None, "probability": None, "probabilities": None, "top_k": None, "error": str(error)}


def output_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as the served DataFrame (dtype object: an empty cell stays ``None``, JSON null, never NaN)."""
    return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS), dtype=object)
