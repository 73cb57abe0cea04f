"""Safe extraction of .zip and .tar archives: every member is checked before anything is written."""

from __future__ import annotations

import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tlops.errors import TlopsError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_archive(name: str) -> bool:
    """Whether a file name or URI names an archive tlops can extract, judged by its suffix."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(archive: Path, destination: Path) -> Path:
    """Extract a .zip or .tar (.tar.gz, .tgz, .tar.bz2, .tar.xz) archive safely and atomically.

    Every member is checked before anything is written. A member with an absolute path or a ``..`` component,
    a link that points outside the extraction folder, or a device file rejects the whole archive (zip-slip).
    Tar members are then extracted with tarfile's ``data`` filter; symlinks inside a zip are not extracted. The
    archive goes into a temporary sibling of ``destination`` that is renamed to ``destination`` only once
    complete, so a failure leaves nothing behind; an existing ``destination`` is replaced.

    Args:
        archive: The archive file; its suffix says whether it is a zip or a tar.
        destination: The folder that holds the extracted members.

    Returns:
        ``destination``.

    Raises:
        TlopsError: naming the unsafe member, or saying the file is no readable archive.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, partial)
        else:
            _extract_tar(archive, partial)
        if destination.exists():
            shutil.rmtree(destination)
        partial.rename(destination)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return destination


def _unsafe(archive: Path, member: str, why: str) -> TlopsError:
    return TlopsError(
        f"unsafe member {member!r} in archive {archive.name}: {why}; nothing was extracted (zip-slip guard): "
        "rebuild the archive from a plain folder, with relative paths and no links leaving it"
    )


def _check_name(archive: Path, name: str) -> None:
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise _unsafe(archive, name, "it has an absolute path")
    if ".." in PurePosixPath(normalized).parts:
        raise _unsafe(archive, name, "its path has a '..' component")


def _check_link(archive: Path, name: str, target: str, relative_to_member: bool) -> None:
    if target.startswith(("/", "\\")):
        raise _unsafe(archive, name, f"it links to the absolute path {target!r}")
    base = posixpath.dirname(name.replace("\\", "/")) if relative_to_member else ""
    resolved = posixpath.normpath(posixpath.join(base, target.replace("\\", "/")))
    if resolved == ".." or resolved.startswith("../"):
        raise _unsafe(archive, name, f"it links to {target!r}, outside the extraction folder")


def _is_zip_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _extract_zip(archive: Path, target: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            for info in members:
                _check_name(archive, info.filename)
                if _is_zip_symlink(info):
                    _check_link(archive, info.filename, zipped.read(info).decode("utf-8", "replace"), True)
            for info in members:
                if not _is_zip_symlink(info):  # zipfile would write a link as a file holding its target
                    zipped.extract(info, target)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise TlopsError(f"{archive.name} is not a readable zip archive ({error}); check the file") from None
    except RuntimeError as error:  # an encrypted member
        raise TlopsError(f"cannot extract {archive.name}: {error}; use an archive without a password") from None


def _extract_tar(archive: Path, target: Path) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise TlopsError("extracting tar archives safely needs Python 3.11.4 or newer; upgrade Python")
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_name(archive, member.name)
                if member.issym() or member.islnk():
                    _check_link(archive, member.name, member.linkname, member.issym())
                try:
                    tarfile.data_filter(member, str(target))
                except tarfile.FilterError as error:
                    raise _unsafe(archive, member.name, str(error)) from None
            tar.extractall(target, members=members, filter="data")
    except tarfile.FilterError as error:  # a link chain only visible while extracting
        raise _unsafe(archive, getattr(error.tarinfo, "name", "?"), str(error)) from None
    except (tarfile.TarError, zlib.error, EOFError) as error:
        raise TlopsError(f"{archive.name} is not a readable tar archive ({error}); check the file") from None
