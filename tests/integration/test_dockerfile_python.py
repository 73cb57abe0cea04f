"""What the images run at build time, run here: no container engine on this machine, so the Python the
Dockerfiles execute is checked against the package (a renamed module once broke the image build unnoticed), and
their structure is read: a builder stage and a final stage without build tools, a numeric non-root user, and a
``.dockerignore`` that keeps local state out of the build context but nothing the images copy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from repository import REPO

DOCKER = REPO / "docker"
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
    # Every bundled EfficientNet-Lite, converted, so that a cluster without internet access runs them.
    from tlops.models.names import BUNDLED

    converted = sorted(path.name for path in tmp_path.rglob("*.safetensors"))
    assert [name.split("-")[0] for name in converted] == [f"tf_{name}" for name in sorted(BUNDLED)], converted
