"""Every component YAML loads alone: each ``components/<name>.md`` example loads its YAML with
``kfp.components.load_component_from_file`` into a pipeline of its own, which compiles; every YAML has its page and
the index lists them.

Each component run alone by kfp.local is in tests/integration/test_components.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from component_pages import example as _example
from component_pages import load_example as _load_example
from repository import COMPONENTS

YAMLS = sorted(COMPONENTS.glob("*.yaml"))


# --- 1: each YAML in a pipeline of its own, compiled --------------------------------------------------------------


@pytest.mark.parametrize("path", YAMLS, ids=lambda path: path.stem)
def test_each_component_loads_into_a_pipeline_of_its_own_that_compiles(path: Path, tmp_path: Path) -> None:
    from kfp import components

    loaded = components.load_component_from_file(str(path))
    spec = next(yaml.safe_load_all(path.read_text()))
    artifacts = spec["root"].get("inputDefinitions", {}).get("artifacts", {})
    code = _example(path.stem)
    assert f'components.load_component_from_file("components/{path.name}")' in code
    (tmp_path / "components").symlink_to(COMPONENTS)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        _load_example(path.stem, tmp_path)
    compiled = next(yaml.safe_load_all((tmp_path / f"with_{path.stem}.yaml").read_text()))
    executors = compiled["deploymentSpec"]["executors"]
    importers = [executor["importer"] for executor in executors.values() if "importer" in executor]
    containers = [executor["container"] for executor in executors.values() if "container" in executor]
    # The component runs as its YAML says (same image, command and code); each input artifact is imported.
    (own,) = spec["deploymentSpec"]["executors"].values()
    assert containers == [own["container"]]
    imported = sorted(importer["typeSchema"]["schemaTitle"] for importer in importers)
    expected = sorted(artifact["artifactType"]["schemaTitle"] for artifact in artifacts.values())
    if any(port.type == "PipelineTaskFinalStatus" for port in loaded.component_spec.inputs.values()):
        expected = sorted([*expected, "system.Dataset"])  # the exit handler guards an importer
    assert imported == expected


def test_every_component_yaml_has_its_page_and_the_index_lists_them() -> None:
    index = (COMPONENTS / "README.md").read_text()
    for path in YAMLS:
        page = (COMPONENTS / f"{path.stem}.md").read_text()
        assert f"({path.stem}.md)" in index and f"({path.name})" in index
        assert "## Inputs" in page and "## Outputs" in page and "## In the transfer-learning pipeline" in page
        image = next(yaml.safe_load_all(path.read_text()))["deploymentSpec"]["executors"]
        assert f"`{next(iter(image.values()))['container']['image']}`" in page
