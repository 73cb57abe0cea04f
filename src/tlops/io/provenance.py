"""Which code made a model: the installed tlops version and, from a source checkout, its git commit."""

from __future__ import annotations

import subprocess
from pathlib import Path


def tlops_version() -> str:
    """The installed tlops distribution's version (``unknown`` when it is not installed, only on the path)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tlops")
    except PackageNotFoundError:
        return "unknown"


def git_commit(path: Path | None = None) -> str | None:
    """The commit checked out where ``path`` (default: the tlops package) lives, with ``-dirty`` for local edits.

    ``None`` outside a git checkout (a wheel, a container image) or when git is not installed: images carry the
    commit they were built from in ``TLOPS_GIT_COMMIT`` instead, which the command-line edge reads.
    """
    folder = path or Path(__file__).resolve().parents[1]
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40", "--match=NO-TAGS"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return described.stdout.strip() or None if described.returncode == 0 else None
