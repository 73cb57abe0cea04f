"""A cheap fingerprint of a dataset source, from its listing: what changes when any file is added, removed or changed.

Kubeflow Pipelines caches a step by its inputs. The prepare-data step reads the data behind ``data_uri``, which can
change while the URI stays the same (a scheduled retraining on a growing ``s3://`` prefix). Its fingerprint, computed
by a step that is never cached and passed to prepare-data as an input, makes the cache key change exactly when the
data does: unchanged data reuses the prepared dataset (and, downstream, the extracted features); changed data
prepares it again. Reading every byte (the dataset digest prepare-data computes) would cost what caching saves, so
the fingerprint is the listing: relative path, size and a version marker per file (the S3 ETag, or the local
modification time in nanoseconds).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from tlops.data.archives import is_archive
from tlops.data.sources import check_data_argument, is_junk, is_table, list_tree
from tlops.errors import TlopsError
from tlops.io.storage import is_s3_uri, iter_object_stats, parse_s3_uri

if TYPE_CHECKING:
    from tlops.io.storage import S3Client


def _listed_root(source: str) -> str:
    """The folder or prefix whose listing stands for ``source``: an archive's or table's (CSV manifest's) folder."""
    name = PurePosixPath(parse_s3_uri(source).key if is_s3_uri(source) else source).name
    if is_archive(name) or is_table(name):
        return source.rstrip("/").rsplit("/", 1)[0] if is_s3_uri(source) else str(Path(source).resolve().parent)
    return source.rstrip("/") if is_s3_uri(source) else str(Path(source).resolve())


def _entries(root: str, s3: S3Client | None) -> list[str]:
    if is_s3_uri(root):
        if s3 is None:
            raise TlopsError(f"{root} is on S3 but no S3 client was configured")
        strip = len(parse_s3_uri(root).key.rstrip("/"))
        return [
            f"{key[strip:].lstrip('/')}\t{size}\t{etag}"
            for key, size, etag in iter_object_stats(s3, root)
            if not key.endswith("/") and not is_junk(key[strip:].lstrip("/"))
        ]
    if not Path(root).is_dir():
        raise TlopsError(f"dataset path {root!r} does not exist; pass --data a folder, archive, .csv or s3:// URI")
    entries = []
    for file in list_tree(root):
        if is_junk(file.relpath):
            continue
        stat = os.stat(file.uri)
        entries.append(f"{file.relpath}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return entries


def source_fingerprint(source: str, s3: S3Client | None = None) -> str:
    """The sha256 of the listing of ``source``: every file's relative path, size and ETag or modification time.

    An archive or CSV manifest stands for the folder it lies in (the manifest's images are listed there too).

    Args:
        source: A local folder, archive or ``.csv``, or an ``s3://`` prefix or object.
        s3: S3 client, needed for ``s3://`` sources.

    Returns:
        ``<number of files>-<sha256 hex>``.

    Raises:
        TlopsError: when the source does not exist, is empty, or S3 refuses the listing.
    """
    check_data_argument(source)
    if not is_s3_uri(source) and not Path(source).exists():
        raise TlopsError(f"dataset path {source!r} does not exist; pass --data a folder, archive, .csv or s3:// URI")
    entries = sorted(_entries(_listed_root(source), s3))
    if not entries:
        raise TlopsError(f"dataset {source!r} holds no files; pass --data a folder or prefix with images")
    digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()
    return f"{len(entries)}-{digest}"


def fingerprint_covers(source: str, uris: Iterable[str]) -> bool:
    """Whether every one of ``uris`` lies in the folder or prefix whose listing :func:`source_fingerprint` hashes.

    A CSV manifest may name ``s3://`` objects anywhere; a change to one of those does not change the fingerprint,
    so a result read from them must not be cached under it.

    Args:
        source: The dataset source, as given to :func:`source_fingerprint`.
        uris: The local paths or ``s3://`` URIs of the files read.
    """
    root = _listed_root(source)
    if is_s3_uri(root):
        prefix = root.rstrip("/") + "/"
        return all(uri.startswith(prefix) for uri in uris)
    base = Path(root)
    return all(
        not is_s3_uri(uri) and (Path(uri).is_relative_to(base) or Path(uri).resolve().is_relative_to(base))
        for uri in uris
    )
