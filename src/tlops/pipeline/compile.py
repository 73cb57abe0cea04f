"""Compiling the pipeline and each component to the YAML files checked in under pipelines/ and components/."""

from __future__ import annotations

from pathlib import Path

PIPELINE_FILE = "transfer_learning.yaml"


def compile_pipeline(path: Path) -> Path:
    """Compile the transfer-learning pipeline to one YAML package at ``path``."""
    from kfp import compiler

    from tlops.pipeline.pipeline import transfer_learning_pipeline

    compiler.Compiler().compile(transfer_learning_pipeline, str(path))
    path.write_text(stable_header(path.read_text()))
    return path


def _sorted_keys(value):
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


def stable_header(text: str) -> str:
    """Rewrite the comment header's dict and list defaults with sorted keys.

    kfp prints them in the order a protobuf Struct hands them back, which changes with ``PYTHONHASHSEED``: without
    this the checked-in YAML would differ from a fresh compile on most runs.
    """
    import re

    import yaml

    defaults = next(yaml.safe_load_all(text))["root"]["inputDefinitions"]["parameters"]
    header = re.compile(r"^(#    (\w+): \w+ \[Default: ).*\]$")

    def rewrite(line: str) -> str:
        match = header.match(line)
        if not match or match.group(2) not in defaults:
            return line
        default = defaults[match.group(2)].get("defaultValue")
        return f"{match.group(1)}{_sorted_keys(default)}]" if isinstance(default, dict | list) else line

    return "\n".join(rewrite(line) for line in text.split("\n"))


def compile_all(root: Path) -> list[Path]:
    """Write ``pipelines/transfer_learning.yaml`` and ``components/<step>.yaml`` under ``root``.

    Returns:
        The written files.
    """
    from kfp import compiler

    from tlops.pipeline.components import ALL_COMPONENTS
    from tlops.pipeline.launcher import launch_trainjob

    (root / "pipelines").mkdir(parents=True, exist_ok=True)
    (root / "components").mkdir(parents=True, exist_ok=True)
    written = [compile_pipeline(root / "pipelines" / PIPELINE_FILE)]
    for component in (*ALL_COMPONENTS, launch_trainjob):
        path = root / "components" / f"{component.name.replace('-', '_')}.yaml"
        compiler.Compiler().compile(component, str(path))
        written.append(path)
    return written
