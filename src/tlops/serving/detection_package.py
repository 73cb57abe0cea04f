"""Packaging a trained detector as the served MLflow model: artifacts, signature, params, example, and logging.

The served model is the pyfunc of :mod:`tlops.serving.detection_model` (raw images in, boxes, class names and
scores out), loaded from code with the detector saved as safetensors weights and a JSON config (no pickle).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.models.detector_checkpoint import DetectorConfig, save_detector
from tlops.serving.detection_model import (
    DETECTOR_ARTIFACT,
    DETECTOR_DIR,
    MAX_DETECTIONS,
    SCORE_THRESHOLD,
)
from tlops.serving.model import IMAGE_COLUMN
from tlops.serving.package import example_images
from tlops.serving.packaging import SERVED_MODEL_NAME, LoggedModels, copy_code, package_dir, pinned_requirements

if TYPE_CHECKING:
    from torch import nn

REQUIREMENTS = ("mlflow", "torch", "torchvision", "timm", "safetensors", "pillow", "numpy", "pandas")


def served_detection_signature() -> Any:
    """Input: one column ``image`` (typed ``Any``, as the image classifier's); output: boxes, labels, scores, error.

    Params: ``score_threshold`` (double, 0.3) and ``max_detections`` (long, 100).
    """
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import AnyType, Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec(AnyType(), IMAGE_COLUMN, required=False)])
    outputs = Schema(
        [
            ColSpec(Array(Array(DataType.double)), "boxes", required=False),
            ColSpec(Array(DataType.string), "labels", required=False),
            ColSpec(Array(DataType.double), "scores", required=False),
            ColSpec(DataType.string, "error", required=False),
        ]
    )
    params = ParamSchema(
        [
            ParamSpec("score_threshold", DataType.double, SCORE_THRESHOLD),
            ParamSpec("max_detections", DataType.long, MAX_DETECTIONS),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def served_detection_requirements() -> list[str]:
    """What the served detector imports, pinned as installed."""
    return pinned_requirements(REQUIREMENTS)


def log_served_detection_model(model: nn.Module, config: DetectorConfig, metadata: dict[str, Any]) -> LoggedModels:
    """Log the served detector pyfunc into the active MLflow run.

    Args:
        model: The trained detector (:func:`~tlops.models.detector.build_detector`).
        config: Its architecture, backbone, classes, image size and normalisation.
        metadata: Stored in the model's ``MLmodel`` (classes, backbone, lineage).

    Returns:
        The ``ModelInfo`` of the served model (``tensors`` is ``None``: no tensor model is logged for detection).
    """
    import mlflow

    with tempfile.TemporaryDirectory(prefix="tlops-detection-serving-") as scratch:
        detector = save_detector(model, Path(scratch) / DETECTOR_DIR, config)
        info = mlflow.pyfunc.log_model(
            name=SERVED_MODEL_NAME,
            python_model=str(package_dir() / "serving" / "served_detection_model.py"),
            artifacts={DETECTOR_ARTIFACT: str(detector)},
            code_paths=[str(copy_code(Path(scratch)))],
            signature=served_detection_signature(),
            input_example=example_images(64),
            pip_requirements=served_detection_requirements(),
            metadata=metadata,
        )
    return LoggedModels(info, None)
