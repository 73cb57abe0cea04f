"""Reading what ``tlops compile`` wrote: the compiled files, and the image of each executor of a pipeline YAML."""

from __future__ import annotations

from pathlib import Path

import yaml


def compiled_files(root: Path) -> list[Path]:
    """The compiled files: the YAMLs and the component docs."""
    return sorted(p.relative_to(root) for d in ("pipelines", "components") for p in (root / d).glob("*.*"))


def executor_images(path: Path) -> dict[str, str]:
    """``{executor: container image}`` of the pipeline YAML at ``path``."""
    spec = next(yaml.safe_load_all(path.read_text()))
    return {
        name: executor["container"]["image"]
        for name, executor in spec["deploymentSpec"]["executors"].items()
        if "container" in executor
    }
