"""Compiling the pipeline and each component to the YAML files checked in under pipelines/ and components/.

The components name their images when their module is imported (:mod:`tlops.pipeline.image`), so another image
repository or tag is written by rewriting the compiled IR: every string that is one of the default images (each
executor's ``container.image``, and any parameter default or constant that names one) becomes the image of the
chosen repository and tag, and nothing else changes.

The checked-in YAMLs name the release tag ``<version>``: a file cannot name the commit that contains it. The build
that makes images for a commit compiles with ``TLOPS_GIT_COMMIT`` set (or ``--image-tag``), so that its YAMLs name
those images (docker/README.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlops.pipeline.image import Images, images

PIPELINE_FILE = "transfer_learning.yaml"


def compile_pipeline(path: Path, image_repository: str | None = None, image_tag: str | None = None) -> Path:
    """Compile the transfer-learning pipeline to one YAML package at ``path``.

    Args:
        path: The YAML file to write.
        image_repository: Where the images are (default :data:`tlops.pipeline.image.IMAGE_REPOSITORY`).
        image_tag: Their tag (default: the package version).

    Raises:
        TlopsError: when the repository or tag is not valid for Docker.
    """
    from tlops.pipeline.pipeline import transfer_learning_pipeline

    return _compile(transfer_learning_pipeline, path, images(image_repository, image_tag), stable=True)


def _compile(component: Any, path: Path, chosen: Images, stable: bool = True) -> Path:
    """Compile a pipeline or component to ``path`` with its images renamed to ``chosen`` (header made stable)."""
    from kfp import compiler

    compiler.Compiler().compile(component, str(path))
    text = path.read_text()
    if stable:
        text = stable_header(text)
    path.write_text(with_images(text, chosen.renames()))
    return path


def _renamed(value: Any, renames: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: _renamed(item, renames) for key, item in value.items()}
    if isinstance(value, list):
        return [_renamed(item, renames) for item in value]
    return renames.get(value, value) if isinstance(value, str) else value


def with_images(text: str, renames: dict[str, str]) -> str:
    """A compiled YAML package with each image ``renames`` names replaced by its new name.

    The comment header is kept line by line (an image there is a parameter default, replaced word for word); the
    documents are loaded, every string equal to an old image is replaced, and they are written back the way kfp
    writes them (``yaml.dump_all`` with sorted keys), so nothing but the images differs.

    Raises:
        RuntimeError: when an executor runs an image that ``renames`` does not know (a component decorated with
            an image outside :mod:`tlops.pipeline.image`).
    """
    import re

    import yaml

    targets = set(renames.values())
    renames = {old: new for old, new in renames.items() if old != new}
    if not renames:
        return text
    lines = text.split("\n")
    header_end = next((index for index, line in enumerate(lines) if not line.startswith("#")), len(lines))
    word = re.compile("|".join(rf"(?<![\w./:-]){re.escape(old)}(?![\w.:/-])" for old in renames))
    header = [word.sub(lambda match: renames[match.group(0)], line) for line in lines[:header_end]]
    documents = [_renamed(document, renames) for document in yaml.safe_load_all("\n".join(lines[header_end:]))]
    for name, executor in documents[0].get("deploymentSpec", {}).get("executors", {}).items():
        image = executor.get("container", {}).get("image")
        if image is not None and image not in targets:
            raise RuntimeError(f"{name} runs {image}, which is not an image of tlops.pipeline.image")
    body = yaml.dump_all(documents, sort_keys=True)
    return "\n".join(header) + ("\n" if header else "") + body


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


def compile_all(root: Path, image_repository: str | None = None, image_tag: str | None = None) -> list[Path]:
    """Write ``pipelines/transfer_learning.yaml``, ``components/<step>.yaml`` and their docs under ``root``.

    Each component also gets ``components/<step>.md`` and the folder a ``components/README.md`` index
    (:mod:`tlops.pipeline.component_docs`), generated from the component and the compiled files.

    Args:
        root: The repository root (or any folder).
        image_repository: Where the images are (default :data:`tlops.pipeline.image.IMAGE_REPOSITORY`).
        image_tag: Their tag (default: the package version; the command line adds ``-$TLOPS_GIT_COMMIT``).

    Returns:
        The written files.

    Raises:
        TlopsError: when the repository or tag is not valid for Docker (before anything is written).
    """
    from tlops.pipeline.component_docs import write_component_docs
    from tlops.pipeline.components import ALL_COMPONENTS
    from tlops.pipeline.launcher import launch_trainjob
    from tlops.pipeline.pipeline import transfer_learning_pipeline

    chosen = images(image_repository, image_tag)
    (root / "pipelines").mkdir(parents=True, exist_ok=True)
    (root / "components").mkdir(parents=True, exist_ok=True)
    pipeline = _compile(transfer_learning_pipeline, root / "pipelines" / PIPELINE_FILE, chosen, stable=True)
    compiled = {}
    for component in (*ALL_COMPONENTS, launch_trainjob):
        path = root / "components" / f"{component.name.replace('-', '_')}.yaml"
        compiled[component] = _compile(component, path, chosen)
    return [pipeline, *compiled.values(), *write_component_docs(root / "components", compiled, pipeline)]
