"""Reading evaluate's predictions back, for the tests that recompute its metrics from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from tlops.errors import TlopsError
from tlops.steps.outputs import PREDICTIONS_FILE


def read_predictions(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities and targets that ``tlops.steps.outputs.write_predictions`` wrote (evaluate's output)."""
    path = Path(folder) / PREDICTIONS_FILE
    if not path.is_file():
        raise TlopsError(f"{folder} is not an evaluate output (no {PREDICTIONS_FILE}): run tlops evaluate first")
    tensors = load_file(str(path))
    return tensors["probabilities"].numpy(), tensors["targets"].numpy()
