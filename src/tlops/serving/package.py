"""Packaging a trained classifier as the served MLflow model: export, signature, example, and logging.

The registered model is the pyfunc of :mod:`tlops.serving.model` (raw images in, labels and calibrated
probabilities out). The same network is logged beside it as ``tensor-model``, a ``pytorch`` flavour ``pt2``
program taking preprocessed ``(N, 3, S, S)`` floats in 0..1 and returning logits, for users who batch their own
tensors.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlops.serving.model import (
    IMAGE_COLUMN,
    NETWORK_ARTIFACT,
    NETWORK_FILE,
    PREPROCESSING_ARTIFACT,
    PREPROCESSING_FILE,
    ServingConfig,
)
from tlops.serving.packaging import (
    SERVED_MODEL_NAME,
    LoggedModels,
    copy_code,
    output_schema,
    package_dir,
    pinned_requirements,
)

if TYPE_CHECKING:
    from torch import nn

TENSOR_MODEL_NAME = "tensor-model"
MAX_BATCH = 1024
REQUIREMENTS = ("mlflow", "torch", "torchvision", "pillow", "numpy", "pandas")


def export_network(model: nn.Module, input_size: int, path: Path) -> Path:
    """Export the classifier for any batch size (1..1024) with ``torch.export`` and save it as a ``.pt2`` file."""
    import torch

    model = model.eval().to("cpu", memory_format=torch.contiguous_format)
    example = torch.full((2, 3, input_size, input_size), 0.5)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return path


def served_signature(classes: list[str]) -> Any:
    """Input: one column ``image``; output: label, probability, per-class probabilities, top-k, error.

    The input column is typed ``Any``, not ``binary``: MLflow's scoring server base64-decodes a binary column
    itself and answers a request with one invalid or null cell with HTTP 400 for every row. Typed ``Any``, the
    base64 text reaches the model, which decodes each cell and gives a bad one its own ``error``.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), IMAGE_COLUMN, required=False)])
    return ModelSignature(inputs=inputs, outputs=output_schema())


def example_images(size: int = 32) -> Any:
    """A DataFrame of two small PNG images: the input example logged with the model."""
    import pandas as pd
    from PIL import Image

    images = []
    for value in (64, 192):
        buffer = io.BytesIO()
        Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return pd.DataFrame({IMAGE_COLUMN: images})


def served_requirements() -> list[str]:
    """What the served model imports: torch, torchvision, Pillow, numpy, pandas and MLflow (pinned as installed)."""
    return pinned_requirements(REQUIREMENTS)


def log_served_model(
    model: nn.Module,
    config: ServingConfig,
    metadata: dict[str, Any],
    *,
    tensor_model: bool = True,
) -> LoggedModels:
    """Log the served pyfunc (and, unless told not to, the tensor model) into the active MLflow run.

    Args:
        model: The trained classifier (normalization inside, logits out).
        config: Classes, preprocessing and temperature of the served model.
        metadata: Stored in both models' ``MLmodel`` (classes, backbone, lineage).
        tensor_model: Also log the ``pt2`` tensor model as ``tensor-model``.

    Returns:
        The ``ModelInfo`` of the served model and of the tensor model (``None`` when not logged).
    """
    import mlflow
    import mlflow.pytorch

    input_size = int(config.data_config["input_size"])
    with tempfile.TemporaryDirectory(prefix="tlops-serving-") as scratch:
        code = copy_code(Path(scratch))
        network = export_network(model, input_size, Path(scratch) / NETWORK_FILE)
        preprocessing = config.write(Path(scratch) / PREPROCESSING_FILE)
        info = mlflow.pyfunc.log_model(
            name=SERVED_MODEL_NAME,
            python_model=str(package_dir() / "serving" / "served_model.py"),
            artifacts={NETWORK_ARTIFACT: str(network), PREPROCESSING_ARTIFACT: str(preprocessing)},
            code_paths=[str(code)],
            signature=served_signature(config.classes),
            input_example=example_images(),
            pip_requirements=served_requirements(),
            metadata=metadata,
        )
    tensors = None
    if tensor_model:
        from mlflow.models import infer_signature

        example = np.full((2, 3, input_size, input_size), 0.5, dtype=np.float32)
        tensors = mlflow.pytorch.log_model(
            model,
            name=TENSOR_MODEL_NAME,
            signature=infer_signature(example, np.zeros((2, len(config.classes)), dtype=np.float32)),
            input_example=example,
            serialization_format="pt2",
            pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
            metadata=metadata,
        )
    return LoggedModels(info, tensors)
