"""Where a dataset comes from: a local folder, an s3:// prefix, a .csv file, or a .zip/.tar archive (local or S3)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from tlops.data.archives import ARCHIVE_SUFFIXES, ArchiveLimits, extract_archive, is_archive
from tlops.errors import TlopsError
from tlops.io.storage import S3Client, download, is_s3_uri, iter_objects, parse_s3_uri

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator

CSV_MANIFEST_NAMES = ("manifest.csv", "labels.csv")
# Single-file sources: an image CSV manifest, or a table of texts (``.json`` holding JSON lines).
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
_KINDS = f"a folder, a {'/'.join(ARCHIVE_SUFFIXES)} archive, a .csv manifest or an s3:// URI"


def is_table(name: str) -> bool:
    """Whether a file name is one of a table source (:data:`TABLE_SUFFIXES`, any case)."""
    return name.lower().endswith(TABLE_SUFFIXES)


def _kinds(tables: tuple[str, ...]) -> str:
    if tables == (".csv",):
        return _KINDS
    return f"a folder, a {'/'.join(ARCHIVE_SUFFIXES)} archive, a {'/'.join(tables)} table or an s3:// URI"


# Files that operating systems and archivers leave in folders: never part of a dataset, skipped (and counted
# in the data report with the reason).
JUNK_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
JUNK_FOLDERS = frozenset({"__macosx"})


def junk_reason(relpath: str) -> tuple[str, str] | None:
    """Why a file is documented junk, skipped rather than read; ``None`` for a file that is used or quarantined.

    Junk: ``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, anything inside ``__MACOSX``, and hidden files (a
    dot-file, or inside a dot-folder).

    Returns:
        What is skipped (the file, or the junk folder holding it as ``folder/``) and why.
    """
    parts = PurePosixPath(relpath).parts
    if not parts:
        return relpath, "no file name"
    for depth, part in enumerate(parts[:-1]):
        folder = "/".join(parts[: depth + 1]) + "/"
        if part.lower() in JUNK_FOLDERS:
            return folder, "macOS archive metadata folder: skipped"
        if part.startswith("."):
            return folder, "hidden folder: skipped (rename it to use its files)"
    if parts[-1].lower() in JUNK_FILES:
        return relpath, "operating-system file: skipped"
    if parts[-1].startswith("."):
        return relpath, "hidden file (its name starts with a dot): skipped (rename it to use it)"
    return None


def is_junk(relpath: str) -> bool:
    """Whether a file is documented junk (see :func:`junk_reason`); every other file is used or quarantined."""
    return junk_reason(relpath) is not None


def check_data_argument(source: str | None, flag: str = "--data") -> str:
    """The dataset argument, refused when empty (an unset ``$DATA`` would otherwise mean the current folder).

    Raises:
        TlopsError: when ``source`` is empty or blank.
    """
    if source is None or not source.strip():
        raise TlopsError(f"{flag} is empty (an unset variable?); pass {_KINDS}, e.g. {flag} ./my_images")
    return source


def check_output_apart(source: str, output: Path) -> None:
    """Refuse an output folder inside a local dataset, or a local dataset inside the output folder.

    An output inside the data would become part of it (its ``manifest.csv`` makes the next run read the folder
    as a CSV manifest); data inside the output is among files tlops writes and removes. For a CSV source the
    dataset folder is the CSV's, and only an output that is that very folder is refused.

    Raises:
        TlopsError: naming both paths and the fix.
    """
    if is_s3_uri(source) or not source.strip():
        return
    data, out = Path(source).resolve(), Path(output).resolve()
    folder = data if data.is_dir() else data.parent if is_table(data.name) else None
    if folder is not None and (out == folder or (data.is_dir() and out.is_relative_to(folder))):
        where = "is the dataset folder" if out == folder else f"is inside the dataset folder {folder}"
        raise TlopsError(
            f"--output {out} {where}: its manifest.csv and step outputs would become part of the data on the next "
            "run; pass an --output outside the dataset"
        )
    if data.is_relative_to(out):
        raise TlopsError(
            f"the dataset {data} is inside --output {out}, where tlops writes (and on failure removes) its files; "
            "keep the data outside: pass another --output"
        )


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
def open_source(
    source: str,
    s3: S3Client | None = None,
    extract_to: Path | None = None,
    limits: ArchiveLimits | None = None,
    tables: tuple[str, ...] = (".csv",),
) -> Iterator[OpenedSource]:
    """Make a source listable: archives (local or on S3) are downloaded and extracted safely.

    Args:
        source: A local folder, ``.csv`` file or archive, or an s3:// prefix, ``.csv`` object or archive object.
        s3: S3 client, needed for s3:// sources.
        extract_to: Where an archive is extracted and kept (removed again if the ``with`` body fails); ``None``
            extracts into a temporary folder removed on exit.
        limits: How much an archive may expand (default: :class:`ArchiveLimits`' defaults).
        tables: The suffixes of a single-file source read as a table (images: ``.csv`` manifests; text: every
            one of :data:`TABLE_SUFFIXES`), given as ``csv``.

    Yields:
        The root to list and, for a CSV (or table) source, the file.

    Raises:
        TlopsError: when the source is empty, missing, of an unknown kind, or an unsafe, too large or unreadable
            archive.
    """
    check_data_argument(source)
    if is_s3_uri(source):
        if s3 is None:
            raise TlopsError(f"{source} is on S3 but no S3 client was configured")
        location = parse_s3_uri(source)
        name = location.key
    else:
        path = Path(source)
        if not path.exists():
            raise TlopsError(f"dataset path {source!r} does not exist; pass --data {_kinds(tables)}")
        name = path.name if path.is_file() else ""
        if path.is_dir():
            yield OpenedSource(source, str(path.resolve()))
            return
        if not (is_archive(name) or name.lower().endswith(tables)):
            kind = "a .csv file" if tables == (".csv",) else "a table file"
            raise TlopsError(f"dataset path {source!r} is not a directory, an archive or {kind}; pass {_kinds(tables)}")
    if name.lower().endswith(tables):
        csv = source if is_s3_uri(source) else str(Path(source).resolve())
        yield OpenedSource(source, csv.rsplit("/", 1)[0], csv=csv)
    elif is_archive(name):
        with ExitStack() as stack:
            if extract_to is None:
                extract_to = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tlops-extract-"))) / "files"
            try:
                root = _fetch_and_extract(source, s3, extract_to, limits)
                yield OpenedSource(source, str(root), extracted=extract_to)
            except BaseException:
                shutil.rmtree(extract_to, ignore_errors=True)
                raise
    else:
        yield OpenedSource(source, f"s3://{location.bucket}/{location.key.strip('/')}".rstrip("/"))


def _fetch_and_extract(source: str, s3: S3Client | None, destination: Path, limits: ArchiveLimits | None) -> Path:
    if is_s3_uri(source):
        with tempfile.TemporaryDirectory(prefix="tlops-download-") as folder:
            archive = download(source, Path(folder) / PurePosixPath(parse_s3_uri(source).key).name, s3)
            extract_archive(archive, destination, limits)
    else:
        extract_archive(Path(source), destination, limits)
    return destination


def strip_wrappers(tree: list[TreeFile], keep: Collection[str] = ()) -> tuple[str, list[TreeFile]]:
    """Strip single folders that only wrap the dataset (``flowers/daisy/1.jpg``), the same for every source.

    A top level holding nothing but one folder (junk aside), which itself holds folders or a CSV manifest, is a
    wrapper: its name is dropped from every path, and again for the next level. A lone folder holding only
    files is a class, not a wrapper; so is a folder named in ``keep`` (a lone ``train/`` is a split).

    Args:
        tree: The listing of a folder, s3:// prefix or extracted archive, without junk.
        keep: Folder names that are never stripped.

    Returns:
        The stripped prefix (``"a/b"``, or ``""``) and the listing relative to it.
    """
    prefix: list[str] = []
    while tree:
        parts = [PurePosixPath(f.relpath).parts for f in tree]
        tops = {p[0] for p in parts}
        if len(tops) != 1 or any(len(p) < 2 for p in parts):
            break
        top = tops.pop()
        if top in keep or not any(len(p) >= 3 or p[1] in CSV_MANIFEST_NAMES for p in parts):
            break  # a lone split or class folder, not a wrapper
        prefix.append(top)
        tree = [TreeFile(f.uri, f.relpath[len(top) + 1 :]) for f in tree]
    return "/".join(prefix), tree


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
