"""Compiling the pipeline and each component to the YAML files checked in under pipelines/ and components/."""

from __future__ import annotations

from pathlib import Path

PIPELINE_FILE = "transfer_learning.yaml"


def compile_all(root: Path) -> list[Path]:
    """Write ``pipelines/transfer_learning.yaml`` and ``components/<step>.yaml`` under ``root``.

    Returns:
        The written files.
    """
    from kfp import compiler

    from tlops.pipeline.components import ALL_COMPONENTS
    from tlops.pipeline.pipeline import transfer_learning_pipeline

    written = []
    (root / "pipelines").mkdir(parents=True, exist_ok=True)
    (root / "components").mkdir(parents=True, exist_ok=True)
    pipeline_path = root / "pipelines" / PIPELINE_FILE
    compiler.Compiler().compile(transfer_learning_pipeline, str(pipeline_path))
    written.append(pipeline_path)
    for component in ALL_COMPONENTS:
        path = root / "components" / f"{component.name.replace('-', '_')}.yaml"
        compiler.Compiler().compile(component, str(path))
        written.append(path)
    return written
