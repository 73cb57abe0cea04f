"""Local output folders: checked before any work, so a run never fails half-way on a folder it cannot write."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tlops.errors import TlopsError

CACHE_DIR_VARIABLE = "TLOPS_CACHE_DIR"


def default_cache_dir() -> Path:
    """The runtime cache dir when ``TLOPS_CACHE_DIR`` is unset: ``~/.cache/tlops``."""
    return Path.home() / ".cache" / "tlops"


def cache_dir_from_environment(environ: Mapping[str, str]) -> Path:
    """The runtime cache dir (weights, features, prepared datasets): ``TLOPS_CACHE_DIR``, else the default.

    Args:
        environ: The environment (``os.environ`` at the edges, a dict in tests).
    """
    value = environ.get(CACHE_DIR_VARIABLE, "").strip()
    return Path(value).expanduser() if value else default_cache_dir()


def check_writable_dir(path: Path, what: str = "--output", fix: str | None = None) -> None:
    """Check that ``path`` is, or can be created as, a folder this process can write into; leave nothing behind.

    A probe file is written and deleted, so the answer is the file system's own (read-only mounts, ``/proc``,
    ``/sys``, permissions, a file in the way). For a missing folder, the folders still missing are created inside
    a uniquely named scratch folder of the nearest existing one, and removed with it: the check never creates,
    and so never removes, a folder that another process (another rank of a distributed run, checking the same
    ``--output`` at once) may be creating or using.

    Args:
        path: The folder.
        what: How the user named it (``--output``), for the message.
        fix: What the user should do instead (default: pass ``what`` a folder you can write to).

    Raises:
        TlopsError: naming the folder, why it cannot be written, and the fix.
    """
    path = Path(os.path.abspath(path))
    fix = fix or f"pass {what} a folder you can write to"
    if path.exists() and not path.is_dir():
        raise TlopsError(f"{what} {path} is an existing file, not a folder; {fix} (it is created if missing)")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise TlopsError(f"{what} {path} cannot be created: {existing} is a file, not a folder; {fix}")
    missing = path.relative_to(existing).parts
    scratch: Path | None = None
    try:
        folder = existing
        if missing:
            scratch = Path(tempfile.mkdtemp(prefix=".tlops-write-check-", dir=existing))
            folder = scratch.joinpath(*missing)
            folder.mkdir(parents=True)  # the same names, so a name the file system refuses is caught
        descriptor, probe = tempfile.mkstemp(prefix=".tlops-write-check-", dir=folder)
        try:
            os.write(descriptor, b"x")
        finally:
            os.close(descriptor)
            os.unlink(probe)
    except OSError as error:
        raise TlopsError(f"{what} {path} cannot be created or written ({error.strerror or error}); {fix}") from None
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def check_cache_dir(environ: Mapping[str, str]) -> Path:
    """The cache folder (``TLOPS_CACHE_DIR``, else ``~/.cache/tlops``), checked to be a folder this process can write.

    Called by the edges before any step runs, so that a cache pointing at a file or a read-only place fails in
    one line at once rather than in a traceback when a step first writes there.

    Args:
        environ: The environment (``os.environ`` at the edges, a dict in tests).

    Raises:
        TlopsError: naming ``TLOPS_CACHE_DIR`` (or the default folder) and the fix.
    """
    path = cache_dir_from_environment(environ)
    if environ.get(CACHE_DIR_VARIABLE, "").strip():
        check_writable_dir(
            path, CACHE_DIR_VARIABLE, f"set {CACHE_DIR_VARIABLE} to a folder you can write to (or unset it)"
        )
    else:
        check_writable_dir(
            path,
            f"the cache folder ({CACHE_DIR_VARIABLE} is unset, so the default)",
            f"set {CACHE_DIR_VARIABLE} to a folder you can write to",
        )
    return path
