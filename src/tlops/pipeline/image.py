"""The container images the components run on, tagged with the package version (never ``:latest``)."""

from tlops import __version__

IMAGE_REPOSITORY = "ghcr.io/tlops"
CPU_IMAGE = f"{IMAGE_REPOSITORY}/tlops:{__version__}"
GPU_IMAGE = f"{IMAGE_REPOSITORY}/tlops-gpu:{__version__}"
