"""COCO JSON exports: ``images``, ``annotations`` (``bbox``: x, y, width, height in pixels) and ``categories``.

An annotation file's images are found relative to its folder, an ``images/`` folder beside it, or (the official
layout, ``annotations/instances_train2017.json`` with ``train2017/``) the folder above it and the split folder its
name gives. Images of a file without annotations are negatives; images no file names are quarantined.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

from tlops.data.detection.records import (
    AnnotatedImage,
    ParsedExport,
    RawBox,
    by_relpath,
    split_in_name,
    split_of,
    unused_images,
)
from tlops.data.detection.sniff import is_coco
from tlops.data.sources import TreeFile
from tlops.io.storage import S3Client, read_bytes

FORMAT = "COCO"
NOT_ANNOTATED = "not named by any COCO annotation file: not used (add it to the JSON, or remove it)"


def parse_coco(tree: list[TreeFile], s3: S3Client | None = None) -> ParsedExport:
    """Parse every COCO annotation file of a listing.

    Args:
        tree: The dataset's files (junk left out), relative to its root.
        s3: S3 client, for s3:// listings.

    Returns:
        The images named by the annotation files, with their boxes; malformed files, annotations of unknown
        images and images no file names, quarantined.
    """
    files = by_relpath(tree)
    parsed = ParsedExport(FORMAT, [])
    seen: dict[str, AnnotatedImage] = {}
    for file in tree:
        if not file.relpath.lower().endswith(".json"):
            continue
        data = read_bytes(file.uri, s3)
        if not data.strip():
            parsed.quarantined.append({"path": file.relpath, "reason": "empty annotation file: nothing read from it"})
            continue
        if not is_coco(data[:65536], PurePosixPath(file.relpath).name):
            continue  # another JSON file (metadata), not annotations
        try:
            payload = json.loads(data.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as error:
            parsed.quarantined.append({"path": file.relpath, "reason": f"not valid JSON: {error}"})
            continue
        _parse_file(file.relpath, payload, files, seen, parsed)
    parsed.images = sorted(seen.values(), key=lambda image: image.relpath)
    parsed.quarantined += unused_images(tree, set(seen), NOT_ANNOTATED)
    return parsed


def _parse_file(
    relpath: str, payload: Any, files: dict[str, TreeFile], seen: dict[str, AnnotatedImage], parsed: ParsedExport
) -> None:
    """Add one annotation file's images and boxes to ``seen``, and its refusals to ``parsed``."""
    if not isinstance(payload, dict) or not all(isinstance(payload.get(k), list) for k in ("images", "categories")):
        parsed.quarantined.append(
            {"path": relpath, "reason": "not a COCO annotation file: needs images, annotations and categories lists"}
        )
        return
    split = split_of(relpath) or split_in_name(relpath)
    categories = {c.get("id"): str(c.get("name")) for c in payload["categories"] if isinstance(c, dict)}
    images: dict[Any, AnnotatedImage] = {}
    for entry in payload["images"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            parsed.quarantined.append({"path": relpath, "reason": f"image entry without a file_name: {entry!r:.80}"})
            continue
        found = _find_image(relpath, entry["file_name"], split, files)
        if found is None:
            parsed.quarantined.append(
                {"path": relpath, "reason": f"image {entry['file_name']!r} is named but missing: its boxes are unused"}
            )
            continue
        if found.relpath in seen:
            images[entry.get("id")] = seen[found.relpath]
            continue
        size = _size(entry)
        image = AnnotatedImage(found.uri, found.relpath, split or split_of(found.relpath), size=size)
        seen[found.relpath] = images[entry.get("id")] = image
    for number, annotation in enumerate(payload.get("annotations") or [], start=1):
        _add_annotation(relpath, number, annotation, images, categories, parsed)


def _add_annotation(
    relpath: str,
    number: int,
    annotation: Any,
    images: dict[Any, AnnotatedImage],
    categories: dict[Any, str],
    parsed: ParsedExport,
) -> None:
    if not isinstance(annotation, dict) or annotation.get("image_id") not in images:
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        parsed.quarantined.append(
            {"path": relpath, "reason": f"annotation {number} is of image id {image_id!r}, not among its images"}
        )
        return
    image = images[annotation["image_id"]]
    category = annotation.get("category_id")
    bbox = annotation.get("bbox")
    if category not in categories:
        image.quarantined.append(f"unknown category id {category!r} (not in {relpath}'s categories): box dropped")
        return
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        image.quarantined.append(f"annotation {number} of {relpath} has no bbox [x, y, width, height]: {bbox!r:.60}")
        return
    image.boxes.append(RawBox(categories[category], (x, y, x + w, y + h)))


def _size(entry: dict[str, Any]) -> tuple[int, int] | None:
    try:
        width, height = int(entry["width"]), int(entry["height"])
    except (KeyError, TypeError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def _find_image(relpath: str, file_name: str, split: str | None, files: dict[str, TreeFile]) -> TreeFile | None:
    """The image an annotation file's ``file_name`` means: beside it, in ``images/``, or a level up."""
    folder = PurePosixPath(relpath).parent
    name = PurePosixPath(file_name.replace("\\", "/"))
    bases = [folder, folder / "images", folder.parent, folder.parent / "images"]
    stem_split = PurePosixPath(relpath).stem.split("_")[-1]  # instances_train2017 -> train2017
    if split is not None:
        bases += [folder.parent / stem_split, folder.parent / "images" / stem_split]
    for base in bases:
        for candidate in (base / name, base / name.name):
            if candidate.as_posix() in files:
                return files[candidate.as_posix()]
    return None
