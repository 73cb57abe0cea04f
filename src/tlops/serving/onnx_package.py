"""Packaging an exported (ONNX, fp32 or int8) image classifier as an MLflow pyfunc that serves image bytes.

Same signature, input example and output columns as the torch pyfunc of :mod:`tlops.serving.package`; the code
file is ``served_onnx_model.py`` and the network an onnxruntime graph.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from tlops.serving.model import NETWORK_ARTIFACT, PREPROCESSING_ARTIFACT, PREPROCESSING_FILE, ServingConfig
from tlops.serving.onnx_model import ONNX_FILE
from tlops.serving.package import example_images, served_signature
from tlops.serving.packaging import copy_code, package_dir, pinned_requirements

REQUIREMENTS = ("mlflow", "onnxruntime", "torch", "torchvision", "pillow", "numpy", "pandas")


def log_onnx_model(network: Path, config: ServingConfig, name: str, metadata: dict[str, Any]) -> Any:
    """Log the ONNX pyfunc into the active MLflow run under ``name``.

    Args:
        network: The ``.onnx`` file (fp32 or int8).
        config: Classes, preprocessing and temperature (those of the torch model it was exported from).
        name: The logged model's name in the run (``model-int8``).
        metadata: Stored in its ``MLmodel`` (classes, backbone, export format, source version).

    Returns:
        MLflow's ``ModelInfo``.
    """
    import mlflow

    with tempfile.TemporaryDirectory(prefix="tlops-onnx-") as scratch:
        code = copy_code(Path(scratch))
        graph = Path(shutil.copyfile(network, Path(scratch) / ONNX_FILE))
        preprocessing = config.write(Path(scratch) / PREPROCESSING_FILE)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(package_dir() / "serving" / "served_onnx_model.py"),
            artifacts={NETWORK_ARTIFACT: str(graph), PREPROCESSING_ARTIFACT: str(preprocessing)},
            code_paths=[str(code)],
            signature=served_signature(config.classes),
            input_example=example_images(),
            pip_requirements=pinned_requirements(REQUIREMENTS),
            metadata=metadata,
        )
