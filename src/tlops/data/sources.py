"""Where a dataset comes from: a local folder, an s3:// prefix, a .csv file, or a .zip/.tar archive (local or S3)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from tlops.data.archives import ARCHIVE_SUFFIXES, extract_archive, is_archive
from tlops.errors import TlopsError
from tlops.io.storage import S3Client, download, is_s3_uri, iter_objects, parse_s3_uri

if TYPE_CHECKING:
    from collections.abc import Iterator

CSV_MANIFEST_NAMES = ("manifest.csv", "labels.csv")
_KINDS = f"a folder, a {'/'.join(ARCHIVE_SUFFIXES)} archive, a .csv manifest or an s3:// URI"


@dataclass(frozen=True)
class TreeFile:
    """A file under a dataset root: where it is, and its posix path relative to the root."""

    uri: str
    relpath: str


@dataclass(frozen=True)
class OpenedSource:
    """A source made ready to list.

    Attributes:
        source: The source as the user gave it, for messages.
        root: Absolute local folder or ``s3://bucket/prefix`` (no trailing slash) that relative paths start from.
        csv: The CSV manifest when the source is one, else ``None``.
        extracted: The folder an archive was extracted into, else ``None``.
    """

    source: str
    root: str
    csv: str | None = None
    extracted: Path | None = None


@contextmanager
def open_source(source: str, s3: S3Client | None = None, extract_to: Path | None = None) -> Iterator[OpenedSource]:
    """Make a source listable: archives (local or on S3) are downloaded and extracted safely.

    Args:
        source: A local folder, ``.csv`` file or archive, or an s3:// prefix, ``.csv`` object or archive object.
        s3: S3 client, needed for s3:// sources.
        extract_to: Where an archive is extracted and kept (removed again if the ``with`` body fails); ``None``
            extracts into a temporary folder removed on exit.

    Yields:
        The root to list and, for a CSV source, the CSV.

    Raises:
        TlopsError: when the source is missing, of an unknown kind, or an unsafe or unreadable archive.
    """
    if is_s3_uri(source):
        if s3 is None:
            raise TlopsError(f"{source} is on S3 but no S3 client was configured")
        location = parse_s3_uri(source)
        name = location.key
    else:
        path = Path(source)
        if not path.exists():
            raise TlopsError(f"dataset path {source!r} does not exist; pass --data {_KINDS}")
        name = path.name if path.is_file() else ""
        if path.is_dir():
            yield OpenedSource(source, str(path.resolve()))
            return
        if not (is_archive(name) or name.lower().endswith(".csv")):
            raise TlopsError(f"dataset path {source!r} is not a directory, an archive or a .csv file; pass {_KINDS}")
    if name.lower().endswith(".csv"):
        csv = source if is_s3_uri(source) else str(Path(source).resolve())
        yield OpenedSource(source, csv.rsplit("/", 1)[0], csv=csv)
    elif is_archive(name):
        with ExitStack() as stack:
            if extract_to is None:
                extract_to = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tlops-extract-"))) / "files"
            try:
                root = _fetch_and_extract(source, s3, extract_to)
                yield OpenedSource(source, str(root), extracted=extract_to)
            except BaseException:
                shutil.rmtree(extract_to, ignore_errors=True)
                raise
    else:
        yield OpenedSource(source, f"s3://{location.bucket}/{location.key.strip('/')}".rstrip("/"))


def _fetch_and_extract(source: str, s3: S3Client | None, destination: Path) -> Path:
    if is_s3_uri(source):
        with tempfile.TemporaryDirectory(prefix="tlops-download-") as folder:
            archive = download(source, Path(folder) / PurePosixPath(parse_s3_uri(source).key).name, s3)
            extract_archive(archive, destination)
    else:
        extract_archive(Path(source), destination)
    return _archive_root(destination)


def _archive_root(folder: Path) -> Path:
    """The folder, or the innermost single top-level folder that wraps the dataset (``flowers/daisy/1.jpg``)."""
    while True:
        entries = [e for e in folder.iterdir() if not e.name.startswith(".") and e.name != "__MACOSX"]
        if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink():
            return folder
        inner = entries[0]
        if not any(child.is_dir() or child.name in CSV_MANIFEST_NAMES for child in inner.iterdir()):
            return folder  # a lone class folder, not a wrapper
        folder = inner


def list_tree(root: str, s3: S3Client | None = None) -> list[TreeFile]:
    """Every file under a local folder or an s3:// prefix, sorted by relative path.

    Local symlinks that leave the root are not followed.

    Raises:
        TlopsError: when the bucket is missing or access is refused.
    """
    if is_s3_uri(root):
        location = parse_s3_uri(root)
        strip = len(location.key.rstrip("/"))
        files = [
            TreeFile(f"s3://{location.bucket}/{key}", key[strip:].lstrip("/"))
            for key, _size in iter_objects(s3, root)
            if not key.endswith("/")
        ]
        return sorted(files, key=lambda f: f.relpath)
    resolved_root = Path(root).resolve()
    files = []
    for directory, subdirectories, names in os.walk(resolved_root):  # does not descend into linked folders
        subdirectories.sort()
        for name in names:
            path = os.path.join(directory, name)
            uri = path
            if os.path.islink(path):  # only links need resolving: most files are plain
                target = Path(path).resolve()
                if not target.is_relative_to(resolved_root) or not target.is_file():
                    continue  # a symlink that leaves the dataset root, or a broken one
                uri = str(target)
            files.append(TreeFile(uri, Path(os.path.relpath(path, resolved_root)).as_posix()))
    return sorted(files, key=lambda f: f.relpath)
