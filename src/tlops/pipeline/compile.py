"""Compiling the pipeline and each component to the YAML files checked in under pipelines/ and components/."""

from __future__ import annotations

from pathlib import Path

PIPELINE_FILE = "transfer_learning.yaml"


def compile_pipeline(path: Path) -> Path:
    """Compile the transfer-learning pipeline to one YAML package at ``path``."""
    from kfp import compiler

    from tlops.pipeline.pipeline import transfer_learning_pipeline

    compiler.Compiler().compile(transfer_learning_pipeline, str(path))
    return path


def compile_all(root: Path) -> list[Path]:
    """Write ``pipelines/transfer_learning.yaml`` and ``components/<step>.yaml`` under ``root``.

    Returns:
        The written files.
    """
    from kfp import compiler

    from tlops.pipeline.components import ALL_COMPONENTS

    (root / "pipelines").mkdir(parents=True, exist_ok=True)
    (root / "components").mkdir(parents=True, exist_ok=True)
    written = [compile_pipeline(root / "pipelines" / PIPELINE_FILE)]
    for component in ALL_COMPONENTS:
        path = root / "components" / f"{component.name.replace('-', '_')}.yaml"
        compiler.Compiler().compile(component, str(path))
        written.append(path)
    return written
