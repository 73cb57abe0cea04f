"""Whether a source is text-classification data, cheaply: a listing and, for a table, its header only.

The lead's task choice calls :func:`is_text_source` when the user names no task.
"""

from __future__ import annotations

import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from tlops.data.archives import is_archive
from tlops.data.images import SUPPORTED_FORMATS
from tlops.data.sources import is_junk, is_table, list_tree
from tlops.data.splits import SPLITS
from tlops.data.text.layouts import TEXT_FOLDER, TEXT_PRE_SPLIT, TEXT_SUFFIX, TEXT_TABLE
from tlops.data.text.tables import find_columns, header_columns
from tlops.errors import TlopsError
from tlops.io.storage import S3Client, download, is_s3_uri, parse_s3_uri, read_head

HEADER_BYTES = 65_536  # what is read of a table to find its columns
_IMAGE_SUFFIXES = (*(f".{fmt.lower()}" for fmt in SUPPORTED_FORMATS), ".jpg", ".tif")


def is_text_source(source: str, s3: S3Client | None = None) -> bool:
    """Whether ``source`` holds text-classification data (see :func:`text_layout_kind`)."""
    return text_layout_kind(source, s3) is not None


def text_layout_kind(source: str, s3: S3Client | None = None) -> str | None:
    """The text layout of ``source`` without reading its texts, or ``None`` when it is not text data.

    ``text-table``: a table file (or a folder, prefix or archive holding one table and nothing else) whose header
    has a text column (:data:`tlops.data.text.tables.TEXT_NAMES`). ``text-folder``/``text-pre-split``: files in
    class folders, some ``.txt`` and none an image (by extension). A source that is missing or cannot be listed
    is not text (the task that reads it says why).
    """
    try:
        name = PurePosixPath(parse_s3_uri(source).key if is_s3_uri(source) else source).name
        if is_table(name):
            return TEXT_TABLE if _has_text_column(read_head(source, HEADER_BYTES, s3), name, source, s3) else None
        if is_archive(name):
            return _archive_kind(source, s3)
        if not is_s3_uri(source) and not Path(source).is_dir():
            return None
        return _listing_kind([f.relpath for f in list_tree(source, s3)], lambda rel: _head(source, rel, s3))
    except (TlopsError, OSError, tarfile.TarError, zipfile.BadZipFile):
        return None


def _head(root: str, relpath: str, s3: S3Client | None) -> bytes:
    return read_head(f"{root.rstrip('/')}/{relpath}", HEADER_BYTES, s3)


def _has_text_column(head: bytes, name: str, uri: str, s3: S3Client | None) -> bool:
    columns = _parquet_columns(uri, s3) if name.lower().endswith(".parquet") else header_columns(head, name)
    try:
        find_columns(columns, name)
    except TlopsError:
        return False
    return True


def _parquet_columns(uri: str, s3: S3Client | None) -> list[str]:
    import pyarrow.parquet as pq

    if is_s3_uri(uri):
        with tempfile.TemporaryDirectory(prefix="tlops-detect-") as folder:
            return list(pq.read_schema(download(uri, Path(folder) / "table.parquet", s3)).names)
    return list(pq.read_schema(uri).names)


def _listing_kind(relpaths: list[str], head: object) -> str | None:
    """The kind of a listing: one table with a text column, or class folders holding .txt files and no image."""
    files = [p for p in relpaths if not is_junk(p)]
    if len(files) == 1 and is_table(files[0]):
        name = PurePosixPath(files[0]).name
        if name.lower().endswith(".parquet"):
            return None  # a parquet inside a folder is read whole; only a parquet given directly is detected
        return TEXT_TABLE if _has_text_column(head(files[0]), name, "", None) else None  # type: ignore[operator]
    lower = [p.lower() for p in files]
    if any(p.endswith(_IMAGE_SUFFIXES) for p in lower):
        return None
    texts = [PurePosixPath(p).parts for p in lower if p.endswith(TEXT_SUFFIX) and "/" in p]
    if not texts:
        return None
    # Split folders at any depth under wrappers: a train/ folder holding class folders.
    if any(len(parts) >= 3 and parts[-3] in SPLITS for parts in texts):
        return TEXT_PRE_SPLIT
    return TEXT_FOLDER


def _archive_kind(source: str, s3: S3Client | None) -> str | None:
    """The kind of an archive from its member names (an S3 archive is downloaded, not extracted)."""
    with tempfile.TemporaryDirectory(prefix="tlops-detect-") as folder:
        path = Path(source)
        if is_s3_uri(source):
            path = download(source, Path(folder) / PurePosixPath(parse_s3_uri(source).key).name, s3)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if not n.endswith("/")]
                return _listing_kind(names, lambda name: archive.open(name).read(HEADER_BYTES))
        with tarfile.open(path) as archive:
            members = {m.name: m for m in archive.getmembers() if m.isfile()}

            def head(name: str) -> bytes:
                extracted = archive.extractfile(members[name])
                return extracted.read(HEADER_BYTES) if extracted is not None else b""

            return _listing_kind(list(members), head)
