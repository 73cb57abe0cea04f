"""Local output folders: checked before any work, so a run never fails half-way on a folder it cannot write."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tlops.errors import TlopsError

CACHE_DIR_ENV = "TLOPS_CACHE_DIR"


def default_cache_dir() -> Path:
    """The runtime cache dir when ``TLOPS_CACHE_DIR`` is unset: ``~/.cache/tlops``."""
    return Path.home() / ".cache" / "tlops"


def cache_dir_from_environment(environ: Mapping[str, str]) -> Path:
    """The runtime cache dir (weights, features, prepared datasets): ``TLOPS_CACHE_DIR``, else the default.

    Args:
        environ: The environment (``os.environ`` at the edges, a dict in tests).
    """
    value = environ.get(CACHE_DIR_ENV)
    return Path(value) if value else default_cache_dir()


def check_writable_dir(path: Path, what: str = "--output") -> None:
    """Check that ``path`` is, or can be created as, a folder this process can write into; leave nothing behind.

    Missing folders are created to try it and removed again, and a probe file is written and deleted, so the
    answer is the file system's own (read-only mounts, ``/proc``, ``/sys``, permissions, a file in the way).

    Args:
        path: The folder.
        what: How the user named it (``--output``), for the message.

    Raises:
        TlopsError: naming the folder, why it cannot be written, and the fix.
    """
    path = Path(os.path.abspath(path))
    fix = f"pass {what} a folder you can write to"
    if path.exists() and not path.is_dir():
        raise TlopsError(f"{what} {path} is an existing file, not a folder; {fix} (it is created if missing)")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise TlopsError(f"{what} {path} cannot be created: {existing} is a file, not a folder; {fix}")
    created: list[Path] = []
    try:
        for folder in reversed([path, *path.parents][: len(path.relative_to(existing).parts)]):
            folder.mkdir()
            created.append(folder)
        descriptor, probe = tempfile.mkstemp(prefix=".tlops-write-check-", dir=path)
        try:
            os.write(descriptor, b"x")
        finally:
            os.close(descriptor)
            os.unlink(probe)
    except OSError as error:
        raise TlopsError(f"{what} {path} cannot be created or written ({error.strerror or error}); {fix}") from None
    finally:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
