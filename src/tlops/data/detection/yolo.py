"""YOLO txt exports: per image a label file of lines ``class cx cy w h``, normalised to the image size.

Images lie under ``images/`` and their label files at the same place under ``labels/`` (flat, ``images/train/``
as Ultralytics writes, or ``train/images/`` as Roboflow does); a label file beside its image is read too. Class
names come from ``data.yaml`` (``names``), ``classes.txt`` or ``obj.names``, else they are the ids ("0", "1",
...). A segmentation line (``class x1 y1 x2 y2 x3 y3 ...``) gives the box around its polygon. An image without a
label file, or with an empty one, is a negative; a label file without its image is quarantined.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from tlops.data.detection.records import AnnotatedImage, ParsedExport, RawBox, by_relpath, is_image_name, split_of
from tlops.data.sources import TreeFile
from tlops.io.storage import S3Client, read_bytes

FORMAT = "YOLO"
NAME_FILES = ("data.yaml", "data.yml", "classes.txt", "obj.names")
NO_IMAGE = "label file without its image (images/<name>.<ext> beside labels/<name>.txt): not used"


def parse_yolo(tree: list[TreeFile], s3: S3Client | None = None) -> ParsedExport:
    """Parse a YOLO export: every image with the boxes of its label file.

    Returns:
        The images (negatives included) with their boxes in fractions of the image size; label files without an
        image and malformed lines, quarantined.
    """
    files = by_relpath(tree)
    names = class_names(tree, s3)
    parsed = ParsedExport(FORMAT, [])
    paired: set[str] = set()
    for file in tree:
        if not is_image_name(file.relpath):
            continue
        image = AnnotatedImage(file.uri, file.relpath, split_of(file.relpath))
        label = next((files[c] for c in _label_paths(file.relpath) if c in files), None)
        if label is not None:
            paired.add(label.relpath)
            for number, line in enumerate(read_bytes(label.uri, s3).decode("utf-8", "replace").splitlines(), 1):
                _add_line(line, number, label.relpath, names, image)
        parsed.images.append(image)
    parsed.quarantined += [
        {"path": f.relpath, "reason": NO_IMAGE}
        for f in tree
        if f.relpath.lower().endswith(".txt")
        and "labels" in (p.lower() for p in PurePosixPath(f.relpath).parts[:-1])
        and f.relpath not in paired
        and PurePosixPath(f.relpath).name.lower() not in NAME_FILES
    ]
    return parsed


def _label_paths(relpath: str) -> list[str]:
    """Where an image's label file may be: under ``labels/`` in place of the last ``images/``, or beside it."""
    parts = list(PurePosixPath(relpath).with_suffix(".txt").parts)
    candidates = []
    for index in range(len(parts) - 2, -1, -1):
        if parts[index].lower() == "images":
            candidates.append("/".join([*parts[:index], "labels", *parts[index + 1 :]]))
            break
    return [*candidates, "/".join(parts)]


def _add_line(line: str, number: int, relpath: str, names: list[str] | None, image: AnnotatedImage) -> None:
    fields = line.split()
    if not fields:
        return
    where = f"{relpath} line {number}"
    try:
        class_id, coords = int(fields[0]), [float(v) for v in fields[1:]]
    except ValueError:
        image.quarantined.append(f"{where} is not 'class cx cy w h' numbers: {line.strip()[:60]!r}")
        return
    if names is not None and not 0 <= class_id < len(names):
        image.quarantined.append(f"{where}: unknown class id {class_id} (the names list has {len(names)}): dropped")
        return
    label = names[class_id] if names is not None else str(class_id)
    if len(coords) == 4:
        cx, cy, w, h = coords
        image.boxes.append(RawBox(label, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), normalised=True))
    elif len(coords) >= 6 and len(coords) % 2 == 0:
        xs, ys = coords[0::2], coords[1::2]
        image.boxes.append(RawBox(label, (min(xs), min(ys), max(xs), max(ys)), normalised=True))
    else:
        image.quarantined.append(f"{where} has {len(coords)} coordinates, not 4 (cx cy w h): dropped")


def class_names(tree: list[TreeFile], s3: S3Client | None = None) -> list[str] | None:
    """The class names of a YOLO export, from its shallowest names file; ``None`` when it has none."""
    candidates = [f for f in tree if PurePosixPath(f.relpath).name.lower() in NAME_FILES]
    for file in sorted(
        candidates, key=lambda f: (f.relpath.count("/"), NAME_FILES.index(f.relpath.split("/")[-1].lower()))
    ):
        text = read_bytes(file.uri, s3).decode("utf-8-sig", "replace")
        if file.relpath.lower().endswith((".yaml", ".yml")):
            names = _yaml_names(text)
            if names is not None:
                return names
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
            if names:
                return names
    return None


def _yaml_names(text: str) -> list[str] | None:
    import yaml

    try:
        payload: Any = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    names = payload.get("names") if isinstance(payload, dict) else None
    if isinstance(names, dict):
        try:
            return [str(names[key]) for key in sorted(names, key=int)]
        except (TypeError, ValueError):
            return None
    return [str(name) for name in names] if isinstance(names, list) else None
