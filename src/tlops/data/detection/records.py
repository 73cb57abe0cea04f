"""What every export parser returns: its images with their boxes as the export gives them, and what it refused."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from tlops.data.images import IMAGE_EXTENSIONS
from tlops.data.sources import TreeFile

# A folder (or COCO file name token) that names a split: Roboflow's valid, COCO's train2017, KITTI's training.
_SPLIT_NAME = re.compile(r"^(train|training|val|valid|validation|test|testing)(\d{4})?$", re.IGNORECASE)
_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val"}
_SPLITS |= {"test": "test", "testing": "test"}


@dataclass(frozen=True)
class RawBox:
    """One object as the export states it.

    Attributes:
        label: Its class name.
        box: Corners ``(x1, y1, x2, y2)``: pixels, 0-based, or fractions of the image size when ``normalised``.
        normalised: Whether ``box`` is in fractions of the width and height (YOLO).
    """

    label: str
    box: tuple[float, float, float, float]
    normalised: bool = False


@dataclass
class AnnotatedImage:
    """One image of an export with its objects (none: a negative).

    Attributes:
        uri: The image file.
        relpath: Its path relative to the dataset root.
        split: The split the export puts it in, or ``None``.
        boxes: Its objects as stated.
        size: ``(width, height)`` as the annotation states it, or ``None`` (checked against the file).
        quarantined: Objects refused while parsing (unknown class, malformed line), each a reason.
    """

    uri: str
    relpath: str
    split: str | None
    boxes: list[RawBox] = field(default_factory=list)
    size: tuple[int, int] | None = None
    quarantined: list[str] = field(default_factory=list)


@dataclass
class ParsedExport:
    """An export's images and what its parser refused (``path``, ``reason``: files, or objects of an image)."""

    format: str
    images: list[AnnotatedImage]
    quarantined: list[dict[str, str]] = field(default_factory=list)


def is_image_name(relpath: str) -> bool:
    """Whether a file name has an image extension (an export's images are found by name)."""
    return PurePosixPath(relpath).suffix.lower() in IMAGE_EXTENSIONS


def split_of(relpath: str) -> str | None:
    """The split a path's folders name (``train/``, ``valid/``, ``images/val2017/``, ...), or ``None``."""
    for part in reversed(PurePosixPath(relpath).parts[:-1]):
        match = _SPLIT_NAME.match(part)
        if match:
            return _SPLITS[match.group(1).lower()]
    return None


def split_in_name(name: str) -> str | None:
    """The split a file name's tokens name (``instances_train2017.json`` -> train), or ``None``."""
    for token in re.split(r"[^A-Za-z0-9]+", PurePosixPath(name).stem):
        match = _SPLIT_NAME.match(token)
        if match:
            return _SPLITS[match.group(1).lower()]
    return None


def by_relpath(tree: list[TreeFile]) -> dict[str, TreeFile]:
    """The listing keyed by relative path."""
    return {file.relpath: file for file in tree}


def unused_images(tree: list[TreeFile], used: set[str], reason: str) -> list[dict[str, str]]:
    """Quarantine entries for the images of a listing that no annotation names."""
    return [{"path": f.relpath, "reason": reason} for f in tree if is_image_name(f.relpath) and f.relpath not in used]
