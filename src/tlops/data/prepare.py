"""Data preparation: list any dataset, decode-check every file, de-duplicate, split, write manifest and report."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from tlops.data.images import SUPPORTED_FORMATS, decode_image
from tlops.data.layouts import OUTSIDE_CLASS_FOLDER, Layout, SourceFile, list_layout
from tlops.data.leakage import resolve_duplicates
from tlops.data.outputs import (
    EXTRACTED_DIR,
    prepare_output,
    prepared_entry,
    relative_extracted,
    removed_on_failure,
    usable_cache_key,
    write_outputs,
)
from tlops.data.prepared import MANIFEST_FILE, REPORT_FILE, SUMMARY_FILE, TEXT_COLUMNS, PreparedData
from tlops.data.prepared_cache import PreparedCache
from tlops.data.report import render_report
from tlops.data.sources import OpenedSource, open_source
from tlops.data.splits import SPLITS, SplitConfig, assign_splits, class_counts, resolve_splits, split_counts
from tlops.errors import TlopsError
from tlops.io.progress import progress
from tlops.io.storage import S3Client, is_s3_uri, read_bytes

__all__ = [
    "MANIFEST_FILE",
    "REPORT_FILE",
    "SPLITS",
    "SUMMARY_FILE",
    "PreparedCache",
    "PreparedData",
    "SourceFile",
    "SplitConfig",
    "assign_splits",
    "check_class_sizes",
    "check_dataset",
    "check_sizes",
    "check_split_sizes",
    "class_imbalance",
    "dataset_digest",
    "list_image_folder",
    "load_prepared",
    "preflight_dataset",
    "prepare_data",
    "read_manifest",
    "render_report",
    "split_counts",
]

logger = logging.getLogger(__name__)


def list_image_folder(source: str, s3: S3Client | None = None) -> list[SourceFile]:
    """List the candidate images of a local folder or s3:// prefix (an ImageFolder or pre-split folders).

    Every file is a candidate whatever its name, except junk (hidden files, ``.DS_Store``, ``Thumbs.db``,
    ``desktop.ini``, ``__MACOSX``) and files outside any class folder; wrapper folders are stripped; symlinks
    that leave the root are not followed.

    Raises:
        TlopsError: when the source does not exist, cannot be listed or is not a folder.
    """
    with open_source(source, s3) as opened:
        if opened.csv is not None or opened.extracted is not None:
            raise TlopsError(f"{source!r} is not a folder; list archives and CSV files with check_dataset")
        return list_layout(opened, s3).files


def check_dataset(source: str, config: SplitConfig | None = None, s3: S3Client | None = None) -> Layout:
    """List any source and layout without decoding an image, and check that its classes can be split.

    This is the cheap preflight of ``tlops run``: archives are extracted into a temporary folder (removed again,
    so the returned files' local paths no longer exist), CSV manifests are read, images are not.

    Raises:
        TlopsError: when the source is missing, unsafe or malformed, or its classes are too few or too small.
    """
    config = config or SplitConfig()
    with open_source(source, s3, limits=config.archive_limits) as opened:
        return _checked_layout(opened, source, config, s3)


def preflight_dataset(
    source: str,
    config: SplitConfig | None = None,
    s3: S3Client | None = None,
    cache: PreparedCache | None = None,
    fingerprint: str | None = None,
) -> PreparedData:
    """Everything :func:`prepare_data` checks: the preflight of ``tlops run``.

    Every file is read and decoded as the prepare-data step will, so a dataset that passes here passes there
    (a class whose files are all broken, or that duplicates leave short, fails here, before any step runs).
    With a ``cache``, the dataset is prepared for real into it, so that the prepare-data step given the same
    cache and fingerprint copies the result instead of decoding every image again; an entry already there is
    reused. Without one, nothing is written (archives are extracted into a temporary folder, removed again).

    Args:
        source: The dataset: folder, archive or CSV, local or s3://.
        config: Split fractions, seed and read parallelism.
        s3: S3 client, needed for s3:// sources.
        cache: Where prepared datasets are kept, or ``None``.
        fingerprint: The source's fingerprint (:func:`tlops.data.fingerprint.source_fingerprint`), when the
            caller has it; listed here when ``None`` and a cache is given.

    Returns:
        What prepare-data produces (``output_dir`` is the cache entry, or empty without a cache).

    Raises:
        TlopsError: when the source is missing, unsafe or malformed, or its classes are too few or too small.
    """
    config = config or SplitConfig()
    keyed = usable_cache_key(source, config, s3, cache, fingerprint, logger)
    if cache is not None and keyed is not None:
        with prepared_entry(source, config, s3, cache, *keyed, _prepare_to, logger) as entry:
            prepared = PreparedData.read(entry)
            prepared.output_dir = str(entry)
            return prepared
    with open_source(source, s3, limits=config.archive_limits) as opened:
        return _prepare(_checked_layout(opened, source, config, s3), source, config, s3)[1]


def _checked_layout(opened: OpenedSource, source: str, config: SplitConfig, s3: S3Client | None) -> Layout:
    """The layout of an opened source, after checking that its classes can be split."""
    layout = list_layout(opened, s3)
    check_sizes([(f.split, f.label) for f in layout.files], layout, config, source)
    return layout


def check_class_sizes(
    counts: dict[str, int], config: SplitConfig, source: str, notes: dict[str, str] | None = None, item: str = "image"
) -> None:
    """Check that the classes of a dataset without given splits can support a train/val/test split.

    Args:
        counts: Valid images per class.
        config: The split.
        source: The dataset, for the message.
        notes: Said after a short class's count (what was quarantined), by class.
        item: What an example is, for the message (``image``, ``text``).

    Raises:
        TlopsError: when there are no images, a single class, or classes too small to split.
    """
    if not counts:
        raise TlopsError(
            f"no images found in {source!r}; expected one subfolder per class holding image files "
            f"({', '.join(SUPPORTED_FORMATS)})"
        )
    if len(counts) < 2:
        only = next(iter(counts))
        raise TlopsError(
            f"only one class ({only!r}) found in {source!r}; a classifier needs at least two class subfolders"
        )
    minimum = len(SPLITS)
    small = {label: n for label, n in sorted(counts.items()) if n < minimum}
    if small:
        listed = ", ".join(f"{label!r} has {n}{(notes or {}).get(label, '')}" for label, n in small.items())
        raise TlopsError(
            f"classes too small to split in {source!r}: {listed}; each class needs at least {minimum} valid "
            f"{item}s (one each for train, val and test): add {item}s or remove the class"
        )


def check_split_sizes(
    counts: dict[str, dict[str, int]],
    source: str,
    carve_val: bool = False,
    notes: dict[str, str] | None = None,
    item: str = "image",
) -> None:
    """Check that every class of a dataset with given splits has an image in each split.

    Args:
        counts: Images per split and class; the classes are the union over splits.
        source: The dataset, for the message.
        carve_val: Whether val is carved out of train, which then needs two images per class.
        notes: Said after a short class's counts (what was quarantined), by class.
        item: What an example is, for the message (``image``, ``text``).

    Raises:
        TlopsError: when there are no images, a single class, or classes short in some split (with the counts).
    """
    labels = sorted({label for per_class in counts.values() for label in per_class})
    check_class_sizes({label: len(SPLITS) for label in labels}, SplitConfig(), source, item=item)  # none, or one
    need = {"train": 2, "test": 1} if carve_val else dict.fromkeys(SPLITS, 1)
    short = [label for label in labels if any(counts.get(s, {}).get(label, 0) < n for s, n in need.items())]
    if short:
        listed = "; ".join(
            f"{label!r} has "
            + ", ".join(f"{s} {counts.get(s, {}).get(label, 0)}" for s in need)
            + (notes or {}).get(label, "")
            for label in short
        )
        rule = (
            f"2 train {item}s (one is carved out for val, as there is no val split) and 1 test {item}"
            if carve_val
            else f"1 {item} in each of train, val and test"
        )
        raise TlopsError(
            f"classes short of {item}s in {source!r}: {listed}; every class needs at least {rule}, counting valid, "
            f"distinct {item}s: add {item}s or remove the class"
        )


def check_sizes(
    pairs: list[tuple[str | None, str]],
    layout: Layout,
    config: SplitConfig,
    source: str,
    labels: Iterable[str] = (),
    notes: dict[str, str] | None = None,
    item: str = "image",
) -> None:
    """Check the (split, label) pairs of a layout; ``labels`` are classes to count even with no image left.

    Raises:
        TlopsError: from :func:`check_class_sizes` or, when the layout gives splits, :func:`check_split_sizes`.
    """
    if not layout.split_given:
        counts = {label: 0 for label in labels} | Counter(label for _s, label in pairs)
        check_class_sizes(counts, config, source, notes, item)
        return
    every_label = sorted(set(labels) | {label for _s, label in pairs})
    counts = {split: dict.fromkeys(every_label, 0) for split in SPLITS}
    for split, label in pairs:
        if split in counts:
            counts[split][label] += 1
    check_split_sizes(counts, source, layout.carve_val, notes, item)


def class_imbalance(train_counts: dict[str, int]) -> dict[str, Any]:
    """The imbalance of the training split: largest over smallest class, and balanced class weights.

    A class's weight is ``n_train / (n_classes * n_class)``, like scikit-learn's ``class_weight="balanced"``.
    """
    total, n_classes = sum(train_counts.values()), len(train_counts)
    return {
        "ratio": round(max(train_counts.values()) / min(train_counts.values()), 4),
        "class_weights": {label: round(total / (n_classes * n), 6) for label, n in sorted(train_counts.items())},
    }


def dataset_digest(manifest: pd.DataFrame) -> str:
    """sha256 over the sorted (relpath, sha256, label, split) rows of a manifest."""
    digest = hashlib.sha256()
    for row in manifest.sort_values("relpath")[["relpath", "sha256", "label", "split"]].itertuples(index=False):
        digest.update("\t".join(map(str, row)).encode() + b"\n")
    return digest.hexdigest()


def _inspect(file: SourceFile, s3: S3Client | None) -> dict[str, Any]:
    try:
        data = read_bytes(file.uri, s3)
        decoded = decode_image(data)
    except (ValueError, OSError) as error:
        return {"uri": file.uri, "relpath": file.relpath, "label": file.label, "error": str(error)}
    return {
        "uri": file.uri,
        "relpath": file.relpath,
        "label": file.label,
        "split": file.split,
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": decoded.width,
        "height": decoded.height,
    }


def prepare_data(
    source: str,
    output_dir: Path,
    config: SplitConfig | None = None,
    s3: S3Client | None = None,
    cache: PreparedCache | None = None,
    fingerprint: str | None = None,
) -> PreparedData:
    """Validate a dataset, split it and write the manifest, summary and report.

    The source is a local folder, an s3:// prefix, a ``.csv`` manifest, or a .zip/.tar archive (local or on
    S3, extracted safely into ``output_dir/files``). The layout is detected: an ImageFolder is split stratified
    and deterministically; pre-split folders or a CSV split column are kept as given (val, when absent, is
    carved out of train). Every file is read and fully decoded; files that fail go to the quarantine list with
    the reason, as does every copy of an image found under two labels. Exact duplicates are collapsed so none
    straddles two splits: a copy in test wins over val, which wins over train.

    With a ``cache``, the result is looked up by the source's fingerprint and the split settings
    (:func:`tlops.data.prepared_cache.cache_key`): a complete entry is copied to ``output_dir`` and no image is
    decoded; otherwise the dataset is prepared into a new entry first. A cache that cannot be used (not
    writable, or inside a local dataset) is skipped with a warning.

    Args:
        source: The dataset: folder, archive or CSV, local or s3://.
        output_dir: Where ``manifest.csv``, ``prepare_summary.json`` and ``report.md`` are written.
        config: Split fractions, seed and read parallelism.
        s3: S3 client, needed for s3:// sources.
        cache: Where prepared datasets are kept, or ``None`` to always read every image.
        fingerprint: The source's fingerprint (:func:`tlops.data.fingerprint.source_fingerprint`), when the
            caller has it; listed here when ``None`` and a cache is given.

    Returns:
        The digest, classes, per-split counts, quarantine list, duplicates and imbalance.

    Raises:
        TlopsError: when the source is empty, missing, unsafe or malformed, its classes are too few or too
            small, ``output_dir`` cannot be written, or it and a local source lie one inside the other (nothing
            is left in ``output_dir`` then, if this call created it). Nothing is read before the output folder
            is checked.
    """
    return prepare_output(source, output_dir, config or SplitConfig(), s3, cache, fingerprint, _prepare_to, logger)


def _prepare_to(
    source: str, output_dir: Path, config: SplitConfig, s3: S3Client | None
) -> tuple[PreparedData, list[str]]:
    """Prepare ``source`` into ``output_dir`` (checked); also return the files read that are not from an archive."""
    extract_to = output_dir / EXTRACTED_DIR
    with removed_on_failure(output_dir), open_source(source, s3, extract_to, config.archive_limits) as opened:
        layout = _checked_layout(opened, source, config, s3)
        manifest, prepared = _prepare(layout, source, config, s3)
        read = relative_extracted(manifest, [f.uri for f in layout.files], opened.extracted, output_dir)
        prepared.output_dir = str(output_dir)
        _write_outputs(manifest, prepared, output_dir)
    return prepared, read


def _prepare(
    layout: Layout, source: str, config: SplitConfig, s3: S3Client | None
) -> tuple[pd.DataFrame, PreparedData]:
    files = layout.files
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        inspected = list(
            progress(pool.map(lambda f: _inspect(f, s3), files), "checking images", total=len(files), unit="img")
        )
    quarantined = layout.quarantined + [{"path": r["relpath"], "reason": r["error"]} for r in inspected if "error" in r]
    decoded = [r for r in inspected if "error" not in r]
    if not decoded:
        first = (
            next((q for q in quarantined if q["reason"] != OUTSIDE_CLASS_FOLDER), quarantined[0])
            if quarantined
            else None
        )
        example = f" (e.g. {first['path']!r}: {first['reason']})" if first else ""
        raise TlopsError(f"none of the {len(files)} files in {source!r} is a readable image{example}; check the files")
    deduplicated = resolve_duplicates(decoded)
    quarantined += deduplicated.conflicts
    # Every listed class counts, so a class whose files were all quarantined is named rather than dropped, with
    # what was quarantined.
    check_sizes(
        [(r["split"], r["label"]) for r in deduplicated.rows],
        layout,
        config,
        source,
        {f.label for f in files},
        _quarantine_notes([r for r in inspected if "error" in r]),
    )
    rows = pd.DataFrame(deduplicated.rows)
    rows["split"] = resolve_splits(rows, config, split_given=layout.split_given, carve_val=layout.carve_val)
    manifest = rows[["uri", "relpath", "sha256", "label", "split", "width", "height"]].sort_values("relpath")
    classes = sorted(manifest["label"].unique())
    counts = class_counts(manifest)
    prepared = PreparedData(
        digest=dataset_digest(manifest),
        classes=classes,
        counts=counts,
        quarantined=quarantined,
        duplicates_removed=deduplicated.removed,
        source=source,
        layout=layout.kind,
        duplicates=deduplicated.duplicates,
        imbalance=class_imbalance(counts["train"]),
        skipped=layout.skipped,
    )
    return manifest.reset_index(drop=True), prepared


def _quarantine_notes(failed: list[dict[str, Any]]) -> dict[str, str]:
    """Per class, how many of its files were quarantined, with the first one's reason."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in failed:
        by_label.setdefault(row["label"], []).append(row)
    return {
        label: f" ({len(rows)} quarantined, e.g. {rows[0]['relpath']!r}: {rows[0]['error']})"
        for label, rows in by_label.items()
    }


def _write_outputs(manifest: pd.DataFrame, prepared: PreparedData, output_dir: Path) -> None:
    write_outputs(manifest, prepared, render_report(prepared), output_dir)


def load_prepared(data_dir: Path) -> tuple[pd.DataFrame, PreparedData]:
    """Read back the manifest and summary that :func:`prepare_data` wrote.

    Relative ``uri`` values (files extracted from an archive into the output directory) are made absolute
    against ``data_dir``, wherever that directory has been moved to.

    Raises:
        TlopsError: when ``data_dir`` is not a prepare-data output or was written with another schema version.
    """
    data_dir = Path(data_dir)
    prepared = PreparedData.read(data_dir)
    manifest = read_manifest(data_dir)
    base = data_dir.resolve()
    manifest["uri"] = [uri if is_s3_uri(uri) or Path(uri).is_absolute() else str(base / uri) for uri in manifest["uri"]]
    return manifest, prepared


def read_manifest(data_dir: Path) -> pd.DataFrame:
    """The manifest of a prepare-data output as written, its text columns as strings (no NA parsing).

    Raises:
        TlopsError: when the folder holds no manifest.
    """
    path = Path(data_dir) / MANIFEST_FILE
    if not path.is_file():
        raise TlopsError(f"{data_dir} is not a prepare-data output (no {MANIFEST_FILE}): run tlops prepare-data first")
    return pd.read_csv(path, dtype=dict.fromkeys(TEXT_COLUMNS, str), keep_default_na=False, na_values=[])
