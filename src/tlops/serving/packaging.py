"""What logging any served classifier shares: the output schema, pinned requirements, the code copy, the result.

Used by :mod:`tlops.serving.package` (images) and :mod:`tlops.serving.text_package` (texts).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

SERVED_MODEL_NAME = "model"


class LoggedModels(NamedTuple):
    """What a ``log_served_*`` function logged: MLflow ``ModelInfo`` objects."""

    served: Any
    tensors: Any | None


def output_schema() -> Any:
    """The served output: label, probability, per-class probabilities, top-k and error, each nullable."""
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, Map, Object, Property, Schema

    top = Object([Property("label", DataType.string), Property("probability", DataType.double)])
    return Schema(
        [
            ColSpec(DataType.string, "label", required=False),
            ColSpec(DataType.double, "probability", required=False),
            ColSpec(Map(DataType.double), "probabilities", required=False),
            ColSpec(Array(top), "top_k", required=False),
            ColSpec(DataType.string, "error", required=False),
        ]
    )


def pinned_requirements(names: Iterable[str]) -> list[str]:
    """``name==version`` of each distribution, its version as installed here (what the model was tested with)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in names]


def package_dir() -> Path:
    """The folder of the ``tlops`` package (its ``serving/served_*.py`` are the models' code files)."""
    import tlops

    return Path(tlops.__file__).parent


def copy_code(scratch: Path) -> Path:
    """A copy of the ``tlops`` package in ``scratch`` for ``code_paths``: the model loads without tlops installed."""
    return Path(shutil.copytree(package_dir(), scratch / "tlops", ignore=shutil.ignore_patterns("__pycache__")))
