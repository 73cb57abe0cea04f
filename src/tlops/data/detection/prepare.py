"""Object-detection data preparation: recognise the export, parse it, check images and boxes, de-duplicate, split.

The flow and files are the images' (:mod:`tlops.data.outputs`): ``manifest.csv`` (one row per image, its boxes
as JSON; :mod:`tlops.data.detection.manifest`), ``prepare_summary.json`` and ``report.md``, nothing left in the
output folder on failure, the prepared-dataset cache shared with the preflight.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from tlops.data.config import SplitConfig
from tlops.data.detection.assign import PRE_SPLIT, SPLIT_HERE, rarest_labels, resolve_detection_splits, splits_given
from tlops.data.detection.boxes import check_boxes
from tlops.data.detection.exports import parse_export
from tlops.data.detection.manifest import MANIFEST_COLUMNS, TASK, format_boxes
from tlops.data.detection.records import AnnotatedImage
from tlops.data.detection.report import render_detection_report
from tlops.data.detection.stats import detection_details
from tlops.data.images import decode_image
from tlops.data.layouts import list_without_junk
from tlops.data.leakage import resolve_duplicates
from tlops.data.outputs import EXTRACTED_DIR, prepare_output, relative_extracted, removed_on_failure, write_outputs
from tlops.data.prepare import class_imbalance
from tlops.data.prepared import PreparedData
from tlops.data.prepared_cache import PreparedCache
from tlops.data.sources import open_source
from tlops.data.splits import SPLITS
from tlops.errors import TlopsError
from tlops.io.progress import progress
from tlops.io.storage import S3Client, read_bytes

logger = logging.getLogger(__name__)


def prepare_detection_data(
    source: str,
    output: Path,
    config: SplitConfig | None = None,
    s3: S3Client | None = None,
    cache: PreparedCache | None = None,
    fingerprint: str | None = None,
) -> PreparedData:
    """Validate an object-detection export, split it and write the manifest, summary and report into ``output``.

    The source is a COCO, Pascal VOC, YOLO or KITTI export: a local folder, an s3:// prefix, or a .zip/.tar
    archive of one. Every image is read and decoded; boxes become 0-based pixel corners, clipped to the image when
    partly outside. Undecodable or missing images, boxes with no area or entirely outside, and unknown classes are
    quarantined with the reason (a bad box only: its image is kept); images without objects are kept as
    negatives. Identical images are collapsed (never across splits: test wins over val over train). The export's
    splits are kept when it gives them (``train/``, ``valid/``, ``test/``; val or test carved out of train when
    missing); otherwise the split is stratified by each image's rarest class and deterministic for
    ``config.seed``.

    Args:
        source: The export.
        output: Where ``manifest.csv``, ``prepare_summary.json`` and ``report.md`` are written.
        config: Split fractions, seed and read parallelism.
        s3: S3 client, needed for s3:// sources.
        cache: Where prepared datasets are kept, or ``None``.
        fingerprint: The source's fingerprint, when the caller has it.

    Returns:
        The summary (``task`` ``object-detection``; ``counts``: boxes per split and class; ``details``: format,
        images and negatives per split, clipped and dropped boxes, box sizes and images per class).

    Raises:
        TlopsError: one line naming the problem and the fix, for a missing source, no or mixed formats, or too
            little left after quarantine; nothing is left in ``output`` then (if this call created it).
    """
    config = config or SplitConfig()
    return prepare_output(source, output, config, s3, cache, fingerprint, _prepare_to, logger)


def _prepare_to(
    source: str, output_dir: Path, config: SplitConfig, s3: S3Client | None
) -> tuple[PreparedData, list[str]]:
    """Prepare ``source`` into ``output_dir`` (checked); also return the files read that are not from an archive."""
    extract_to = output_dir / EXTRACTED_DIR
    with removed_on_failure(output_dir), open_source(source, s3, extract_to, config.archive_limits) as opened:
        if opened.csv is not None:
            raise TlopsError(
                f"{source!r} is a CSV file, not an object-detection export; give the export's folder, archive or "
                "s3:// prefix"
            )
        listing, skipped = list_without_junk(opened.root, s3)
        manifest, prepared = _prepare(listing, skipped, source, config, s3)
        read = relative_extracted(manifest, [f.uri for f in listing], opened.extracted, output_dir)
        prepared.output_dir = str(output_dir)
        write_outputs(manifest, prepared, render_detection_report(prepared), output_dir)
    return prepared, read


def _read(image: AnnotatedImage, s3: S3Client | None) -> dict[str, Any] | str:
    """An image's bytes hash and size, or why it cannot be used."""
    try:
        data = read_bytes(image.uri, s3)
        decoded = decode_image(data)
    except (ValueError, OSError, TlopsError) as error:
        return str(error)
    if image.size is not None and image.size != (decoded.width, decoded.height):
        return (
            f"the annotation says {image.size[0]}x{image.size[1]} but the image is {decoded.width}x{decoded.height} "
            "(rotated by EXIF, or another file?): its boxes cannot be trusted; re-export it"
        )
    return {"sha256": hashlib.sha256(data).hexdigest(), "width": decoded.width, "height": decoded.height}


def _prepare(
    listing: list, skipped: list[dict[str, Any]], source: str, config: SplitConfig, s3: S3Client | None
) -> tuple[pd.DataFrame, PreparedData]:
    parsed = parse_export(listing, source, s3)
    images = parsed.images
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        read = list(
            progress(pool.map(lambda i: _read(i, s3), images), "checking images", total=len(images), unit="img")
        )
    quarantined = list(parsed.quarantined)
    rows, clipped, dropped = [], 0, 0
    for image, result in zip(images, read, strict=True):
        quarantined += [{"path": image.relpath, "reason": reason} for reason in image.quarantined]
        dropped += len(image.quarantined)
        if isinstance(result, str):
            quarantined.append({"path": image.relpath, "reason": result})
            continue
        checked = check_boxes(image.boxes, result["width"], result["height"])
        quarantined += [{"path": image.relpath, "reason": reason} for reason in checked.dropped]
        clipped, dropped = clipped + checked.clipped, dropped + len(checked.dropped)
        boxes = sorted(checked.boxes, key=lambda b: (b[1], b[0]))
        rows.append({"uri": image.uri, "relpath": image.relpath, "split": image.split, "boxes": boxes, **result})
    _check_some_left(rows, quarantined, len(images), source)
    deduplicated = _deduplicated(rows)
    quarantined += deduplicated.conflicts
    rows = deduplicated.rows
    given = splits_given(rows)
    if not given:
        for row in rows:
            row["split"] = None
    _check_enough(rows, quarantined, source, given)
    frame = pd.DataFrame(rows)
    frame["label"] = rarest_labels(rows, given)
    frame["split"] = resolve_detection_splits(frame, config, given)
    classes = sorted({label for boxes in frame["boxes"] for label, _box in boxes})
    counts = {split: dict.fromkeys(classes, 0) for split in SPLITS}
    for split, boxes in zip(frame["split"], frame["boxes"], strict=True):
        for label, _box in boxes:
            counts[split][label] += 1
    details = {"format": parsed.format, "boxes_clipped": clipped, "boxes_dropped": dropped}
    details |= detection_details(frame)
    frame["boxes"] = frame["boxes"].map(format_boxes)
    manifest = frame[list(MANIFEST_COLUMNS)].sort_values("relpath").reset_index(drop=True)
    train = {label: n for label, n in counts["train"].items() if n}
    prepared = PreparedData(
        digest=_digest(manifest),
        classes=classes,
        counts=counts,
        quarantined=quarantined,
        duplicates_removed=deduplicated.removed,
        source=source,
        layout=PRE_SPLIT if given else SPLIT_HERE,
        duplicates=deduplicated.duplicates,
        imbalance=class_imbalance(train) if train else {},
        skipped=skipped,
        task=TASK,
        details=details,
    )
    return manifest, prepared


def _deduplicated(rows: list[dict[str, Any]]) -> Any:
    """Identical images collapsed (:func:`tlops.data.leakage.resolve_duplicates`); copies with other boxes refused."""
    for row in rows:
        row["label"] = json.dumps(row["boxes"])  # the same image with other boxes is a conflict
    deduplicated = resolve_duplicates(rows)
    copies: dict[str, list[str]] = {}
    for conflict in deduplicated.conflicts:
        copies.setdefault(conflict["reason"], []).append(conflict["path"])
    deduplicated.conflicts = [
        {"path": path, "reason": f"same image annotated with other boxes in {', '.join(p for p in paths if p != path)}"}
        for paths in copies.values()
        for path in paths
    ]
    for duplicate in deduplicated.duplicates:
        duplicate["label"] = ""
    return deduplicated


def _digest(manifest: pd.DataFrame) -> str:
    """sha256 over the sorted (relpath, sha256, split, boxes) rows: other boxes give another digest."""
    digest = hashlib.sha256()
    for row in manifest.sort_values("relpath")[["relpath", "sha256", "label", "split", "boxes"]].itertuples(
        index=False
    ):
        digest.update("\t".join(map(str, row)).encode() + b"\n")
    return digest.hexdigest()


def _example(quarantined: list[dict[str, str]]) -> str:
    return (
        f" ({len(quarantined)} quarantined, e.g. {quarantined[0]['path']!r}: {quarantined[0]['reason']})"
        if quarantined
        else ""
    )


def _check_some_left(rows: list[dict[str, Any]], quarantined: list[dict[str, str]], total: int, source: str) -> None:
    if rows:
        return
    if not total:
        raise TlopsError(
            f"no annotated images found in {source!r}{_example(quarantined)}; check that the annotation files name "
            "the export's images"
        )
    raise TlopsError(
        f"none of the {total} annotated images in {source!r} is usable{_example(quarantined)}; fix the images and "
        "annotations"
    )


def _check_enough(rows: list[dict[str, Any]], quarantined: list[dict[str, str]], source: str, given: bool) -> None:
    """Refuse data without any box, with too few images to split, or whose given train split has no box."""
    if not any(row["boxes"] for row in rows):
        raise TlopsError(
            f"no usable box in {source!r}: all {len(rows)} images are negatives{_example(quarantined)}; a detector "
            "needs annotated objects: check the annotation files"
        )
    if len(rows) < len(SPLITS):
        raise TlopsError(
            f"only {len(rows)} usable images in {source!r}{_example(quarantined)}; at least {len(SPLITS)} are needed "
            "(one each for train, val and test): add images"
        )
    if given and not any(row["boxes"] for row in rows if row["split"] == "train"):
        raise TlopsError(
            f"the train split of {source!r} has no usable box{_example(quarantined)}; annotate its images, or "
            "merge the splits so that tlops splits the data"
        )
