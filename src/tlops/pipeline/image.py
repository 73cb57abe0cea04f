"""The container images the components run on: ``<repository>/tlops`` and ``<repository>/tlops-gpu``, one tag.

The components are decorated with :data:`CPU_IMAGE` and :data:`GPU_IMAGE` (the default repository, the release tag
``<version>``, never ``:latest``) when their module is imported; :func:`tlops.pipeline.compile.compile_all` rewrites
those names in the compiled YAML to the images of another repository or tag (:class:`Images`).

Why the default tag is the release tag: a checked-in YAML cannot name the commit that contains it, so a plain
``tlops compile`` in a checkout writes ``<version>``; the build that makes images for a commit sets
``TLOPS_GIT_COMMIT`` (or passes ``--image-tag``) to compile YAMLs that name those images,
``<version>-<commit>`` (:func:`default_tag`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tlops import __version__
from tlops.errors import TlopsError

IMAGE_REPOSITORY = "ghcr.io/tlops"
CPU_IMAGE_NAME = "tlops"
GPU_IMAGE_NAME = "tlops-gpu"
COMMIT_ENV = "TLOPS_GIT_COMMIT"  # set by the image build (docker/Dockerfile.*), read at the command-line edge
CPU_IMAGE = f"{IMAGE_REPOSITORY}/{CPU_IMAGE_NAME}:{__version__}"
GPU_IMAGE = f"{IMAGE_REPOSITORY}/{GPU_IMAGE_NAME}:{__version__}"

# The Docker reference grammar (github.com/distribution/reference): a tag, and a repository made of an optional
# registry host (domain or IPv4, optional port) and lowercase path components.
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"(?:{_HOST}/)?{_PATH}(?:/{_PATH})*")
MAX_NAME = 255  # characters of a repository plus image name, without the tag


def default_tag(commit: str | None = None) -> str:
    """The package version, plus ``-<commit>`` when the commit the images were built from is known.

    Args:
        commit: The value of ``TLOPS_GIT_COMMIT`` (the command line reads it); ``None`` or ``""`` when unset.

    Raises:
        TlopsError: when the commit does not make a valid Docker tag.
    """
    commit = (commit or "").strip()
    if not commit:
        return __version__
    tag = f"{__version__}-{commit}"
    if not TAG.fullmatch(tag):
        raise TlopsError(
            f"{COMMIT_ENV}={commit!r} does not make a Docker tag ({tag!r}): set it to the commit hash "
            "(git rev-parse HEAD) or pass --image-tag"
        )
    return tag


@dataclass(frozen=True)
class Images:
    """The two images of one repository and tag."""

    repository: str = IMAGE_REPOSITORY
    tag: str = __version__

    @property
    def cpu(self) -> str:
        """The CPU image (prepare-data, score-baseline, select-backbone, evaluate, register, launch-trainjob)."""
        return f"{self.repository}/{CPU_IMAGE_NAME}:{self.tag}"

    @property
    def gpu(self) -> str:
        """The GPU image (score-backbone, extract-features, fine-tune, the nodes of a TrainJob)."""
        return f"{self.repository}/{GPU_IMAGE_NAME}:{self.tag}"

    def renames(self) -> dict[str, str]:
        """Each image the components are decorated with -> this repository's and tag's image."""
        return {CPU_IMAGE: self.cpu, GPU_IMAGE: self.gpu}


def images(repository: str | None = None, tag: str | None = None) -> Images:
    """The checked images of ``repository`` (default :data:`IMAGE_REPOSITORY`) and ``tag`` (default the version).

    Raises:
        TlopsError: when the repository or the tag breaks Docker's reference grammar.
    """
    repository = IMAGE_REPOSITORY if repository is None else repository.rstrip("/")
    tag = __version__ if tag is None else tag
    if not REPOSITORY.fullmatch(repository) or len(f"{repository}/{GPU_IMAGE_NAME}") > MAX_NAME:
        raise TlopsError(
            f"--image-repository {repository!r} is not a Docker repository: give a registry and lowercase path "
            "such as ghcr.io/my-org or registry.local:5000/ml"
        )
    if not TAG.fullmatch(tag):
        raise TlopsError(
            f"--image-tag {tag!r} is not a Docker tag: use at most 128 letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-'"
        )
    return Images(repository, tag)
