"""Safe extraction of .zip and .tar archives: every member is checked before anything is written."""

from __future__ import annotations

import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tlops.errors import TlopsError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_CHUNK = 1 << 20
# ArchiveLimits field -> the environment variable that sets it.
LIMIT_VARIABLES = {
    "max_total_bytes": "TLOPS_ARCHIVE_MAX_BYTES",
    "max_ratio": "TLOPS_ARCHIVE_MAX_RATIO",
    "max_members": "TLOPS_ARCHIVE_MAX_MEMBERS",
}


@dataclass(frozen=True)
class ArchiveLimits:
    """How much an archive may expand into; a larger or more compressed one is refused as a likely bomb.

    Each limit is also read from an environment variable by :meth:`from_environment`.

    Attributes:
        max_total_bytes: Most bytes all members may extract to together (``TLOPS_ARCHIVE_MAX_BYTES``;
            default 20 GiB).
        max_ratio: Most a member may expand over its compressed size, for members over ``ratio_floor_bytes``
            (for a compressed tar: the whole archive over its file size) (``TLOPS_ARCHIVE_MAX_RATIO``; default 100).
        max_members: Most members (files, folders, links) an archive may hold (``TLOPS_ARCHIVE_MAX_MEMBERS``;
            default 1,000,000).
        ratio_floor_bytes: Members (or tars) smaller than this are not ratio-checked: small files compress well
            and cannot fill a disk (default 1 MiB).
    """

    max_total_bytes: int = 20 * 2**30
    max_ratio: float = 100.0
    max_members: int = 1_000_000
    ratio_floor_bytes: int = 2**20

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ArchiveLimits:
        """The default limits, each replaced by its environment variable when set.

        Raises:
            TlopsError: when a variable is not a positive number.
        """
        values: dict[str, float] = {}
        for name, variable in LIMIT_VARIABLES.items():
            text = environ.get(variable, "").strip()
            if not text:
                continue
            kind = float if name == "max_ratio" else int
            try:
                value = kind(text)
            except ValueError:
                value = 0
            if value <= 0:
                raise TlopsError(f"{variable}={text!r} is not a positive {'number' if kind is float else 'integer'}")
            values[name] = value
        return cls(**values)  # type: ignore[arg-type]


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def _too_big(archive: Path, what: str, variable: str) -> TlopsError:
    return TlopsError(
        f"archive {archive.name} {what}: refused as a likely archive bomb and nothing was kept; if the archive is "
        f"genuine, raise {variable}"
    )


def is_archive(name: str) -> bool:
    """Whether a file name or URI names an archive tlops can extract, judged by its suffix."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(archive: Path, destination: Path, limits: ArchiveLimits | None = None) -> Path:
    """Extract a .zip or .tar (.tar.gz, .tgz, .tar.bz2, .tar.xz) archive safely and atomically.

    Every member is checked before anything is written. A member with an absolute path or a ``..`` component,
    a link that points outside the extraction folder, or a device file rejects the whole archive (zip-slip).
    So do more members, more bytes in all, or a higher compression ratio than ``limits`` allow, judged first on
    the member headers and again on the bytes actually written (archive bombs). Tar members are then extracted
    with tarfile's ``data`` filter; symlinks inside a zip are not extracted. The archive goes into a temporary
    sibling of ``destination`` that is renamed to ``destination`` only once complete, so a failure leaves
    nothing behind; an existing ``destination`` is replaced.

    Args:
        archive: The archive file; its suffix says whether it is a zip or a tar.
        destination: The folder that holds the extracted members.
        limits: Size, ratio and member-count limits (default: :class:`ArchiveLimits`' defaults).

    Returns:
        ``destination``.

    Raises:
        TlopsError: naming the unsafe member or the limit exceeded, or saying the file is no readable archive.
    """
    limits = limits or ArchiveLimits()
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    try:
        try:
            if archive.name.lower().endswith(".zip"):
                _extract_zip(archive, partial, limits)
            else:
                _extract_tar(archive, partial, limits)
        except OSError as error:  # disk full, a member that is both a file and a folder, ...
            raise TlopsError(
                f"cannot extract {archive.name} into {destination.parent} ({error.strerror or error}); check the "
                "archive and the free space"
            ) from None
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


def _check_count(archive: Path, count: int, limits: ArchiveLimits) -> None:
    if count > limits.max_members:
        raise _too_big(archive, f"holds more than {limits.max_members:,} members", "TLOPS_ARCHIVE_MAX_MEMBERS")


def _check_total(archive: Path, total: int, limits: ArchiveLimits, actual: bool = False) -> None:
    if total > limits.max_total_bytes:
        verb = "extracted more than" if actual else "would extract to more than"
        raise _too_big(archive, f"{verb} {_size(limits.max_total_bytes)}", "TLOPS_ARCHIVE_MAX_BYTES")


def _check_ratio(archive: Path, what: str, expanded: int, compressed: int, limits: ArchiveLimits) -> None:
    if expanded > limits.ratio_floor_bytes and expanded > limits.max_ratio * max(compressed, 1):
        raise _too_big(
            archive,
            f"{what} expands {expanded / max(compressed, 1):,.0f}x ({_size(compressed)} to {_size(expanded)}), over "
            f"the limit of {limits.max_ratio:g}x",
            "TLOPS_ARCHIVE_MAX_RATIO",
        )


def _member_path(target: Path, name: str) -> Path:
    """Where a checked member (relative, no ``..``) goes under ``target``."""
    return target.joinpath(*[part for part in name.split("/") if part not in ("", ".")])


def _extract_zip(archive: Path, target: Path, limits: ArchiveLimits) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            _check_count(archive, len(members), limits)
            for info in members:
                _check_name(archive, info.filename)
                _check_ratio(archive, f"member {info.filename!r}", info.file_size, info.compress_size, limits)
                if _is_zip_symlink(info):
                    if info.file_size > 4096:
                        raise _unsafe(archive, info.filename, "it is a link with a target too long to be a path")
                    _check_link(archive, info.filename, zipped.read(info).decode("utf-8", "replace"), True)
            _check_total(archive, sum(info.file_size for info in members), limits)
            written = 0
            for info in members:
                if _is_zip_symlink(info):  # zipfile would write a link as a file holding its target
                    continue
                path = _member_path(target, info.filename)
                if info.is_dir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(info) as member, open(path, "wb") as out:
                    while chunk := member.read(_CHUNK):  # counted as written: headers can lie
                        written += len(chunk)
                        _check_total(archive, written, limits, actual=True)
                        out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise TlopsError(f"{archive.name} is not a readable zip archive ({error}); check the file") from None
    except RuntimeError as error:  # an encrypted member
        raise TlopsError(f"cannot extract {archive.name}: {error}; use an archive without a password") from None


def _extract_tar(archive: Path, target: Path, limits: ArchiveLimits) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise TlopsError("extracting tar archives safely needs Python 3.11.4 or newer; upgrade Python")
    compressed = archive.stat().st_size
    try:
        with tarfile.open(archive) as tar:
            members, total = [], 0
            for member in tar:  # header by header, so a bomb is refused before it is all decompressed
                members.append(member)
                _check_count(archive, len(members), limits)
                total += member.size if member.isfile() else 0
                _check_total(archive, total, limits)
                _check_ratio(archive, "as a whole", total, compressed, limits)
                _check_name(archive, member.name)
                if member.issym() or member.islnk():
                    _check_link(archive, member.name, member.linkname, member.issym())
                try:
                    tarfile.data_filter(member, str(target))
                except tarfile.FilterError as error:
                    raise _unsafe(archive, member.name, str(error)) from None
            tar.extractall(target, members=_counted(archive, target, members, limits), filter="data")
    except tarfile.FilterError as error:  # a link chain only visible while extracting
        raise _unsafe(archive, getattr(error.tarinfo, "name", "?"), str(error)) from None
    except (tarfile.TarError, zlib.error, EOFError) as error:
        raise TlopsError(f"{archive.name} is not a readable tar archive ({error}); check the file") from None


def _counted(archive: Path, target: Path, members: list[tarfile.TarInfo], limits: ArchiveLimits) -> Iterator:
    """The members, each handed to ``extractall`` only after the bytes written so far are counted and checked."""
    written = 0
    for member in members:
        yield member
        if member.isfile():
            written += _member_path(target, member.name).stat().st_size
            _check_total(archive, written, limits, actual=True)
