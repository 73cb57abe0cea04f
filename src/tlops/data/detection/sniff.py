"""Object-detection exports (COCO, Pascal VOC, YOLO, KITTI), recognised from a listing.

Image classification reads one folder per class. A detection export also holds images in folders (often named
``train/`` and ``test/``), which would otherwise be read as an ImageFolder whose classes are the splits: image
classification refuses it (:func:`check_not_detection`), pointing at the object-detection task, which reads it.
Its annotation files give it away; only a few small heads of candidate files are read, never whole files.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from tlops.errors import TlopsError
from tlops.io.storage import S3Client, read_head

if TYPE_CHECKING:
    from tlops.data.sources import TreeFile

_HEAD_BYTES = 64 * 1024
_MAX_SNIFFED = 5  # files of each kind whose head is read
_JSON_KEY = r'"{}"\s*:'
_COCO_FILE = re.compile(r"^(.*\.coco|instances_[\w.-]+)\.json$", re.IGNORECASE)
_COCO_NAME = re.compile(r"(coco|instances|annotations?)", re.IGNORECASE)
_VOC = re.compile(rb"<annotation[\s>].*?<(object|bndbox)[\s>]", re.DOTALL)
_YOLO_YAML = re.compile(rb"^\s*names\s*:", re.MULTILINE)
_YOLO_YAML_SPLIT = re.compile(rb"^\s*(train|val|nc)\s*:", re.MULTILINE)


def check_not_detection(tree: list[TreeFile], source: str, s3: S3Client | None = None) -> None:
    """Refuse a listing that holds the annotations of a known object-detection format.

    Args:
        tree: Every file of the dataset, relative to its root.
        source: The dataset as the user gave it, for messages.
        s3: S3 client, for s3:// listings.

    Raises:
        TlopsError: naming the format and the file that shows it, and the task that reads it.
    """
    found = detection_format(tree, s3)
    if found is not None:
        kind, evidence = found
        raise TlopsError(
            f"{source!r} looks like a {kind} object-detection export ({evidence}), not image classification data "
            "(one subfolder per class, <class>/<image>): use --task object-detection (or leave --task auto)"
        )


def detection_format(tree: list[TreeFile], s3: S3Client | None = None) -> tuple[str, str] | None:
    """The detection format a listing holds and the file or folder showing it, or ``None``."""
    for check in _CHECKS:
        found = check(tree, s3)
        if found is not None:
            return found
    return None


def detection_formats(tree: list[TreeFile], s3: S3Client | None = None) -> list[tuple[str, str]]:
    """Every detection format a listing holds (COCO, Pascal VOC, YOLO, KITTI, in that order), each with its evidence."""
    return [found for check in _CHECKS if (found := check(tree, s3)) is not None]


def _with_suffix(tree: list[TreeFile], *suffixes: str) -> list[TreeFile]:
    return [f for f in tree if f.relpath.lower().endswith(suffixes)]


def _coco(tree: list[TreeFile], s3: S3Client | None) -> tuple[str, str] | None:
    candidates = _with_suffix(tree, ".json")
    candidates.sort(key=lambda f: _COCO_NAME.search(PurePosixPath(f.relpath).name) is None)  # named ones first
    for file in candidates[:_MAX_SNIFFED]:
        if is_coco(read_head(file.uri, _HEAD_BYTES, s3), PurePosixPath(file.relpath).name):
            return "COCO", file.relpath
    return None


def is_coco(head: bytes, name: str) -> bool:
    """Whether a JSON file's head is COCO's: ``images`` with ``annotations`` and ``categories``.

    A whole file is parsed; a longer one (its ``images`` list can run for megabytes before the other keys) is
    judged on its keys seen so far, or on its name. A file named as only COCO exports name them
    (``_annotations.coco.json``, ``*.coco.json``, ``instances_*.json``) is COCO's whatever it holds: an empty or
    broken one is then refused as such, not read as images in folders.
    """
    if _COCO_FILE.match(name):
        return True
    if len(head) < _HEAD_BYTES:
        try:
            payload = json.loads(head.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError):
            return False
        return isinstance(payload, dict) and {"images", "annotations", "categories"} <= payload.keys()
    text = head.decode("utf-8", "replace")
    keys = {key for key in ("images", "annotations", "categories") if re.search(_JSON_KEY.format(key), text)}
    return "images" in keys and (len(keys) > 1 or _COCO_NAME.search(name) is not None)


def _voc(tree: list[TreeFile], s3: S3Client | None) -> tuple[str, str] | None:
    for file in _with_suffix(tree, ".xml")[:_MAX_SNIFFED]:
        if _VOC.search(read_head(file.uri, _HEAD_BYTES, s3)):
            return "Pascal VOC", file.relpath
    return None


def _yolo(tree: list[TreeFile], s3: S3Client | None) -> tuple[str, str] | None:
    for file in _with_suffix(tree, ".yaml", ".yml")[:_MAX_SNIFFED]:
        head = read_head(file.uri, _HEAD_BYTES, s3)
        if _YOLO_YAML.search(head) and _YOLO_YAML_SPLIT.search(head):
            return "YOLO", file.relpath
    folders = {PurePosixPath(f.relpath).parent for f in tree}
    for file in _with_suffix(tree, ".txt"):
        folder = PurePosixPath(file.relpath).parent
        if folder.name.lower() == "labels" and folder.parent / "images" in folders:
            return "YOLO", f"{folder.as_posix()}/*.txt beside {(folder.parent / 'images').as_posix()}/"
        if folder.parent.name.lower() == "labels" and folder.parent.parent / "images" / folder.name in folders:
            return "YOLO", f"{folder.as_posix()}/*.txt"
    return None


def _kitti(tree: list[TreeFile], s3: S3Client | None) -> tuple[str, str] | None:
    del s3  # the folder names suffice
    for file in _with_suffix(tree, ".txt"):
        folder = PurePosixPath(file.relpath).parent
        if folder.name.lower() == "label_2":
            return "KITTI", f"{folder.as_posix()}/"
    return None


_CHECKS = (_coco, _voc, _yolo, _kitti)
