"""How a dataset's files are organised, detected from its listing: ImageFolder, pre-split folders or a CSV file.

- ImageFolder: ``<class>/<image>``; the split is made later.
- Pre-split: ``train/<class>/<image>``, ``test/<class>/<image>`` and optionally ``val/<class>/<image>``.
- CSV manifest: a ``.csv`` source, or ``manifest.csv``/``labels.csv`` at the root, with columns
  ``path,label[,split]``; paths are relative to the CSV's folder (or absolute inside it), or s3:// URIs.

Single folders that only wrap the dataset are stripped first, alike for folders, s3:// prefixes and archives.
Every file of a folder layout is a candidate image whatever its name (the content decides, when it is read),
except documented junk (:func:`~tlops.data.sources.is_junk`); files outside any class folder are quarantined.
Object-detection exports (:mod:`tlops.data.detection`) and folders of images named only like splits are refused.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from tlops.data.archives import is_archive
from tlops.data.detection import check_not_detection
from tlops.data.sources import (
    CSV_MANIFEST_NAMES,
    OpenedSource,
    TreeFile,
    is_junk,
    junk_reason,
    list_tree,
    strip_wrappers,
)
from tlops.data.splits import SPLITS
from tlops.errors import TlopsError
from tlops.io.storage import S3Client, is_s3_uri, read_bytes

IMAGE_FOLDER, PRE_SPLIT, CSV_MANIFEST = "image-folder", "pre-split", "csv-manifest"
OUTSIDE_CLASS_FOLDER = "outside any class folder: not used (move it into a <class>/ folder)"
URL_NOT_SUPPORTED = "{scheme} URLs are not supported: download the images or use s3://"
# Folder names that mean a split, not a class (``valid`` is Roboflow's, ``validation`` Hugging Face's).
SPLIT_LIKE_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)


@dataclass(frozen=True)
class SourceFile:
    """One candidate image file: where it is, its path relative to the dataset root, its class and given split."""

    uri: str
    relpath: str
    label: str
    split: str | None = None


@dataclass
class Layout:
    """The candidate images of a source as its layout organises them.

    Attributes:
        kind: ``image-folder``, ``pre-split`` or ``csv-manifest``.
        files: The candidate images, with a split when the layout gives one.
        quarantined: Files the layout lists but will not read, with the reason.
        skipped: Junk (hidden files and folders, ``.DS_Store``, ``__MACOSX/``, ...) left out of the listing: the
            file or folder, the reason (see :func:`~tlops.data.sources.junk_reason`) and how many files.
    """

    kind: str
    files: list[SourceFile]
    quarantined: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def split_given(self) -> bool:
        """Whether the source fixes the splits (pre-split folders, or a CSV with a split column)."""
        return any(f.split is not None for f in self.files)

    @property
    def carve_val(self) -> bool:
        """Whether splits are given but val is not, so val is carved out of train."""
        return self.split_given and not any(f.split == "val" for f in self.files)


def list_layout(opened: OpenedSource, s3: S3Client | None = None) -> Layout:
    """List an opened source and detect its layout, without reading any image.

    Raises:
        TlopsError: when the layout is ambiguous or malformed (the message says how to fix it).
    """
    if opened.csv is not None:
        return csv_layout(opened.csv, opened.root, read_bytes(opened.csv, s3))
    listing, skipped = list_without_junk(opened.root, s3)
    _check_not_only_archives(listing, opened)
    check_not_detection(listing, opened.source, s3)
    prefix, tree = strip_wrappers(listing, keep=SPLITS)
    root = f"{opened.root.rstrip('/')}/{prefix}" if prefix else opened.root
    manifests = [f for f in tree if f.relpath in CSV_MANIFEST_NAMES]
    if len(manifests) > 1:
        raise TlopsError(f"{opened.source!r} has both manifest.csv and labels.csv at its root; keep one of them")
    if manifests:
        layout = csv_layout(manifests[0].uri, root, read_bytes(manifests[0].uri, s3))
    else:
        layout = folder_layout(tree, opened.source, prefix)
    layout.skipped = skipped
    return layout


def list_without_junk(root: str, s3: S3Client | None = None) -> tuple[list[TreeFile], list[dict[str, Any]]]:
    """Every file under ``root`` but junk, and the junk skipped: one entry per junk file or folder, with its count.

    See :func:`~tlops.data.sources.junk_reason` for what is junk.
    """
    listing, skipped = [], {}
    for file in list_tree(root, s3):
        junk = junk_reason(file.relpath)
        if junk is None:
            listing.append(file)
        else:  # a junk folder (a whole .git/) is one entry, with its file count
            entry = skipped.setdefault(junk[0], {"path": junk[0], "reason": junk[1], "files": 0})
            entry["files"] += 1
    return listing, list(skipped.values())


def _check_not_only_archives(listing: list[TreeFile], opened: OpenedSource) -> None:
    """Refuse a source holding nothing but archives (a zip inside a zip), naming them, rather than finding no image.

    Archives are extracted only when given as the source itself, never inside one.
    """
    if not listing or not all(is_archive(f.relpath) for f in listing):
        return
    names = [f.relpath for f in listing]
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    found = f"the archive {shown}" if len(names) == 1 else f"{len(names)} archives ({shown})"
    if opened.extracted is not None:
        outer = PurePosixPath(opened.source).name
        raise TlopsError(
            f"found only {found} inside {outer}: archives inside an archive are not opened; extract {outer} and "
            f"give {'it' if len(names) == 1 else 'one of them'} directly (--data PATH/{names[0]}), or repack "
            "the images themselves (<class>/<image>)"
        )
    direct = f"{opened.source.rstrip('/')}/{names[0]}"
    raise TlopsError(
        f"found only {found} in {opened.source!r}: give {'it' if len(names) == 1 else 'one of them'} directly, "
        f"--data {direct}"
    )


def folder_layout(tree: list[TreeFile], source: str, prefix: str = "", item: str = "image") -> Layout:
    """An ImageFolder, or pre-split folders when the top-level folders are split names holding class folders.

    Every file but junk is a candidate, whatever its extension; files outside a class folder are quarantined.

    Args:
        tree: The listing, relative to the dataset root.
        source: The dataset as the user gave it, for messages.
        prefix: Wrapper folders stripped from the listing (see :func:`~tlops.data.sources.strip_wrappers`).
        item: What a file is, for messages (``image``, ``text``).

    Raises:
        TlopsError: when split folders are mixed with other top-level folders, train/ or test/ is missing, or
            an ImageFolder has a single class (saying what was found and what to pass).
    """
    tree = [f for f in tree if not is_junk(f.relpath)]
    candidates = [(f, PurePosixPath(f.relpath).parts) for f in tree]
    loose = [{"path": f.relpath, "reason": OUTSIDE_CLASS_FOLDER} for f, parts in candidates if len(parts) < 2]
    candidates = [(f, parts) for f, parts in candidates if len(parts) >= 2]
    split_dirs = {parts[0] for _f, parts in candidates if parts[0] in SPLITS and len(parts) >= 3}
    if not split_dirs:
        _check_classes_not_splits([parts for _f, parts in candidates], source, item)
        _check_more_than_one_class([parts for _f, parts in candidates], source, prefix, item)
        return Layout(IMAGE_FOLDER, [SourceFile(f.uri, f.relpath, parts[0]) for f, parts in candidates], loose)
    others = sorted({parts[0] for _f, parts in candidates} - set(SPLITS))
    given = ", ".join(f"{s}/" for s in SPLITS if s in split_dirs)
    if others:
        raise TlopsError(
            f"{source!r} mixes split folders ({given}) with other top-level folders ({', '.join(others)}); use "
            "either train/, val/, test/ each holding one folder per class, or one folder per class"
        )
    missing = [s for s in ("train", "test") if s not in split_dirs]
    if missing:
        raise TlopsError(
            f"pre-split dataset {source!r} has {given} but no {' or '.join(f'{s}/' for s in missing)}; add "
            f"{missing[0]}/<class>/ {item}s (val/ is optional: it is carved out of train when absent)"
        )
    files = [SourceFile(f.uri, f.relpath, parts[1], parts[0]) for f, parts in candidates if len(parts) >= 3]
    loose += [{"path": f.relpath, "reason": OUTSIDE_CLASS_FOLDER} for f, parts in candidates if len(parts) < 3]
    return Layout(PRE_SPLIT, files, sorted(loose, key=lambda q: q["path"]))


def _check_classes_not_splits(paths: list[tuple[str, ...]], source: str, item: str = "image") -> None:
    """Refuse an ImageFolder whose every class is named like a split: images put in split folders, no classes."""
    labels = sorted({parts[0] for parts in paths})
    if not labels or any(label.lower() not in SPLIT_LIKE_NAMES for label in labels):
        return
    shown = ", ".join(f"{label}/" for label in labels)
    raise TlopsError(
        f"{source!r} has only folders named like splits ({shown}), holding {item}s directly: they would be taken "
        f"as classes; put one folder per class inside each (train/<class>/<{item}>), or give one folder per class"
    )


def _check_more_than_one_class(paths: list[tuple[str, ...]], source: str, prefix: str, item: str = "image") -> None:
    """Refuse an ImageFolder with one class, saying what was found and what to pass instead."""
    labels = {parts[0] for parts in paths}
    if len(labels) != 1:
        return  # none: reported by the class-size check, which knows the whole dataset
    label = labels.pop()
    where = "/".join(part for part in (source.rstrip("/"), prefix) if part)
    subfolders = sorted({parts[1] for parts in paths if len(parts) >= 3})
    found = f"only one class ({label!r}, {len(paths)} file{'s' if len(paths) != 1 else ''}) found in {source!r}"
    if len(subfolders) >= 2:
        shown = ", ".join(subfolders[:5]) + (", ..." if len(subfolders) > 5 else "")
        fix = "repack the archive with them at its top" if is_archive(source) else f"pass --data {where}/{label}"
        raise TlopsError(f"{found}, its files in subfolders ({shown}); if those are the classes, {fix}")
    raise TlopsError(
        f"{found}; a classifier needs at least two classes: put each class's {item}s in its own subfolder, "
        f"{where}/<class>/<{item}>"
    )


def _read_table(data: bytes, name: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise TlopsError(f"{name} is empty; write a header row path,label[,split] and one row per image") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        reason = str(error).strip().splitlines()[0]
        raise TlopsError(f"{name} is not a readable CSV file ({reason}); fix the file") from None
    table.columns = [str(column).strip().lower() for column in table.columns]
    missing = [column for column in ("path", "label") if column not in table.columns]
    if missing:
        raise TlopsError(
            f"{name} has no {' or '.join(missing)} column (it has {', '.join(table.columns)}); its header row must "
            "be path,label[,split] for images, or text,label[,split] for texts (name the column of texts text)"
        )
    return table


def csv_layout(csv_uri: str, base: str, data: bytes) -> Layout:
    """The images a CSV manifest lists, with columns ``path,label[,split]``.

    Args:
        csv_uri: Where the CSV is (for messages).
        base: The CSV's folder (local or s3://), which relative paths start from.
        data: The CSV's content.

    Returns:
        The listed files; local files whose real path (through symlinks) leaves ``base`` are quarantined.

    Raises:
        TlopsError: naming the row, for an empty path or label, an unknown split, or a path that leaves ``base``.
            An http(s) URL (or another scheme but s3://) is quarantined: only local files and S3 are read.
    """
    name = PurePosixPath(csv_uri).name
    table = _read_table(data, name)
    splits = table["split"].str.strip().str.lower() if "split" in table.columns else None
    if splits is not None and not splits.any():
        splits = None  # an empty split column: nothing is given
    local_base = None if is_s3_uri(base) else Path(base).resolve()
    files, quarantined = [], []
    for number, (path, label) in enumerate(zip(table["path"].str.strip(), table["label"].str.strip(), strict=True)):
        where = f"{name} row {number + 1}"
        if not path or not label:
            raise TlopsError(f"{where} has an empty {'path' if not path else 'label'}; every row needs both")
        split = None if splits is None else splits.iloc[number]
        if split is not None and split not in SPLITS:
            raise TlopsError(
                f"{where} has split {split!r}; use train, val or test in every row (leave val out to carve it "
                "out of train)"
            )
        if is_s3_uri(path):
            files.append(SourceFile(path, path, label, split))
            continue
        url = _URL.match(path)
        if url:
            scheme = url.group(1).lower()
            shown = "http(s)" if scheme in ("http", "https") else f"{scheme}://"
            quarantined.append({"path": path, "reason": URL_NOT_SUPPORTED.format(scheme=shown)})
            continue
        relative = PurePosixPath(path.replace("\\", "/"))
        if relative.is_absolute() and local_base is not None:
            relative = _inside(Path(relative), local_base) or relative
        if relative.is_absolute() or ".." in relative.parts:
            raise TlopsError(
                f"{where} has path {path!r}, which leaves the CSV's folder; write paths relative to the folder "
                f"holding {name} (or absolute inside it), without '..', or as s3:// URIs"
            )
        relpath = relative.as_posix()
        if local_base is None:
            files.append(SourceFile(f"{base}/{relpath}", relpath, label, split))
        elif (local_base / relpath).resolve().is_relative_to(local_base):
            files.append(SourceFile(str((local_base / relpath).resolve()), relpath, label, split))
        else:
            quarantined.append({"path": relpath, "reason": "a symlink that leaves the dataset folder; not read"})
    if not files and not quarantined:
        raise TlopsError(f"{name} lists no images; add one row path,label[,split] per image")
    layout = Layout(CSV_MANIFEST, files, quarantined)
    missing = [s for s in ("train", "test") if layout.split_given and not any(f.split == s for f in files)]
    if missing:
        raise TlopsError(
            f"{name} has a split column but no {' or '.join(missing)} rows; every class needs train and test "
            "images (val is optional: it is carved out of train when absent)"
        )
    return layout


def _inside(path: Path, base: Path) -> PurePosixPath | None:
    """An absolute path as a path relative to ``base`` (resolved), when it lies inside; else ``None``.

    The folders leading to the file are resolved (``/tmp`` may be a link), the file itself is not: a symlink
    leaving ``base`` is still caught as one.
    """
    for candidate in (Path(os.path.normpath(path)), path.parent.resolve() / path.name):
        if candidate.is_relative_to(base):
            return PurePosixPath(candidate.relative_to(base).as_posix())
    return None
