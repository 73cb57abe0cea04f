"""Images that follow the code: ``compile_all`` with other images names R/tlops:T and R/tlops-gpu:T in every executor
and changes nothing else; the checked-in files keep the release tag; bad repositories and tags are refused; the
default tag is the version plus the commit when known.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from compiled import compiled_files as _files
from compiled import executor_images as _executor_images
from repository import REPO
from tlops import __version__
from tlops.errors import TlopsError
from tlops.pipeline.compile import PIPELINE_FILE, compile_all
from tlops.pipeline.image import CPU_IMAGE, GPU_IMAGE, Images, default_tag, images

OTHER = Images("registry.example.com:5000/ml-team", f"{__version__}-{'0123456789abcdef' * 2}01234567")
GPU_STEPS = {"extract-shard", "score-backbone", "extract-features", "fine-tune"}


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("default")
    compile_all(root)
    return root


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("other")
    compile_all(root, image_repository=OTHER.repository, image_tag=OTHER.tag)
    return root


def test_every_executor_names_the_chosen_images(other: Path) -> None:
    for path in _files(other):
        if path.suffix == ".yaml":
            assert set(_executor_images(other / path).values()) <= {OTHER.cpu, OTHER.gpu}, path
        assert "ghcr.io/tlops" not in (other / path).read_text(), path
    spec = next(yaml.safe_load_all((other / "pipelines" / PIPELINE_FILE).read_text()))
    by_component = {
        component["executorLabel"]: name.removeprefix("comp-")
        for name, component in spec["components"].items()
        if "executorLabel" in component
    }
    pipeline_images = {
        by_component[name]: image for name, image in _executor_images(other / "pipelines" / PIPELINE_FILE).items()
    }
    assert {step for step, image in pipeline_images.items() if image == OTHER.gpu} == GPU_STEPS
    assert set(pipeline_images.values()) == {OTHER.cpu, OTHER.gpu}
    assert _executor_images(other / "components" / "fine_tune.yaml") == {"exec-fine-tune": OTHER.gpu}
    assert _executor_images(other / "components" / "register.yaml") == {"exec-register": OTHER.cpu}


def test_nothing_else_differs_from_the_default_compile(default: Path, other: Path) -> None:
    assert _files(other) == _files(default)
    for path in _files(other):
        renamed_back = (other / path).read_text().replace(OTHER.gpu, GPU_IMAGE).replace(OTHER.cpu, CPU_IMAGE)
        assert renamed_back == (default / path).read_text(), path


def test_the_checked_in_files_name_the_release_tag() -> None:
    # A file cannot name the commit that contains it: the checked-in YAMLs name <version>, with no commit.
    assert f"ghcr.io/tlops/tlops:{__version__}" == CPU_IMAGE and f"ghcr.io/tlops/tlops-gpu:{__version__}" == GPU_IMAGE
    for path in _files(REPO):
        if path.suffix == ".yaml":
            assert set(_executor_images(REPO / path).values()) <= {CPU_IMAGE, GPU_IMAGE}, path


BAD_TAGS = ["", "has space", "-leading-dash", ".leading-dot", "a" * 129, "x:y", "tag/slash", "ünïcode"]
BAD_REPOSITORIES = ["Ghcr.io/Org", "ghcr.io//org", "https://ghcr.io/org", "ghcr.io/my org", "ghcr.io/org:tag", ""]


@pytest.mark.parametrize("tag", BAD_TAGS)
def test_a_bad_tag_is_refused_before_anything_is_written(tag: str, tmp_path: Path) -> None:
    with pytest.raises(TlopsError, match=r"^--image-tag .* is not a Docker tag: use") as error:
        compile_all(tmp_path / "out", image_tag=tag)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("repository", BAD_REPOSITORIES)
def test_a_bad_repository_is_refused(repository: str) -> None:
    with pytest.raises(TlopsError, match=r"^--image-repository .* is not a Docker repository: give"):
        images(repository, "1.0")


@pytest.mark.parametrize(
    "repository", ["ghcr.io/tlops", "localhost:5000/ml", "registry.example.com/a/b-c/d_e", "docker.io/library", "ml"]
)
def test_good_repositories_and_tags_are_taken(repository: str) -> None:
    chosen = images(repository + "/", "v1.2.3_rc-1.abc")  # a trailing slash is dropped
    assert (
        chosen.cpu == f"{repository}/tlops:v1.2.3_rc-1.abc" and chosen.gpu == f"{repository}/tlops-gpu:v1.2.3_rc-1.abc"
    )


def test_the_default_tag_is_the_version_plus_the_commit_when_known() -> None:
    assert default_tag(None) == default_tag("") == default_tag("  ") == __version__
    assert default_tag("3f2c9e1") == f"{__version__}-3f2c9e1"
    assert default_tag("3f2c9e1-dirty") == f"{__version__}-3f2c9e1-dirty"
    with pytest.raises(TlopsError, match=r"^TLOPS_GIT_COMMIT='a b' does not make a Docker tag .* or pass --image-tag$"):
        default_tag("a b")
