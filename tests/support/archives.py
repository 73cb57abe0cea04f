"""Zip and tar archives written for tests, hostile members (``..``, absolute paths, links) included."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path


def make_zip(
    path: Path,
    members: dict[str, bytes],
    symlinks: dict[str, str] | None = None,
    compression: int = zipfile.ZIP_STORED,
) -> Path:
    """A zip at ``path`` holding ``members[name]`` and, for each ``symlinks[name]``, a symlink to that target."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # a symlink, as Info-ZIP stores one
            archive.writestr(info, target)
    return path


def make_tar(path: Path, members: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> Path:
    """A tar (gzipped for ``.tar.gz``/``.tgz``) holding ``members`` and ``links[name] = (tarfile type, target)``."""
    with tarfile.open(path, "w:gz" if path.name.endswith((".tar.gz", ".tgz")) else "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            archive.addfile(info)
    return path


def archive_folder(folder: Path, archive: Path, wrapper: str = "") -> Path:
    """Pack ``folder`` into a zip or tar.gz, under ``wrapper/`` when given."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    names = {f"{wrapper}/{p.relative_to(folder).as_posix()}".lstrip("/"): p.read_bytes() for p in files}
    return make_zip(archive, names) if archive.suffix == ".zip" else make_tar(archive, names)
