"""Checks of command-line options shared by several commands: one-line errors before anything runs."""

from __future__ import annotations

import os

from tlops.data.archives import ArchiveLimits
from tlops.errors import TlopsError
from tlops.steps.config import DEFAULT_BACKBONE


def backbone_list(text: str) -> list[str]:
    """The names of a comma-separated ``--backbones`` option, each checked (no torch import)."""
    from tlops.models.names import check_backbone_name

    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise TlopsError(f"--backbones is empty; name at least one, e.g. {DEFAULT_BACKBONE}")
    for name in names:
        check_backbone_name(name)
    return names


def archive_limits() -> ArchiveLimits:
    """Archive expansion limits, from ``TLOPS_ARCHIVE_MAX_BYTES`` / ``_MAX_RATIO`` / ``_MAX_MEMBERS`` when set."""
    return ArchiveLimits.from_environment(os.environ)
